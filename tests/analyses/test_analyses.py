"""Tests for trait_interp.analyses against scipy/numpy and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from schemas.analyses import (
    ClauseDiff,
    CrossEvaluation,
    DiffCosine,
    GroupComparison,
    LaggedCorrelation,
    ModelDiff,
    Quadrants,
    ResponseMeans,
    TraitCorrelation,
)
from schemas.projections import Projections
from trait_interp.analyses.correlation import (
    lagged_correlation,
    paired_lagged_correlation,
    paired_response_correlation,
    response_correlation,
)
from trait_interp.analyses.cross_evaluation import cross_accuracy, train_midpoints
from trait_interp.analyses.decomposition import (
    assign_quadrants,
    midpoint_from_train,
    quadrants,
)
from trait_interp.analyses.group_comparison import (
    compare_groups,
    labels_from_field,
    labels_from_verdicts,
    response_means,
)
from trait_interp.analyses.model_diff import (
    clause_table,
    diff_vector_cosines,
    paired_diff,
    per_token_diff,
)
from trait_interp.analyses.pairing import (
    describe,
    layer_pairs,
    one_layer_column,
    reading_pairs,
    trait_layers,
)
from trait_interp.analyses.stats import bootstrap_ci_cohens_d, group_stats
from trait_interp.core import metrics

NAN = float("nan")


def projection_table(values: dict[str, dict[str, np.ndarray]], layer: int = 3, prompt_len: int = 2) -> pd.DataFrame:
    """Long-form projections: values[prompt_id][trait] = the response trajectory [n_tokens].

    Each prompt also gets ``prompt_len`` prompt-frame tokens with a large projection (999), so a
    function that forgets to keep only response tokens fails.
    """
    rows = []
    for pid, by_trait in values.items():
        for trait, traj in by_trait.items():
            for t in range(prompt_len):
                rows.append((pid, "prompt", t, f"p{t}", layer, trait, "mean_diff", "residual", 999.0, 1000.0))
            for t, value in enumerate(traj):
                rows.append((pid, "response", prompt_len + t, f"r{t}", layer, trait, "mean_diff", "residual",
                             float(value), abs(float(value)) + 1.0))
    columns = ["prompt_id", "frame", "token_index", "token", "layer", "trait", "method", "site", "projection",
               "token_norm"]
    return Projections.validate(pd.DataFrame(rows, columns=columns))


# --------------------------------------------------------------------------- stats


def test_group_stats_matches_scipy_and_reference_d() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1.5, 40), rng.normal(0.2, 0.8, 25)
    result = group_stats(a, b, n_boot=500, seed=1)
    pooled = np.sqrt(((40 - 1) * a.var(ddof=1) + (25 - 1) * b.var(ddof=1)) / (40 + 25 - 2))
    assert result.cohens_d == pytest.approx((a.mean() - b.mean()) / pooled, rel=1e-12)
    assert result.cohens_d == pytest.approx(metrics.cohens_d(a, b), rel=1e-12)
    assert result.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-10)
    assert (result.mean_a, result.mean_b, result.n_a, result.n_b) == pytest.approx((a.mean(), b.mean(), 40, 25))
    assert result.ci_low < result.cohens_d < result.ci_high
    swapped = group_stats(b, a, n_boot=500, seed=1)
    assert swapped.cohens_d == pytest.approx(-result.cohens_d)


def test_bootstrap_matches_independent_percentile_bootstrap() -> None:
    """Same seed, same draw order (all of a's indices, then all of b's), a plain loop over metrics.cohens_d."""
    rng = np.random.default_rng(11)
    a, b = rng.normal(0.5, 1.0, 30), rng.normal(0.0, 2.0, 17)
    n_boot, seed = 400, 5
    gen = np.random.default_rng(seed)
    idx_a = gen.integers(0, a.size, size=(n_boot, a.size))
    idx_b = gen.integers(0, b.size, size=(n_boot, b.size))
    ds = np.array([metrics.cohens_d(a[idx_a[i]], b[idx_b[i]]) for i in range(n_boot)])
    expected = np.quantile(ds, [0.05, 0.95])
    low, high = bootstrap_ci_cohens_d(a, b, n_boot=n_boot, seed=seed, level=0.90)
    assert (low, high) == pytest.approx(tuple(expected), rel=1e-10)
    assert bootstrap_ci_cohens_d(a, b, n_boot=n_boot, seed=seed, level=0.90) == (low, high)  # seeded
    assert bootstrap_ci_cohens_d(a, b, n_boot=n_boot, seed=seed + 1, level=0.90) != (low, high)


def test_bootstrap_close_to_scipy_percentile_bootstrap() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(1.0, 1.0, 80), rng.normal(0.0, 1.0, 80)

    def d_stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        nx, ny = x.shape[axis], y.shape[axis]
        pooled = np.sqrt(((nx - 1) * x.var(axis=axis, ddof=1) + (ny - 1) * y.var(axis=axis, ddof=1)) / (nx + ny - 2))
        return (x.mean(axis=axis) - y.mean(axis=axis)) / pooled

    ref = stats.bootstrap((a, b), d_stat, n_resamples=4000, method="percentile", confidence_level=0.95,
                          random_state=np.random.default_rng(0), vectorized=True).confidence_interval
    low, high = bootstrap_ci_cohens_d(a, b, n_boot=4000, seed=0)
    assert low == pytest.approx(ref.low, abs=0.06)
    assert high == pytest.approx(ref.high, abs=0.06)


def test_group_stats_small_group_is_nan_not_crash() -> None:
    result = group_stats([1.0], [0.0, 1.0, 2.0])
    assert result.n_a == 1 and result.mean_a == 1.0
    assert np.isnan(result.cohens_d) and np.isnan(result.ci_low) and np.isnan(result.p_value)
    empty = group_stats([], [0.0, 1.0])
    assert np.isnan(empty.mean_a) and empty.n_a == 0


# --------------------------------------------------------------------------- group comparison


def test_response_means_and_compare_groups() -> None:
    rng = np.random.default_rng(0)
    values = {f"p{i}": {"refusal": rng.normal(2.0 if i < 6 else 0.0, 0.5, size=5 + i)} for i in range(12)}
    proj = projection_table(values)
    means = ResponseMeans.validate(response_means(proj))
    assert len(means) == 12
    row = means[means["prompt_id"] == "p3"].iloc[0]
    assert row["mean_projection"] == pytest.approx(values["p3"]["refusal"].mean())  # prompt tokens excluded
    assert row["n_tokens"] == 8

    labels = {f"p{i}": ("refused" if i < 6 else "complied") for i in range(11)}  # p11 unlabelled: left out
    out = GroupComparison.validate(compare_groups(means, labels, "refused", "complied", n_boot=300, seed=0))
    assert len(out) == 1
    got = out.iloc[0]
    a = np.array([values[f"p{i}"]["refusal"].mean() for i in range(6)])
    b = np.array([values[f"p{i}"]["refusal"].mean() for i in range(6, 11)])
    assert (got["n_a"], got["n_b"]) == (6, 5)
    assert got["cohens_d"] == pytest.approx(metrics.cohens_d(a, b))
    assert got["p_value"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert got["cohens_d"] > 2
    with pytest.raises(ValueError, match="no prompt labelled 'complid'"):
        compare_groups(means, labels, "refused", "complid")


def test_labels_from_field_lists_missing_ids() -> None:
    prompts = [
        {"id": 1, "text": "a", "success": True},
        {"id": "two", "text": "b"},
        {"id": 3, "text": "c", "success": None},
        {"id": 4, "text": "d", "extra": {"success": False}},
    ]
    with pytest.raises(ValueError, match=r"2 prompt\(s\) have no 'success' field: ids two, 3"):
        labels_from_field(prompts, "success")
    assert labels_from_field([prompts[0], prompts[3]], "success") == {"1": "true", "4": "false"}


def test_labels_from_verdicts_drops_none() -> None:
    labels, dropped = labels_from_verdicts({"a": 80.0, "b": 10.0, "c": None, "d": 50.0}, threshold=50)
    assert labels == {"a": "yes", "b": "no", "d": "yes"}
    assert dropped == 1


# --------------------------------------------------------------------------- correlation


def test_response_correlation_matches_corrcoef() -> None:
    rng = np.random.default_rng(4)
    n = 15
    base = rng.normal(size=n)
    values = {
        f"q{i}": {
            "x": rng.normal(base[i], 0.3, 6),
            "y": rng.normal(-base[i], 0.3, 6),
            "z": rng.normal(0.0, 1.0, 6),
        }
        for i in range(n)
    }
    means = response_means(projection_table(values))
    out = TraitCorrelation.validate(response_correlation(means, 3, "mean_diff", "residual"))
    wide = means.pivot(index="prompt_id", columns="trait", values="mean_projection")[["x", "y", "z"]]
    expected = np.corrcoef(wide.to_numpy().T)
    got = out.pivot(index="trait_a", columns="trait_b", values="r").loc[["x", "y", "z"], ["x", "y", "z"]]
    np.testing.assert_allclose(got.to_numpy(), expected, atol=1e-12)
    assert (out["n"] == n).all()
    assert got.loc["x", "y"] < -0.8


def test_lagged_correlation_recovers_planted_lag_with_string_ids() -> None:
    rng = np.random.default_rng(5)
    values = {}
    for i in range(8):
        signal = rng.normal(size=43)
        values[f"rust_{i}"] = {"a": signal[3:], "b": signal[:-3] + rng.normal(0, 0.05, 40)}  # b[t] = a[t-3]
    proj = projection_table(values)
    out = LaggedCorrelation.validate(lagged_correlation(proj, 3, "mean_diff", "residual", max_lag=10))
    ab = out[(out["trait_a"] == "a") & (out["trait_b"] == "b")].set_index("lag")
    assert ab["r"].idxmax() == 3
    assert ab.loc[3, "r"] > 0.95
    assert ab.loc[3, "n"] == 8 * (40 - 3)  # pairs pooled within responses only
    assert abs(ab.loc[0, "r"]) < 0.3
    ba = out[(out["trait_a"] == "b") & (out["trait_b"] == "a")].set_index("lag")
    assert ba.loc[-3, "r"] == pytest.approx(ab.loc[3, "r"])
    aa = out[(out["trait_a"] == "a") & (out["trait_b"] == "a")].set_index("lag")
    assert aa.loc[0, "r"] == pytest.approx(1.0)
    assert sorted(out["lag"].unique()) == list(range(-10, 11))


def test_lagged_correlation_never_pairs_across_responses() -> None:
    """Two 2-token responses: at lag 1 only the within-response pairs (2 of them) count."""
    values = {"p": {"a": np.array([0.0, 1.0]), "b": np.array([0.0, 1.0])},
              "q": {"a": np.array([5.0, 2.0]), "b": np.array([7.0, 3.0])}}
    out = lagged_correlation(projection_table(values), 3, "mean_diff", "residual", max_lag=2)
    ab = out[(out["trait_a"] == "a") & (out["trait_b"] == "b")].set_index("lag")
    assert ab.loc[1, "n"] == 2
    assert ab.loc[1, "r"] == pytest.approx(np.corrcoef([0.0, 5.0], [1.0, 3.0])[0, 1])
    assert ab.loc[2, "n"] == 0 and np.isnan(ab.loc[2, "r"])


# --------------------------------------------------------------------------- decomposition


def test_quadrants_by_hand() -> None:
    # (x, y) per prompt, thresholds x > 1.0, y > 0.0
    points = {"a": (2.0, 1.0), "b": (2.0, -1.0), "c": (0.5, 1.0), "d": (1.0, 0.5), "e": (0.0, 0.0), "f": (3.0, 3.0)}
    values = {pid: {"x": np.array([x]), "y": np.array([y])} for pid, (x, y) in points.items()}
    means = response_means(projection_table(values))
    assigned = assign_quadrants(means, "x", "y", 1.0, 0.0, 3, "mean_diff", "residual").set_index("prompt_id")
    assert assigned.loc["d", "quadrant"] == "low_x/high_y"  # 1.0 is not above 1.0
    out = Quadrants.validate(quadrants(means, "x", "y", 1.0, 0.0, 3, "mean_diff", "residual"))
    counts = dict(zip(out["quadrant"], out["count"]))
    assert counts == {"high_x/high_y": 2, "high_x/low_y": 1, "low_x/high_y": 2, "low_x/low_y": 1}
    assert out["share"].sum() == pytest.approx(1.0)
    assert midpoint_from_train(np.array([2.0, 4.0]), np.array([0.0, -2.0])) == pytest.approx(1.0)


# --------------------------------------------------------------------------- traits at different layers


def test_layer_pairs_share_layers_else_every_combination() -> None:
    assert layer_pairs([0, 2], [2, 0]) == [(0, 0), (2, 2)]
    assert layer_pairs([0, 1, 2], [2, 3]) == [(2, 2)]  # shared layers win; 0, 1 and 3 are not paired
    assert layer_pairs([1], [3]) == [(1, 3)]  # layer: best, different layers
    assert layer_pairs([0, 1], [3, 4]) == [(0, 3), (0, 4), (1, 3), (1, 4)]
    pairs = reading_pairs({"a": [1], "b": [3]})
    assert pairs == [(("a", 1), ("a", 1)), (("a", 1), ("b", 3)), (("b", 3), ("a", 1)), (("b", 3), ("b", 3))]
    # a layer where a trait is alone adds nothing (not even its diagonal), as when layers were grouped
    assert reading_pairs({"a": [1, 2], "b": [2]}) == [((t, 2), (u, 2)) for t in "ab" for u in "ab"]
    assert reading_pairs({"a": [1]}) == []
    assert describe({"b/y": [3], "a/x": [1, 2]}) == "a/x at layers 1, 2; b/y at layer 3"


def _f32(x: np.ndarray) -> np.ndarray:
    """The values as the projection table stores them (float32), so a hand computation sees the same numbers."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def _two_layers(values_a: dict[str, np.ndarray], values_b: dict[str, np.ndarray]) -> pd.DataFrame:
    """Trait a projected only at layer 1, trait b only at layer 3 (as layer: best can give)."""
    a = projection_table({pid: {"a": v} for pid, v in values_a.items()}, layer=1)
    b = projection_table({pid: {"b": v} for pid, v in values_b.items()}, layer=3)
    return Projections.validate(pd.concat([a, b], ignore_index=True))


