"""Tests for trait_interp.extraction.methods on synthetic activations with a planted direction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from trait_interp.core import metrics
from trait_interp.extraction import methods

HIDDEN = 64
N_PER_CLASS = 200
SIGNAL = 2.5  # pos = ... + SIGNAL * u, neg = ... - SIGNAL * u
MASSIVE_DIMS = (3, 17, 40)
MASSIVE_STD = 100.0
DIRECTION_SEED = 1234
TRAIN_SEED = 1
VAL_SEED = 2

ALL_METHODS = ("probe", "mean_diff", "gradient", "pca", "random_baseline")
RECOVERING_METHODS = ("probe", "mean_diff", "gradient", "pca")


@dataclass(frozen=True)
class Split:
    pos: torch.Tensor  # [n, hidden]
    neg: torch.Tensor  # [n, hidden]


def _planted_direction(zero_dims: tuple[int, ...] = ()) -> torch.Tensor:
    """Random unit vector u [hidden]; optionally zero on `zero_dims` (dims that carry no signal)."""
    generator = torch.Generator().manual_seed(DIRECTION_SEED)
    u = torch.randn(HIDDEN, generator=generator)  # [hidden]
    u[list(zero_dims)] = 0.0
    return u / u.norm()


def _draw(u: torch.Tensor, seed: int, massive_std: float = 0.0) -> Split:
    """Paired synthetic activations.

    Row i of pos and neg share a per-pair "content" vector (std 1) and get independent
    noise (std 1), so paired differences are 2*SIGNAL*u + noise. With massive_std > 0,
    MASSIVE_DIMS get extra independent N(0, massive_std^2) noise in both classes:
    huge variance, no class signal.
    """
    generator = torch.Generator().manual_seed(seed)
    content = torch.randn(N_PER_CLASS, HIDDEN, generator=generator)  # [n, hidden]
    pos = content + torch.randn(N_PER_CLASS, HIDDEN, generator=generator) + SIGNAL * u  # [n, hidden]
    neg = content + torch.randn(N_PER_CLASS, HIDDEN, generator=generator) - SIGNAL * u  # [n, hidden]
    if massive_std > 0.0:
        dims = list(MASSIVE_DIMS)
        pos[:, dims] += massive_std * torch.randn(N_PER_CLASS, len(dims), generator=generator)
        neg[:, dims] += massive_std * torch.randn(N_PER_CLASS, len(dims), generator=generator)
    return Split(pos=pos, neg=neg)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def _run(name: str, split: Split, settings: methods.MethodSettings | None = None, layer: int = 0) -> methods.MethodResult:
    return methods.get_method(name)(split.pos, split.neg, settings or methods.MethodSettings(), layer)


@pytest.fixture(scope="module")
def direction() -> torch.Tensor:
    return _planted_direction()


@pytest.fixture(scope="module")
def train(direction: torch.Tensor) -> Split:
    return _draw(direction, TRAIN_SEED)


# --------------------------------------------------------------------------- recovery


@pytest.mark.parametrize("name", RECOVERING_METHODS)
def test_method_recovers_planted_direction(name: str, train: Split, direction: torch.Tensor) -> None:
    result = _run(name, train)
    assert _cos(result.vector, direction) >= 0.95  # signed: also checks the vector points neg -> pos


def test_random_baseline_is_at_chance(train: Split, direction: torch.Tensor) -> None:
    val = _draw(direction, VAL_SEED)
    vector = _run("random_baseline", train).vector
    assert abs(_cos(vector, direction)) < 0.5
    scores = metrics.score_direction(train.pos, train.neg, val.pos, val.neg, vector)
    assert abs(scores.val_accuracy - 0.5) <= 0.15
    # Sanity check that the val draw is separable at all, so the chance result means something.
    mean_diff_scores = metrics.score_direction(train.pos, train.neg, val.pos, val.neg, _run("mean_diff", train).vector)
    assert mean_diff_scores.val_accuracy > 0.95


# --------------------------------------------------------------------------- massive dims


def test_standardize_probe_is_robust_to_massive_dims() -> None:
    """Three no-signal dims with std 100: z-scoring neutralises them, row_norm / mean_diff degrade.

    Both probes use probe_c=0.01. C is not comparable across scalings: z-scored features
    have unit scale, while row-normed features are ~1/||x|| (~1/11 here), which makes
    the row_norm probe at C=1 roughly as regularised as the z-scored probe at C~0.01.
    At C=1 the z-scored probe on 400 rows x 64 dims is under-regularised (clean cosine
    ~0.85), so the comparison is made at equal, adequate regularisation.
    """
    u = _planted_direction(zero_dims=MASSIVE_DIMS)  # the massive dims carry no class signal
    clean = _draw(u, TRAIN_SEED)
    massive = _draw(u, TRAIN_SEED, massive_std=MASSIVE_STD)
    standardize = methods.MethodSettings(probe_scaling="standardize", probe_c=0.01)
    row_norm = methods.MethodSettings(probe_scaling="row_norm", probe_c=0.01)

    cos = {
        (label, data_name): _cos(_run(name, data, settings).vector, u)
        for label, name, settings in (
            ("standardize", "probe", standardize),
            ("row_norm", "probe", row_norm),
            ("mean_diff", "mean_diff", None),
        )
        for data_name, data in (("clean", clean), ("massive", massive))
    }

    assert cos[("standardize", "clean")] >= 0.95
    assert abs(cos[("standardize", "massive")] - cos[("standardize", "clean")]) <= 0.05
    # The data must actually hurt the other methods, otherwise the comparison is vacuous.
    assert cos[("row_norm", "massive")] < cos[("row_norm", "clean")] - 0.1
    assert cos[("mean_diff", "massive")] < cos[("mean_diff", "clean")] - 0.1
    assert cos[("standardize", "massive")] > cos[("row_norm", "massive")]
    assert cos[("standardize", "massive")] > cos[("mean_diff", "massive")]


def test_standardize_probe_maps_back_through_per_dim_scale(train: Split) -> None:
    """Rescaling dim j by a_j leaves z-scores unchanged, so the activation-space vector must become w_j / a_j."""
    scale = torch.linspace(0.5, 4.0, HIDDEN)  # [hidden]
    settings = methods.MethodSettings(probe_scaling="standardize")
    base = _run("probe", train, settings).vector  # [hidden]
    rescaled = _run("probe", Split(pos=train.pos * scale, neg=train.neg * scale), settings).vector  # [hidden]
    expected = base / scale
    assert _cos(rescaled, expected / expected.norm()) > 0.9999


def test_probe_reports_train_accuracy(train: Split) -> None:
    for scaling in ("row_norm", "standardize"):
        result = _run("probe", train, methods.MethodSettings(probe_scaling=scaling))
        assert 0.9 < result.info["train_accuracy"] <= 1.0


def test_unknown_probe_scaling_raises(train: Split) -> None:
    with pytest.raises(ValueError, match="probe_scaling"):
        _run("probe", train, methods.MethodSettings(probe_scaling="zscore"))


# --------------------------------------------------------------------------- output contract


@pytest.mark.parametrize("name", ALL_METHODS)
def test_output_is_float32_unit_vector(name: str, train: Split) -> None:
    vector = _run(name, train).vector
    assert vector.dtype == torch.float32
    assert vector.shape == (HIDDEN,)
    assert abs(float(vector.double().norm()) - 1.0) < 1e-5


@pytest.mark.parametrize("name", ALL_METHODS)
def test_method_is_deterministic(name: str, train: Split) -> None:
    first = _run(name, train, layer=5)
    second = _run(name, Split(pos=train.pos.clone(), neg=train.neg.clone()), layer=5)
    assert torch.equal(first.vector, second.vector)
    assert first.info == second.info


@pytest.mark.parametrize("name", ALL_METHODS)
def test_bf16_inputs(name: str, train: Split, direction: torch.Tensor) -> None:
    bf16 = Split(pos=train.pos.to(torch.bfloat16), neg=train.neg.to(torch.bfloat16))
    vector = _run(name, bf16).vector
    assert vector.dtype == torch.float32
    assert abs(float(vector.double().norm()) - 1.0) < 1e-5
    if name in RECOVERING_METHODS:
        assert _cos(vector, direction) >= 0.95


def test_random_baseline_depends_on_seed_and_layer(train: Split) -> None:
    settings = methods.MethodSettings(seed=3)
    layer_4 = _run("random_baseline", train, settings, layer=4).vector
    assert torch.equal(layer_4, _run("random_baseline", train, settings, layer=4).vector)
    assert not torch.allclose(layer_4, _run("random_baseline", train, settings, layer=5).vector)
    assert not torch.allclose(layer_4, _run("random_baseline", train, methods.MethodSettings(seed=4), layer=4).vector)


def test_gradient_converges_to_mean_diff(train: Split) -> None:
    settings = methods.MethodSettings()
    result = _run("gradient", train, settings)
    assert result.info["converged"] == 1.0
    assert result.info["steps"] < settings.gradient_max_steps
    mean_diff = _run("mean_diff", train).vector
    assert _cos(result.vector, mean_diff) >= 0.999
    gap = train.pos.mean(dim=0) - train.neg.mean(dim=0)  # [hidden]
    assert result.info["final_separation"] == pytest.approx(float(gap @ result.vector), rel=1e-5)


def test_gradient_reports_non_convergence(train: Split) -> None:
    result = _run("gradient", train, methods.MethodSettings(gradient_max_steps=3))
    assert result.info["steps"] == 3.0
    assert result.info["converged"] == 0.0


# --------------------------------------------------------------------------- pca / mean_diff specifics


def test_pca_matches_numpy_svd_of_uncentered_differences(train: Split) -> None:
    diffs = (train.pos - train.neg).double().numpy()  # [n, hidden]
    _, s, vh = np.linalg.svd(diffs, full_matrices=False)
    result = _run("pca", train)
    assert abs(_cos(result.vector, torch.from_numpy(vh[0]))) > 0.99999
    assert result.info["explained_variance_ratio"] == pytest.approx(s[0] ** 2 / np.sum(s**2), rel=1e-6)
    separation = float((train.pos.mean(dim=0) - train.neg.mean(dim=0)) @ result.vector)
    assert separation > 0  # sign-fixed towards pos


def test_pca_sign_follows_class_labels(train: Split) -> None:
    swapped = _run("pca", Split(pos=train.neg, neg=train.pos)).vector
    assert torch.allclose(swapped, -_run("pca", train).vector, atol=1e-6)


def test_pca_requires_paired_examples(train: Split) -> None:
    with pytest.raises(ValueError, match="paired"):
        _run("pca", Split(pos=train.pos, neg=train.neg[:-1]))


def test_mean_diff_zero_norm_raises(train: Split) -> None:
    with pytest.raises(ValueError):
        _run("mean_diff", Split(pos=train.pos, neg=train.pos.clone()))


def test_unknown_method_lists_available_names() -> None:
    with pytest.raises(ValueError) as excinfo:
        methods.get_method("lda")
    message = str(excinfo.value)
    assert "unknown method 'lda'" in message
    for name in ALL_METHODS:
        assert name in message


def test_registry_has_exactly_the_documented_methods() -> None:
    assert set(methods.METHODS) == set(ALL_METHODS)
