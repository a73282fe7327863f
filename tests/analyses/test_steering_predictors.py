"""What predicts steering: the correlation stage on a small table against a computation by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from schemas.evaluation import VectorEvaluation
from schemas.sweep import SteeringPredictors, SweepResults
from stages.cli import app
from tests.conftest import REPO
from trait_interp.analyses.steering_predictors import pearson, predictor_rows
from trait_interp.core.tables import read_table, write_table

TRAIT = "behavior/refusal"


def by_hand(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


D = {0: 0.5, 1: 2.0, 2: 3.5, 3: 1.0}  # probe's Cohen's d by layer
ACC = {0: 0.6, 1: 0.9, 2: 0.95, 3: 0.7}


def evaluation(trait: str = TRAIT) -> pd.DataFrame:
    rows = [{"trait": trait, "site": "residual", "method": method, "layer": layer, "train_accuracy": 0.9,
             "val_accuracy": ACC[layer] if method == "probe" else 0.5 + 0.01 * layer,
             "cohens_d": D[layer] if method == "probe" else 0.1 * layer, "polarity_correct": True, "p_value": 0.01,
             "threshold": 0.0, "n_val_positive": 5, "n_val_negative": 5}
            for method in ("probe", "random_baseline") for layer in range(4)]
    return pd.DataFrame(rows)


# (method, layers, ratio) -> (trait mean, coherence mean); the baseline trait is 50
CELLS = {
    ("probe", "0", -1.0): (45, 80), ("probe", "0", 1.0): (58, 75),  # best coherent: +8
    ("probe", "1", -1.0): (30, 72), ("probe", "1", 1.0): (75, 71),  # +25
    ("probe", "2", -1.0): (25, 60), ("probe", "2", 1.0): (90, 74),  # +40 (ratio -1 incoherent)
    ("probe", "3", -1.0): (48, 40), ("probe", "3", 1.0): (70, 65),  # nothing coherent: left out
    ("probe", "1-2", -1.0): (20, 70), ("probe", "1-2", 1.0): (95, 71),  # a window: not a layer point
    ("random_baseline", "0", -1.0): (50, 80), ("random_baseline", "0", 1.0): (51, 80),
    ("random_baseline", "1", -1.0): (49, 80), ("random_baseline", "1", 1.0): (53, 80),
    ("random_baseline", "2", -1.0): (52, 80), ("random_baseline", "2", 1.0): (50, 80),
    ("random_baseline", "3", -1.0): (47, 80), ("random_baseline", "3", 1.0): (54, 80),
}


def results(trait: str = TRAIT) -> pd.DataFrame:
    rows = []
    for config, ((method, layers, ratio), (trait_mean, coherence)) in enumerate(CELLS.items(), start=1):
        first, last = (int(x) for x in (layers.split("-") if "-" in layers else (layers, layers)))
        rows.append({"trait": trait, "config": config, "kind": "window" if "-" in layers else "layer",
                     "method": method, "site": "residual", "layers": layers, "first_layer": first, "last_layer": last,
                     "ratio": ratio, "coefficient": ratio * 10, "trait_mean": trait_mean, "coherence_mean": coherence,
                     "relevance_mean": None, "composite": 0.5, "baseline_trait_mean": 50.0,
                     "baseline_coherence_mean": 80.0, "delta": trait_mean - 50.0, "effect": trait_mean - 50.0,
                     "side_effect": 0.1, "coherent": coherence >= 70, "n": 4, "n_scored": 4})
    return pd.DataFrame(rows)


def test_correlations_and_best_layers_equal_a_hand_computation():
    rows = {r["method"]: r for r in predictor_rows(TRAIT, evaluation(), results())}
    probe = rows["probe"]
    # layers 0, 1, 2 have a coherent configuration (best effects 8, 25, 40); layer 3 has none
    assert probe["n_layers"] == 3
    assert probe["r_cohens_d"] == pytest.approx(by_hand([0.5, 2.0, 3.5], [8, 25, 40]))
    assert probe["r_val_accuracy"] == pytest.approx(by_hand([0.6, 0.9, 0.95], [8, 25, 40]))
    assert probe["best_steering_layer"] == 2 and probe["best_steering_effect"] == 40 and probe["best_steering_ratio"] == 1
    assert probe["best_extraction_layer"] == 2 and probe["same_layer"] is True
    random = rows["random_baseline"]
    # best coherent effect per layer: max over both signs: 1, 3, 2, 4
    assert random["n_layers"] == 4
    assert random["r_cohens_d"] == pytest.approx(by_hand([0.0, 0.1, 0.2, 0.3], [1, 3, 2, 4]))
    assert random["best_steering_layer"] == 3 and random["best_extraction_layer"] == 3
    assert pearson([1, 2], [3, 4]) is None and pearson([1, 1, 1], [1, 2, 3]) is None  # too few points, constant


def test_the_stage_writes_the_table_and_metrics(tmp_path: Path):
    params = tmp_path / "params.yaml"
    other = "tone/formality"
    params.write_text((REPO / "params.yaml").read_text().replace("  - emotion/optimism\n", ""))
    for trait in (TRAIT, other):
        write_table(evaluation(trait), VectorEvaluation, tmp_path / trait / "evaluation.csv")
        write_table(results(trait), SweepResults, tmp_path / trait / "results.csv")
    out, metrics = tmp_path / "predictors.csv", tmp_path / "metrics.json"
    done = CliRunner().invoke(app, ["steering-predictors", "--evaluation", f"{tmp_path}/{{trait}}/evaluation.csv",
                                    "--results", f"{tmp_path}/{{trait}}/results.csv", "--out", str(out),
                                    "--metrics", str(metrics), "--params", str(params)])
    assert done.exit_code == 0, done.output
    table = read_table(out, SteeringPredictors)
    assert len(table) == 4 and set(table["trait"]) == {TRAIT, other}
    shown = json.loads(metrics.read_text())
    assert shown[TRAIT]["probe"]["r_cohens_d"] == pytest.approx(by_hand([0.5, 2.0, 3.5], [8, 25, 40]), abs=1e-4)
    assert shown[TRAIT]["probe"]["best_steering_layer"] == 2
    pooled = shown["pooled"]["probe"]  # both traits' points together: the same three points twice
    assert pooled["n_points"] == 6
    assert pooled["r_cohens_d"] == pytest.approx(by_hand([0.5, 2.0, 3.5] * 2, [8, 25, 40] * 2), abs=1e-4)
    assert "r(d, effect)" in done.output