def test_response_correlation_of_traits_at_their_own_layers_matches_corrcoef() -> None:
    rng = np.random.default_rng(12)
    base = rng.normal(size=10)
    values_a = {f"q{i}": _f32(rng.normal(base[i], 0.4, 5)) for i in range(10)}
    values_b = {f"q{i}": _f32(rng.normal(-base[i], 0.4, 4)) for i in range(10)}
    values_b["q10"] = _f32(rng.normal(size=4))  # only b has this prompt: it is left out of the pair
    means = response_means(_two_layers(values_a, values_b))
    assert trait_layers(means, "mean_diff", "residual") == {"a": [1], "b": [3]}
    with pytest.raises(ValueError, match="no rows for layer 2"):
        response_correlation(means, 2, "mean_diff", "residual")  # no shared layer to give
    out = TraitCorrelation.validate(paired_response_correlation(means, "mean_diff", "residual"))
    assert list(out.columns) == ["trait_a", "trait_b", "layer_a", "layer_b", "r", "n"]
    assert list(zip(out["trait_a"], out["layer_a"], out["trait_b"], out["layer_b"])) == [
        ("a", 1, "a", 1), ("a", 1, "b", 3), ("b", 3, "a", 1), ("b", 3, "b", 3)]
    ab = out[(out["trait_a"] == "a") & (out["trait_b"] == "b")].iloc[0]
    mean_a = [values_a[f"q{i}"].mean() for i in range(10)]  # a at layer 1, by hand
    mean_b = [values_b[f"q{i}"].mean() for i in range(10)]  # b at layer 3
    assert ab["r"] == pytest.approx(np.corrcoef(mean_a, mean_b)[0, 1], abs=1e-6)  # means of float32 rows
    assert ab["n"] == 10 and ab["r"] < -0.8
    ba = out[(out["trait_a"] == "b") & (out["trait_b"] == "a")].iloc[0]
    assert (ba["layer_a"], ba["layer_b"], ba["r"]) == (3, 1, ab["r"])
    assert out[out["trait_a"] == out["trait_b"]]["r"].tolist() == [1.0, 1.0]
    assert out[(out["trait_a"] == "b") & (out["trait_b"] == "b")]["n"].iloc[0] == 11


