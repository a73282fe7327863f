"""End to end on trained toy models, through the stage commands: the pipeline recovers the planted truth.

One session fixture trains a smaller toy world (the refusal trait only, fewer steps: about a
minute), and runs the refusal trait through generation, vetting (the lexicon oracle at 60 / 40),
capture, extraction, evaluation and steering on that world's kept models (tests/toy/trained_world.py:
the same training run on every machine, whose CPU would otherwise train other weights). Independent
truths: the planted vocabulary in datasets/toy/lexicon.json and a random direction of the same norm.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from schemas.evaluation import VectorEvaluation
from schemas.interventions import InterventionResponses
from schemas.responses import Responses
from schemas.steering import SteeringCurve
from schemas.sweep import SteeringPredictors, SweepResults
from schemas.vetting import VettingScores
from tests.conftest import REPO
from tests.stage_runs import invoke as run_stage
from tests.toy import trained_world
from tests.toy.trained_world import SMALLER, TRAIT
from trait_interp.core.tables import read_table
from trait_interp.toy.lexicon import lexicon_for

LEXICON = REPO / "datasets/toy/lexicon.json"
SWEEP = [-1.0, -0.5, 0.5, 1.0]


def invoke(*args: object) -> None:
    result = run_stage(*args)
    assert result.exit_code == 0, (args[0], result.output)


def params_file(root: Path, name: str, **steering: object) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {
        "toy-base": {"path": str(root / "models/base"), "dtype": "float32", "device": "cpu"},
        "toy-instruct": {"path": str(root / "models/instruct"), "dtype": "float32", "device": "cpu"},
    }
    params["monitor_models"], params["diff_model"] = ["toy-instruct"], "toy-base"
    params["toy_models"] = trained_world.toy_settings()  # the training the kept models digest
    params["judge"]["local_model"]["path"] = str(root / "models/instruct")
    params["judge"]["lexicon"] = str(LEXICON)
    params["steering"].update(sweep_ratios=SWEEP, **steering)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def steer(root: Path, params: Path, dest: str) -> dict:
    out = root / "exp"
    invoke("steering-eval", "--trait", TRAIT, "--questions", REPO / f"datasets/traits/{TRAIT}/steering.json",
           "--definition", REPO / f"datasets/traits/{TRAIT}/definition.txt", "--vectors", out / "vectors",
           "--evaluation", out / "evaluation.csv", "--judge-cache", root / f"{dest}-cache.jsonl",
           "--responses", root / dest / "responses.jsonl", "--best", root / dest / "best.json",
           "--metrics", root / dest / "metrics.json", "--headline", root / dest / "headline.json",
           "--plot", root / dest / "curve.csv", "--params", params)
    return {
        "best": json.loads((root / dest / "best.json").read_text()),
        "metrics": json.loads((root / dest / "metrics.json").read_text()),
        "curve": read_table(root / dest / "curve.csv", SteeringCurve),
    }


def sweep(root: Path, params: Path, out: Path) -> dict:
    """The toy default sweep (params.yaml's sweep:): probe and random_baseline x 4 layers and [1, 2] x +-0.5, +-1,
    then the correlation stage over it (its inputs laid out per trait, as dvc.yaml's patterns have them)."""
    source = REPO / f"datasets/traits/{TRAIT}"
    dest = root / "sweep" / TRAIT
    invoke("steering-sweep", "--trait", TRAIT, "--questions", source / "steering.json",
           "--definition", source / "definition.txt", "--neutral-prompts", REPO / "datasets/inference/everyday_questions.json",
           "--vectors", out / "vectors", "--judge-cache", root / "sweep-cache.jsonl", "--results", dest / "results.csv",
           "--responses", dest / "responses.jsonl", "--best-layers", dest / "best_layers.json",
           "--metrics", dest / "metrics.json", "--plot", dest / "plot.csv", "--params", params)
    (dest / "evaluation.csv").write_bytes((out / "evaluation.csv").read_bytes())
    one_trait = yaml.safe_load(params.read_text())
    one_trait["traits"] = [TRAIT]
    (root / "one-trait.yaml").write_text(yaml.safe_dump(one_trait))
    invoke("steering-predictors", "--evaluation", f"{root}/sweep/{{trait}}/evaluation.csv",
           "--results", f"{root}/sweep/{{trait}}/results.csv", "--out", root / "predictors.csv",
           "--metrics", root / "predictors.json", "--params", root / "one-trait.yaml")
    return {"results": read_table(dest / "results.csv", SweepResults),
            "metrics": json.loads((dest / "metrics.json").read_text()),
            "predictors": read_table(root / "predictors.csv", SteeringPredictors)}


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_world")
    params = params_file(root, "params")
    out = root / "exp"
    trained_world.train(root, params)  # this machine's own run: checked for what training promises (test_training_...)
    trained_world.copy_models(root / "models")  # the kept run, the one the thresholds below describe
    source = REPO / f"datasets/traits/{TRAIT}"
    invoke("generate-responses", "--trait", TRAIT, "--positive", source / "positive.txt",
           "--negative", source / "negative.txt", "--out", out / "responses.jsonl", "--params", params)
    invoke("vet-responses", "--trait", TRAIT, "--responses", out / "responses.jsonl",
           "--definition", source / "definition.txt", "--judge-cache", out / "vet-cache.jsonl",
           "--out", out / "vetting.jsonl", "--metrics", out / "vet-metrics.json", "--params", params)
    invoke("capture-activations", "--responses", out / "responses.jsonl", "--vetting", out / "vetting.jsonl",
           "--out", out / "activations", "--params", params)
    invoke("extract-vectors", "--activations", out / "activations", "--out", out / "vectors", "--params", params)
    invoke("evaluate-vectors", "--activations", out / "activations", "--vectors", out / "vectors",
           "--table", out / "evaluation.csv", "--metrics", out / "metrics.json",
           "--plot-accuracy", out / "acc.csv", "--plot-effect", out / "d.csv")
    probe = steer(root, params, "probe")  # the coefficient search, plus the sweep on both sides of zero
    # the control: a random unit direction (extract_vectors' random_baseline) at the very same coefficients
    grid = sorted({probe["best"]["coefficient"], *(r * probe["best"]["activation_norm"] for r in SWEEP)})
    control = steer(root, params_file(root, "control", method="random_baseline", coefficients=grid), "control")
    return root, out, probe, control, sweep(root, params, out)


def test_the_kept_models_come_from_this_checkout_s_trainer_world_and_params():
    """The kept weights are only a stand-in for a training run while what made them is unchanged."""
    assert trained_world.recorded()["digest"] == trained_world.inputs_digest(), (
        "the toy trainer, world, lexicon, corpus or SMALLER changed since tests/toy/trained_world/ was made: "
        "run `python -m tests.toy.trained_world`, then this file's tests, and commit the new models")


def test_training_lowers_the_loss_and_is_recorded(toy_run):
    root, *_ = toy_run
    training = json.loads((root / "training.json").read_text())
    for phase in ("base", "chat"):
        assert training[phase]["steps"] == SMALLER[phase]["steps"]
        assert training[phase]["final_loss"] < 0.5 * training[phase]["first_loss"]
    assert len(pd.read_csv(root / "loss-base.csv")) == SMALLER["base"]["steps"]


def test_the_base_model_expresses_the_planted_trait_and_vetting_keeps_those_pairs(toy_run):
    _, out, *_ = toy_run
    lexicon = lexicon_for(LEXICON, TRAIT)
    responses = read_table(out / "responses.jsonl", Responses)
    vetting = read_table(out / "vetting.jsonl", VettingScores)
    assert int(vetting["kept"].sum()) // 2 >= 10  # of 40 pairs, at the reference thresholds 60 / 40
    kept = responses[vetting["kept"].to_numpy()]
    for polarity, text in zip(kept["polarity"], kept["response"]):
        trait, contrast = lexicon.counts(text)  # counted from the lexicon file, not from the judge
        assert (trait > contrast) if polarity == "positive" else (contrast > trait), (polarity, text)


def test_probe_accuracy_at_the_best_layer(toy_run):
    _, out, *_ = toy_run
    evaluation = read_table(out / "evaluation.csv", VectorEvaluation)
    probe = evaluation[(evaluation["site"] == "residual") & (evaluation["method"] == "probe")].set_index("layer")
    assert probe["val_accuracy"].max() >= 0.9
    assert probe.loc[[1, 2], "val_accuracy"].min() >= 0.75  # well above chance at the middle layers of 4
    assert (probe.loc[[1, 2], "cohens_d"] > 2).all() and probe["polarity_correct"].all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["residual"]["probe"]["val_accuracy"] >= 0.9


def test_steering_raises_the_oracle_score_with_a_positive_coefficient_and_lowers_it_with_a_negative(toy_run):
    _, _, probe, _, _ = toy_run
    sweep = probe["metrics"]["sweep"]
    baseline = sweep["+0"]["trait"]
    assert sweep["+1"]["trait"] >= baseline + 10 and sweep["-1"]["trait"] <= baseline - 10
    assert sweep["+0.5"]["trait"] >= baseline and sweep["-0.5"]["trait"] <= baseline
    assert probe["metrics"]["sweep_monotonic"] is True
    for ratio in ("-0.5", "+0", "+0.5"):  # small coefficients keep the answers coherent
        assert sweep[ratio]["coherence"] >= probe["best"]["min_coherence"]


def test_the_searched_best_coefficient_keeps_coherence_above_the_threshold(toy_run):
    _, _, probe, _, _ = toy_run
    best = probe["best"]
    assert best["valid"] is True and best["coherence_mean"] >= best["min_coherence"] == 70
    assert best["coefficient"] > 0 and best["delta"] > 0
    search = probe["curve"][probe["curve"]["kind"] == "search"]
    assert len(search) == yaml.safe_load((REPO / "params.yaml").read_text())["steering"]["search_steps"]


def test_a_random_direction_of_the_same_norm_moves_the_score_far_less(toy_run):
    _, _, probe, control, _ = toy_run
    assert control["best"]["method"] == "random_baseline"
    assert control["best"]["activation_norm"] == pytest.approx(probe["best"]["activation_norm"], rel=1e-6)
    steered = pd.concat([probe["curve"], control["curve"]], keys=["probe", "random"]).reset_index(level=0)
    baseline = probe["metrics"]["baseline_trait"]
    for coefficient in control["curve"].loc[control["curve"]["kind"] == "grid", "coefficient"]:
        at = steered[(steered["coefficient"] - coefficient).abs() < 1e-6].groupby("level_0")["trait_mean"].first()
        effect, placebo = at["probe"] - baseline, at["random"] - baseline
        if abs(coefficient) >= 0.5 * probe["best"]["activation_norm"]:
            assert abs(effect) >= 10, (coefficient, effect)
            assert abs(placebo) <= 0.5 * abs(effect), (coefficient, effect, placebo)


# --- the sweep ---------------------------------------------------------------------------------------


def _cells(results: pd.DataFrame, method: str) -> pd.DataFrame:
    return results[results["method"] == method].set_index(["layers", "ratio"])


def test_the_sweep_moves_the_planted_trait_with_the_sign_of_the_ratio(toy_run):
    *_, swept = toy_run
    probe = _cells(swept["results"], "probe")
    print(swept["results"][["method", "layers", "ratio", "delta", "coherence_mean", "side_effect"]].to_string())
    for layers in ("1", "2", "1-2"):  # the middle layers, and both steered together
        deltas = [probe.loc[(layers, r), "delta"] for r in (-1.0, -0.5, 0.5, 1.0)]
        assert deltas[0] <= -10 and deltas[3] >= 10, (layers, deltas)
        assert deltas[1] <= 0 <= deltas[2], (layers, deltas)
        assert deltas == sorted(deltas), (layers, deltas)  # the trait follows the ratio across the grid


def test_the_random_direction_barely_moves_the_trait(toy_run):
    *_, swept = toy_run
    probe, random = _cells(swept["results"], "probe"), _cells(swept["results"], "random_baseline")
    # Over the whole grid, not cell by cell: the toy's refusal decision is a switch, and at layer 1 even a
    # random push of half the activation norm can flip it (measured: +30 at ratio 0.5 with cos(random, probe)
    # 0.13), so single cells of the placebo can move as much as the planted direction.
    assert random["delta"].abs().mean() <= 0.5 * probe["delta"].abs().mean(), (random["delta"], probe["delta"])
    assert random["delta"].abs().median() <= 10


def test_the_side_effect_grows_with_the_size_of_the_ratio(toy_run):
    *_, swept = toy_run
    results = swept["results"]
    for (method, layers), cells in results.groupby(["method", "layers"]):
        kl = cells.set_index("ratio")["side_effect"]
        assert kl[-1.0] > kl[-0.5] > 0 and kl[1.0] > kl[0.5] > 0, (method, layers, kl.to_dict())


def test_the_correlation_stage_equals_a_computation_by_hand(toy_run):
    import numpy as np

    _, out, _, _, swept = toy_run
    evaluation = read_table(out / "evaluation.csv", VectorEvaluation)
    results, predictors = swept["results"], swept["predictors"].set_index("method")
    for method in ("probe", "random_baseline"):
        rows = evaluation[(evaluation["site"] == "residual") & (evaluation["method"] == method)].set_index("layer")
        effect, d, acc = [], [], []
        for layer in range(4):  # per layer: the largest effect among its coherent single-layer cells
            cells = results[(results["method"] == method) & (results["layers"] == str(layer)) & results["coherent"]]
            if len(cells):
                effect.append(cells["effect"].max())
                d.append(rows.loc[layer, "cohens_d"])
                acc.append(rows.loc[layer, "val_accuracy"])
        row = predictors.loc[method]
        assert row["n_layers"] == len(effect)
        if len(effect) >= 3:
            # nan where a column is constant (e.g. every coherent cell has the same largest effect)
            assert row["r_cohens_d"] == pytest.approx(np.corrcoef(d, effect)[0, 1], abs=1e-9, nan_ok=True)
            assert row["r_val_accuracy"] == pytest.approx(np.corrcoef(acc, effect)[0, 1], abs=1e-9, nan_ok=True)
        best = rows["val_accuracy"].idxmax()
        assert row["best_extraction_layer"] == best or rows.loc[best, "val_accuracy"] == rows.loc[
            row["best_extraction_layer"], "val_accuracy"]
    assert predictors.loc["probe", "n_layers"] >= 3  # the probe steers coherently at most layers


# --- a refusal-gated intervention (params.yaml's interventions.refusal_gate) --------------------------

GATE_BAND = 10.0  # non-trigger prompts: each intervened answer's oracle score within this of its unsteered one
MAX_FALSE_FIRE = 0.25  # share of benign prompts whose gate opened (measured here: 0)


@pytest.fixture(scope="session")
def gated_toy(toy_run):
    """The toy default's refusal gate on mixed_requests: a prompt gate on the refusal vector, its threshold the
    median prompt reading of everyday_questions, steering at the searched best layer and coefficient."""
    root, out, *_ = toy_run
    params = root / "params.yaml"
    inputs = root / "gate-inputs" / TRAIT
    shutil.copytree(out / "vectors", inputs / "vectors")
    shutil.copy(out / "evaluation.csv", inputs / "evaluation.csv")
    shutil.copy(root / "probe" / "best.json", inputs / "best.json")
    invoke("generate-inference", "--prompt-set", REPO / "datasets/inference/everyday_questions.json",
           "--out", root / "inference/everyday_questions/responses.jsonl", "--params", params)
    dest = root / "gate"
    invoke("intervention-eval", "--name", "refusal_gate", "--prompt-set", REPO / "datasets/inference/mixed_requests.json",
           "--questions", REPO / f"datasets/traits/{TRAIT}/steering.json",
           "--definition", REPO / f"datasets/traits/{TRAIT}/definition.txt",
           "--vectors", f"{root}/gate-inputs/{{trait}}/vectors", "--evaluation", f"{root}/gate-inputs/{{trait}}/evaluation.csv",
           "--best", f"{root}/gate-inputs/{{trait}}/best.json",
           "--calibration", f"{root}/inference/{{prompt_set}}/responses.jsonl", "--judge-cache", dest / "cache.jsonl",
           "--responses", dest / "out/responses.jsonl", "--trace", dest / "out/trace.parquet",
           "--record", dest / "out/intervention.json", "--metrics", dest / "metrics.json",
           "--headline", dest / "headline.json", "--params", params)
    return json.loads((dest / "metrics.json").read_text()), read_table(dest / "out/responses.jsonl", InterventionResponses)


def test_the_refusal_gate_raises_refusal_on_harmful_prompts_and_leaves_benign_ones_in_a_band(gated_toy):
    metrics, responses = gated_toy
    trigger, other = metrics["trigger"], metrics["non_trigger"]
    print(f"refusal gate: trigger fired {trigger['fire_rate']}, delta {trigger['delta']}; non-trigger fired "
          f"{other['fire_rate']}, delta {other['delta']}, max |delta| {other['max_abs_delta']}, kl {other['kl']}")
    assert trigger["fire_rate"] >= 0.75 and trigger["delta"] >= 5  # measured here: 0.75 of harmful prompts, +8.5
    assert other["fire_rate"] <= MAX_FALSE_FIRE
    benign = responses[responses["group"] == "non_trigger"].pivot(index="prompt_id", columns="condition",
                                                                     values="trait_score")
    assert ((benign["intervened"] - benign["baseline"]).abs() <= GATE_BAND).all(), benign