def test_lagged_correlation_of_traits_at_their_own_layers_by_hand() -> None:
    rng = np.random.default_rng(13)
    values_a, values_b = {}, {}
    for i in range(6):
        signal = rng.normal(size=32)
        values_a[f"r{i}"], values_b[f"r{i}"] = _f32(signal[2:]), _f32(signal[:-2] + rng.normal(0, 0.05, 30))  # b[t] = a[t-2]
    out = LaggedCorrelation.validate(
        paired_lagged_correlation(_two_layers(values_a, values_b), "mean_diff", "residual", max_lag=4))
    assert list(out.columns) == ["trait_a", "trait_b", "layer_a", "layer_b", "lag", "r", "n"]
    ab = out[(out["trait_a"] == "a") & (out["trait_b"] == "b")]
    assert set(ab["layer_a"]) == {1} and set(ab["layer_b"]) == {3}
    ab = ab.set_index("lag")
    for lag in (-1, 0, 2, 3):  # a at token t (layer 1) against b at token t + lag (layer 3), pooled by hand
        xs = np.concatenate([values_a[p][max(0, -lag): 30 - max(0, lag)] for p in values_a])
        ys = np.concatenate([values_b[p][max(0, lag): 30 - max(0, -lag)] for p in values_a])
        assert ab.loc[lag, "r"] == pytest.approx(np.corrcoef(xs, ys)[0, 1], abs=1e-12)
        assert ab.loc[lag, "n"] == 6 * (30 - abs(lag))
    assert ab["r"].idxmax() == 2 and ab.loc[2, "r"] > 0.95
    ba = out[(out["trait_a"] == "b") & (out["trait_b"] == "a")].set_index("lag")
    assert set(ba["layer_a"]) == {3} and ba.loc[-2, "r"] == pytest.approx(ab.loc[2, "r"])
    aa = out[(out["trait_a"] == "a") & (out["trait_b"] == "a")].set_index("lag")
    assert set(aa["layer_b"]) == {1} and aa.loc[0, "r"] == pytest.approx(1.0)


def test_quadrants_of_traits_at_their_own_layers_by_hand() -> None:
    # x = a's mean at layer 1, y = b's mean at layer 3; thresholds x > 1.0, y > 0.0
    points = {"p": (2.0, 1.0), "q": (2.0, -1.0), "r": (0.5, 1.0), "s": (1.0, 0.5), "t": (0.0, 0.0), "u": (3.0, 3.0),
              "v": (-1.0, -2.0)}
    proj = _two_layers({pid: np.array([x, x]) for pid, (x, _) in points.items()},
                       {pid: np.array([y - 1.0, y + 1.0]) for pid, (_, y) in points.items()})
    means = response_means(proj)
    out = Quadrants.validate(quadrants(means, "a", "b", 1.0, 0.0, 1, "mean_diff", "residual", layer_y=3))
    assert list(out.columns) == ["trait_x", "trait_y", "layer_x", "layer_y", "method", "site", "threshold_x",
                                 "threshold_y", "quadrant", "count", "share"]
    assert set(out["layer_x"]) == {1} and set(out["layer_y"]) == {3}
    assert dict(zip(out["quadrant"], out["count"])) == {  # by hand: p u | q | r s | t v
        "high_x/high_y": 2, "high_x/low_y": 1, "low_x/high_y": 2, "low_x/low_y": 2}
    assert out["share"].tolist() == pytest.approx([2 / 7, 1 / 7, 2 / 7, 2 / 7])
    with pytest.raises(ValueError, match="no response means for trait 'b' at layer 1"):
        quadrants(means, "a", "b", 1.0, 0.0, 1, "mean_diff", "residual")  # no shared layer: name both
    # decoys: a also at layer 3 and b also at layer 1, with other values; the given layers are the ones read
    decoy = _two_layers({pid: np.array([-5.0]) for pid in points}, {pid: np.array([9.0]) for pid in points})
    decoy = decoy.assign(layer=decoy["layer"].map({1: 3, 3: 1}))
    both = response_means(pd.concat([proj, decoy], ignore_index=True))
    again = quadrants(both, "a", "b", 1.0, 0.0, 1, "mean_diff", "residual", layer_y=3)
    pd.testing.assert_frame_equal(again, out)
    assigned = assign_quadrants(both, "a", "b", 1.0, 0.0, 1, "mean_diff", "residual", layer_y=3).set_index("prompt_id")
    assert (assigned.loc["q", "x"], assigned.loc["q", "y"]) == (2.0, -1.0)


# The shared-layer tables as the functions gave them before traits at different layers were
# handled (computed with the code of commit 3a48aa0 on this data; layers 0 and 2, both traits at both).
_SHARED_VALUES = {
    0: {"p1": {"a": [1.0, 2.0, 0.0], "b": [0.5, 1.0, 3.0]}, "p2": {"a": [2.0, 1.0], "b": [1.0, -1.0]},
        "p3": {"a": [0.0, 0.0, 4.0, 1.0], "b": [2.0, 2.0, 1.0, 0.0]}, "p4": {"a": [3.0, -1.0, 2.0], "b": [0.0, 1.0, 1.0]}},
    2: {"p1": {"a": [2.0, 0.0, 1.0], "b": [1.0, 3.0, 0.0]}, "p2": {"a": [-1.0, 1.0], "b": [2.0, 2.5]},
        "p3": {"a": [1.0, 2.0, 3.0, 5.0], "b": [0.0, 1.0, 1.0, 2.0]}, "p4": {"a": [0.0, 2.0, 2.0], "b": [4.0, 0.0, 1.0]}},
}
_TODAY_RESPONSE = [  # trait_a, trait_b, r, n, layer
    ["a", "a", 1.0, 4, 0], ["a", "b", -0.9356742919573457, 4, 0], ["b", "a", -0.9356742919573457, 4, 0],
    ["b", "b", 1.0, 4, 0], ["a", "a", 1.0, 4, 2], ["a", "b", -0.9001858703883704, 4, 2],
    ["b", "a", -0.9001858703883704, 4, 2], ["b", "b", 1.0, 4, 2]]
_TODAY_LAGGED_R = [  # per layer (0, 2), lag -1..1, pairs aa, ab, ba, bb
    -0.511912597361626, 0.4664200303718856, -0.28373076085276344, 0.1762610596956927,
    1.0, -0.35615941666701023, -0.35615941666701023, 1.0,
    -0.511912597361626, -0.28373076085276344, 0.4664200303718856, 0.1762610596956927,
    0.5573864114332941, -0.2004459314343183, 0.2573743114643919, -0.43623442600660917,
    1.0, -0.3085160265859775, -0.3085160265859775, 1.0,
    0.5573864114332941, 0.2573743114643919, -0.2004459314343183, -0.43623442600660917]
_TODAY_QUADRANT_COUNTS = {0: [1, 2, 1, 0], 2: [1, 1, 2, 0]}


def test_shared_layers_give_exactly_the_tables_of_before() -> None:
    proj = pd.concat([projection_table({p: {t: np.array(v) for t, v in d.items()} for p, d in vals.items()}, layer=layer)
                      for layer, vals in _SHARED_VALUES.items()], ignore_index=True)
    means = response_means(proj)
    response = one_layer_column(paired_response_correlation(means, "mean_diff", "residual"))
    assert list(response.columns) == ["trait_a", "trait_b", "layer", "r", "n"]
    assert response[["trait_a", "trait_b", "r", "n", "layer"]].values.tolist() == _TODAY_RESPONSE  # exact floats
    per_layer = pd.concat([response_correlation(means, la, "mean_diff", "residual").assign(layer=la) for la in (0, 2)],
                          ignore_index=True)
    assert per_layer.values.tolist() == _TODAY_RESPONSE
    lagged = one_layer_column(paired_lagged_correlation(proj, "mean_diff", "residual", max_lag=1))
    assert list(lagged.columns) == ["trait_a", "trait_b", "layer", "lag", "r", "n"]
    assert lagged["r"].tolist() == _TODAY_LAGGED_R
    assert lagged["n"].tolist() == [8] * 4 + [12] * 4 + [8] * 8 + [12] * 4 + [8] * 4
    assert lagged["layer"].tolist() == [0] * 12 + [2] * 12
    assert lagged["lag"].tolist() == [lag for lag in (-1, 0, 1) for _ in range(4)] * 2
    assert list(zip(lagged["trait_a"], lagged["trait_b"]))[:4] == [("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")]
    for layer in (0, 2):
        single = lagged_correlation(proj, layer, "mean_diff", "residual", max_lag=1)
        mine = lagged[lagged["layer"] == layer].drop(columns="layer").reset_index(drop=True)
        pd.testing.assert_frame_equal(single, mine[["trait_a", "trait_b", "lag", "r", "n"]], check_exact=True)
        q = quadrants(means, "a", "b", 1.0, 1.0, layer, "mean_diff", "residual")
        assert list(q.columns) == ["trait_x", "trait_y", "layer", "method", "site", "threshold_x", "threshold_y",
                                   "quadrant", "count", "share"]
        assert q["count"].tolist() == _TODAY_QUADRANT_COUNTS[layer] and set(q["layer"]) == {layer}


# --------------------------------------------------------------------------- model diff


def test_model_diff_of_variant_against_itself_is_zero() -> None:
    rng = np.random.default_rng(6)
    values = {f"p{i}": {"t": rng.normal(size=7), "u": rng.normal(size=7)} for i in range(6)}
    proj = projection_table(values)
    out = ModelDiff.validate(paired_diff(proj, proj.copy()))
    assert len(out) == 2
    assert (out["mean_diff"] == 0).all() and (out["paired_d"] == 0).all() and (out["cohens_d"] == 0).all()
    assert (out["p_value"] == 1.0).all()
    clauses = per_token_diff(proj, proj.copy())
    assert (clauses["mean_delta"] == 0).all()


def test_paired_diff_recovers_planted_shift() -> None:
    rng = np.random.default_rng(7)
    values_a, values_b = {}, {}
    for i in range(30):
        traj = rng.normal(0.0, 1.0, 10)
        values_a[str(i)] = {"t": traj}
        values_b[str(i)] = {"t": traj + 0.5 + rng.normal(0.0, 0.1, 10)}  # B reads the trait 0.5 higher
    a, b = projection_table(values_a), projection_table(values_b)
    got = ModelDiff.validate(paired_diff(a, b)).iloc[0]
    ma = np.array([values_a[str(i)]["t"].mean() for i in range(30)])
    mb = np.array([values_b[str(i)]["t"].mean() for i in range(30)])
    diff = mb - ma
    assert got["mean_diff"] == pytest.approx(0.5, abs=0.03)
    assert got["mean_diff"] == pytest.approx(diff.mean())
    assert got["paired_d"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert got["paired_d"] > 10
    assert got["cohens_d"] == pytest.approx(metrics.cohens_d(mb, ma))
    assert got["p_value"] == pytest.approx(stats.ttest_rel(mb, ma).pvalue)
    assert got["n_prompts"] == 30


def test_paired_diff_rejects_misaligned_tokens() -> None:
    a = projection_table({"p": {"t": np.zeros(5)}, "q": {"t": np.zeros(4)}})
    b = projection_table({"p": {"t": np.zeros(6)}, "q": {"t": np.zeros(4)}})  # p has one more token in B
    with pytest.raises(ValueError, match=r"1 prompt\(s\): p;"):
        paired_diff(a, b)
    c = a.copy()
    c.loc[(c["prompt_id"] == "q") & (c["token_index"] == 3), "token"] = "other"
    with pytest.raises(ValueError, match="token strings differ .*q"):
        paired_diff(a, c)


def test_diff_vector_cosines() -> None:
    a = torch.zeros(2, 4)
    b = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    vectors = {"t": torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]),
               "u": torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])}
    out = DiffCosine.validate(diff_vector_cosines(a, b, vectors, layers=[5, 9])).set_index(["trait", "layer"])
    assert out.loc[("t", 5), "cosine"] == pytest.approx(1 / np.sqrt(2))
    assert out.loc[("u", 5), "cosine"] == pytest.approx(0.0)
    assert np.isnan(out.loc[("t", 9), "cosine"])  # no shift at that layer


def test_clause_table_on_hand_made_tokens() -> None:
    tokens = ["I", " think", ",", " yes", ".", "\n\n", "But", " no", "!", " ok"]
    deltas = [1.0, 1.0, 4.0, 0.0, 0.0, 9.0, -1.0, -1.0, -1.0, 2.0]
    clauses = clause_table(tokens, deltas)
    by_text = {c["text"]: c for c in clauses}
    assert set(by_text) == {"I think,", "yes.", "But no!", "ok"}
    assert (by_text["I think,"]["start"], by_text["I think,"]["end"]) == (0, 3)
    assert by_text["yes."]["end"] == 6 and by_text["yes."]["n_tokens"] == 3  # the blank "\n\n" joins it
    assert by_text["yes."]["mean_delta"] == pytest.approx(3.0) and by_text["yes."]["max_delta"] == 9.0
    assert [c["text"] for c in clauses] == ["yes.", "I think,", "ok", "But no!"]
    assert [c["clause_rank"] for c in clauses] == [1, 2, 3, 4]
    assert clause_table([], []) == []
    with pytest.raises(ValueError):
        clause_table(["a"], [1.0, 2.0])


def test_per_token_diff_ranks_clauses() -> None:
    tokens = ["Hi", ",", " there", "."]
    a = projection_table({"p": {"t": np.zeros(4)}})
    b = projection_table({"p": {"t": np.array([0.0, 0.0, 2.0, 2.0])}})
    out = ClauseDiff.validate(per_token_diff(a, b, {"p": tokens}))
    assert out["text"].tolist() == ["there.", "Hi,"]
    assert out["mean_delta"].tolist() == [2.0, 0.0]
    assert out[["start", "end"]].values.tolist() == [[2, 4], [0, 2]]
    with pytest.raises(ValueError, match="3 tokens given but 4"):
        per_token_diff(a, b, {"p": tokens[:3]})


# --------------------------------------------------------------------------- cross evaluation


def _trait_data(
    rng: np.random.Generator, direction: torch.Tensor, n: int, n_layers: int
) -> tuple[torch.Tensor, list[str]]:
    """n positive rows at +2 along direction, n negative at -2, noise elsewhere."""
    hidden = direction.shape[0]
    sign = torch.cat([torch.ones(n), -torch.ones(n)])  # [2n]
    noise = torch.from_numpy(rng.normal(0.0, 0.5, (2 * n, n_layers, hidden))).float()
    acts = noise + 2.0 * sign[:, None, None] * direction[None, None, :] + 3.0  # +3: an offset on every dim
    return acts, ["positive"] * n + ["negative"] * n


def test_cross_accuracy_transfers_along_shared_direction_only() -> None:
    rng = np.random.default_rng(8)
    hidden, n_layers, layers = 16, 2, [4, 7]
    e0, e1 = torch.eye(hidden)[0], torch.eye(hidden)[1]
    train = {"a": _trait_data(rng, e0, 40, n_layers), "b": _trait_data(rng, e0, 40, n_layers),
             "c": _trait_data(rng, e1, 40, n_layers)}
    heldout = {k: _trait_data(rng, d, 30, n_layers) for k, d in (("a", e0), ("b", e0), ("c", e1))}
    vectors = {"a": torch.stack([e0, e0]), "c": torch.stack([e1, e1])}
    out = CrossEvaluation.validate(cross_accuracy(vectors, heldout, layers, train=train))
    acc = out.set_index(["source_trait", "target_trait", "layer"])["accuracy"]
    assert acc[("a", "a", 4)] > 0.95 and acc[("a", "b", 7)] > 0.95  # shared direction transfers
    assert abs(acc[("a", "c", 4)] - 0.5) < 0.15  # orthogonal: chance
    assert abs(acc[("c", "a", 7)] - 0.5) < 0.15
    assert (out["threshold_from"] == "source").all()
    # explicit thresholds equal to the train midpoints give the same table
    thresholds = {t: train_midpoints(train[t], v) for t, v in vectors.items()}
    same = cross_accuracy(vectors, heldout, layers, thresholds=thresholds)
    pd.testing.assert_series_equal(same["accuracy"], out["accuracy"])
    # the diagonal is the vector's own held-out accuracy (metrics.score_direction)
    pos, neg = heldout["a"][0][:30], heldout["a"][0][30:]
    own = metrics.score_direction(train["a"][0][:40, 0], train["a"][0][40:, 0], pos[:, 0], neg[:, 0], e0)
    assert acc[("a", "a", 4)] == pytest.approx(own.val_accuracy)


def test_cross_accuracy_refit_uses_target_train_midpoint() -> None:
    rng = np.random.default_rng(9)
    hidden = 8
    e0 = torch.eye(hidden)[0]
    train = {"a": _trait_data(rng, e0, 40, 1)}
    shifted = _trait_data(rng, e0, 40, 1)
    shifted_train = (shifted[0] + 10.0 * e0, shifted[1])  # target sits 10 units further along e0
    held = _trait_data(rng, e0, 30, 1)
    heldout = {"b": (held[0] + 10.0 * e0, held[1])}
    vectors = {"a": e0[None, :]}
    fixed = cross_accuracy(vectors, heldout, [0], train=train).iloc[0]
    both_train = {"a": train["a"], "b": shifted_train}
    refit = cross_accuracy(vectors, heldout, [0], train=both_train, refit=True).iloc[0]
    assert fixed["accuracy"] == pytest.approx(0.5, abs=0.05)  # source threshold is far below the target
    assert refit["accuracy"] > 0.95 and refit["threshold_from"] == "target"
    assert fixed["cohens_d"] == pytest.approx(refit["cohens_d"])  # d does not depend on the threshold
