"""The intervention_eval stage through its command, on barely trained toy models: tables, records, errors.

Its truths are consistency checks the stage cannot fake: a prompt gate fires exactly where the score
it decided on crosses its threshold, a prompt whose gate stayed closed is answered exactly as
unsteered with zero KL, a cap binds exactly where the projection it read is outside its range, and
a percentile threshold is the percentile of the calibration set's projections, recomputed here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from schemas.interventions import InterventionResponses, InterventionTrace
from tests.conftest import REPO
from tests.pipeline.test_stages import (
    build_args,
    make_params,
    steer_args,
    vet_args,
    write_trait,
)
from tests.stage_runs import invoke
from trait_interp.core.tables import read_table

TRAIT = "behavior/refusal"
SETS = ("mixed_requests", "everyday_questions")
GATED = {
    "kind": "gated", "trait": TRAIT, "prompt_set": "mixed_requests", "trigger": "harmful", "non_trigger": "benign",
    # calibrated on the evaluated set itself, so that about half its prompts open the gate
    "gate": {"trait": TRAIT, "threshold": {"percentile": 50, "prompt_set": "mixed_requests"}, "mode": "prompt"},
}
CAPPED = {
    "kind": "capped", "trait": TRAIT, "prompt_set": "mixed_requests", "trigger": "harmful", "non_trigger": "benign",
    "layers": "1:3", "low": {"percentile": 20, "prompt_set": "everyday_questions"}, "high": 0.5,
}


@pytest.fixture(scope="module")
def steered(tmp_path_factory):
    """Toy models (tiny training), the refusal trait up to steering, and the monitored responses that calibrate."""
    tmp = tmp_path_factory.mktemp("interventions")
    params = make_params(tmp, **{"interventions": {"gate": GATED, "cap": CAPPED}})
    pos, neg = write_trait(tmp)
    out = tmp / "exp" / TRAIT
    steps = [
        build_args(params, tmp / "models", tmp / "training"),
        ("generate-responses", "--trait", TRAIT, "--positive", pos, "--negative", neg, "--out", out / "responses.jsonl",
         "--params", params),
        vet_args(out, params, out / "vetting.jsonl", out / "cache/vet.jsonl", out / "vet-metrics.json"),
        ("capture-activations", "--responses", out / "responses.jsonl", "--vetting", out / "vetting.jsonl",
         "--out", out / "activations", "--params", params),
        ("extract-vectors", "--activations", out / "activations", "--out", out / "vectors", "--params", params),
        ("evaluate-vectors", "--activations", out / "activations", "--vectors", out / "vectors",
         "--table", out / "evaluation.csv", "--metrics", out / "metrics.json",
         "--plot-accuracy", out / "plots/acc.csv", "--plot-effect", out / "plots/d.csv"),
        steer_args(out, params, out / "steering"),
        *[("generate-inference", "--prompt-set", REPO / f"datasets/inference/{name}.json",
           "--out", tmp / f"inference/{name}/responses.jsonl", "--params", params) for name in SETS],
    ]
    for step in steps:
        result = invoke(*step)
        assert result.exit_code == 0, (step[0], result.output)
    return tmp, params


def run(tmp: Path, params: Path, name: str, dest: str, out: Path | None = None):
    """The stage on the artifacts under ``tmp``, writing under ``out / dest`` (default ``tmp / dest``)."""
    d = (out or tmp) / dest
    return invoke(
        "intervention-eval", "--name", name, "--prompt-set", REPO / "datasets/inference/mixed_requests.json",
        "--questions", REPO / f"datasets/traits/{TRAIT}/steering.json",
        "--definition", REPO / f"datasets/traits/{TRAIT}/definition.txt",
        "--vectors", f"{tmp}/exp/{{trait}}/vectors", "--evaluation", f"{tmp}/exp/{{trait}}/evaluation.csv",
        "--best", f"{tmp}/exp/{{trait}}/steering/best.json",
        "--calibration", f"{tmp}/inference/{{prompt_set}}/responses.jsonl",
        "--judge-cache", d / "cache.jsonl", "--responses", d / "out/responses.jsonl", "--trace", d / "out/trace.parquet",
        "--record", d / "out/intervention.json", "--metrics", d / "metrics.json", "--headline", d / "headline.json",
        "--params", params,
    )


def outputs(tmp: Path, dest: str) -> dict:
    d = tmp / dest
    return {
        "responses": read_table(d / "out/responses.jsonl", InterventionResponses),
        "trace": read_table(d / "out/trace.parquet", InterventionTrace),
        "record": json.loads((d / "out/intervention.json").read_text()),
        "metrics": json.loads((d / "metrics.json").read_text()),
        "headline": json.loads((d / "headline.json").read_text()),
    }


@pytest.fixture(scope="module")
def gated(steered):
    tmp, params = steered
    result = run(tmp, params, "gate", "gate")
    assert result.exit_code == 0, result.output
    return outputs(tmp, "gate")


def _calibration_means(tmp: Path, prompt_set: str, layer: int, skip: bool = True) -> np.ndarray:
    """Per calibration prompt, the mean projection over its prompt tokens, from the project stage's own table."""
    result = invoke("project", "--responses", tmp / f"inference/{prompt_set}/responses.jsonl",
                    "--vectors", f"{tmp}/exp/{{trait}}/vectors", "--layers", _layers(tmp, layer),
                    "--out", tmp / "calib/projections.parquet",
                    "--dynamics", tmp / "calib/dynamics.parquet", "--commitment", tmp / "calib/commitment.csv",
                    "--metrics", tmp / "calib/metrics.json", "--params", _monitor_params(tmp))
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp / "calib/projections.parquet")
    prompt = table[(table["frame"] == "prompt") & (table["layer"] == layer) & (table["token_index"] >= int(skip))]
    return prompt.groupby("prompt_id")["projection"].mean().to_numpy(dtype=np.float64)


def _layers(tmp: Path, layer: int) -> Path:
    path = tmp / "calib/layers.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"choice": layer, "layers": {TRAIT: [layer]}}))
    return path


def _monitor_params(tmp: Path) -> Path:
    params = yaml.safe_load(next(tmp.glob("params-0.yaml")).read_text())
    params["traits"] = [TRAIT]
    params["monitoring"].update(clean_massive_dims="none", layer=1)
    path = tmp / "params-monitor.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_gated_stage_writes_its_tables_record_metrics_and_headline(steered, gated):
    tmp, _ = steered
    responses, trace, record = gated["responses"], gated["trace"], gated["record"]
    n = 16  # mixed_requests: 8 harmful, 8 benign
    assert len(responses) == 2 * n and set(responses["condition"]) == {"baseline", "intervened"}
    assert responses.groupby("group")["prompt_id"].nunique().to_dict() == {"trigger": 8, "non_trigger": 8}
    best = json.loads((tmp / f"exp/{TRAIT}/steering/best.json").read_text())
    assert record["layers"] == best["layers"] and record["coefficient"] == best["coefficient"]  # from best.json
    gate = record["gate"]
    assert gate["layer"] == min(best["layers"]) and gate["threshold_from"] == "p50 of mixed_requests"
    # the percentile, recomputed from the project stage's projections of the calibration set
    means = _calibration_means(tmp, "mixed_requests", gate["layer"])
    assert gate["threshold"] == pytest.approx(float(np.percentile(means, 50)), abs=1e-4)
    intervened = responses[responses["condition"] == "intervened"].set_index("prompt_id")
    baseline = responses[responses["condition"] == "baseline"].set_index("prompt_id")
    # the prompt gate fires exactly where the prompt's mean (the gate score) is above the threshold
    assert (intervened["fired"] == (intervened["gate_score"] > gate["threshold"])).all()
    assert 0 < intervened["fired"].sum() < n, "the threshold splits the prompts"
    closed = intervened[~intervened["fired"].astype(bool)]
    assert (closed["response"] == baseline.loc[closed.index, "response"]).all()
    assert (closed["kl"] == 0).all() and not closed["changed"].any() and (closed["n_steered"] == 0).all()
    assert (intervened.loc[intervened["fired"].astype(bool), "kl"] > 0).all()
    # one trace row per position the model read: the prompt and every response token but the last
    per_prompt = trace.groupby("prompt_id").size()
    lengths = intervened["prompt_ids"].map(len) + intervened["response_ids"].map(len) - 1
    assert (per_prompt.sort_index() == lengths.loc[per_prompt.index].sort_index()).all()
    assert set(trace["read"]) == {"gate"} and set(trace["layer"]) == {gate["layer"]}
    opened = trace.groupby("prompt_id")["steered"].all()
    assert (opened == intervened.loc[opened.index, "fired"].astype(bool)).all()  # prompt mode: all or nothing
    metrics, headline = gated["metrics"], gated["headline"]
    assert metrics["non_trigger"]["fire_rate"] == headline["false_fire"]
    assert tuple(headline) == ("delta", "coherence", "false_fire", "off_kl")
    assert metrics["trigger"]["n"] == metrics["non_trigger"]["n"] == 8 and metrics["judge"]["calls"] > 0


def test_a_rerun_asks_the_judge_nothing_and_writes_the_same_tables(steered, gated):
    tmp, params = steered
    (tmp / "again").mkdir()
    (tmp / "again/cache.jsonl").write_bytes((tmp / "gate/cache.jsonl").read_bytes())
    result = run(tmp, params, "gate", "again")
    assert result.exit_code == 0, result.output
    again = outputs(tmp, "again")
    assert again["metrics"]["judge"]["calls"] == 0
    assert (tmp / "again/out/responses.jsonl").read_bytes() == (tmp / "gate/out/responses.jsonl").read_bytes()
    pd.testing.assert_frame_equal(again["trace"], gated["trace"])


def test_the_capped_stage_clamps_at_each_layer_of_the_band(steered):
    tmp, params = steered
    result = run(tmp, params, "cap", "cap")
    assert result.exit_code == 0, result.output
    cap = outputs(tmp, "cap")
    record, trace = cap["record"], cap["trace"]
    assert record["kind"] == "capped" and record["coefficient"] is None and record["gate"] is None
    assert [c["layer"] for c in record["caps"]] == [1, 2] and all(c["high"] == 0.5 for c in record["caps"])
    assert record["low_from"] == "p20 of everyday_questions" and record["high_from"] == "value"
    assert set(trace["read"]) == {"cap"} and set(trace["layer"]) == {1, 2}
    for c in record["caps"]:
        at = trace[trace["layer"] == c["layer"]]
        outside = (at["projection"] < c["low"]) | (at["projection"] > c["high"])
        assert (at["fired"] == outside).all() and at["fired"].any()  # it binds where the reading is outside
        assert (at["steered"] == at["fired"]).all()  # positions: all
    assert cap["responses"].loc[cap["responses"]["condition"] == "intervened", "fired"].all()


def _fails(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and len(result.output.strip().splitlines()) >= 1, result.output
    for fragment in fragments:
        assert fragment in line, (fragment, line)


@pytest.mark.parametrize("change, fragments", [
    ({"gate": None}, ["interventions.bad.gate", "needs a gate"]),
    ({"typo": 1}, ["interventions.bad", "unknown key(s) typo"]),
    ({"gate": {**GATED["gate"], "layer": 2}, "layers": [1]}, ["interventions.bad.gate.layer", "after the first steered layer 1"]),
    ({"trigger": "dangerous"}, ["interventions.bad.trigger", "note = 'dangerous'"]),
    ({"gate": {**GATED["gate"], "threshold": {"percentile": 150, "prompt_set": "everyday_questions"}}},
     ["interventions.bad.gate.threshold.percentile", "150"]),
    ({"gate": {**GATED["gate"], "threshold": "middle"}}, ["interventions.bad.gate.threshold", "'middle'"]),
    ({"gate": {**GATED["gate"], "mode": "sometimes"}}, ["interventions.bad.gate.mode", "'sometimes'"]),
    ({"low": 1.0}, ["interventions.bad.low", "only capped interventions"]),
    ({"kind": "capped", "gate": None, "coefficient": "best", "low": 2.0, "high": 1.0}, ["interventions.bad", "low (2", "above high (1"]),
    ({"layers": 7}, ["interventions.bad.layers", "out of range"]),
])
def test_bad_params_are_one_line_errors_naming_the_param(steered, tmp_path, change, fragments):
    tmp, _ = steered
    entry = {**GATED, **change}
    params = make_params(tmp_path, tmp, **{"interventions": {"bad": {k: v for k, v in entry.items() if v is not None}}})
    _fails(run(tmp, params, "bad", "bad", tmp_path), *fragments)
    assert not (tmp_path / "bad/out/responses.jsonl").exists()


def test_an_unknown_name_says_which_param_is_missing(steered, tmp_path):
    tmp, params = steered
    _fails(run(tmp, params, "nope", "nope", tmp_path), "missing param 'interventions.nope'")


def test_validate_reports_every_intervention_problem_in_one_run(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["interventions"] = {
        "ok": GATED,
        "bad name!": {**GATED},
        "unknown_trait": {**GATED, "trait": "behavior/nope"},
        "no_set": {**GATED, "gate": {**GATED["gate"], "threshold": {"percentile": 50, "prompt_set": "unmonitored"}}},
        "late_gate": {**GATED, "layers": [1], "gate": {**GATED["gate"], "layer": 3}},
        "no_label": {**GATED, "non_trigger": "friendly"},
        "no_range": {**CAPPED, "low": None, "high": None},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    result = invoke("validate", "--params", path, "--traits-root", REPO / "datasets/traits",
                    "--prompt-sets-root", REPO / "datasets/inference", "--out", tmp_path / "validated")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    expected = [
        "interventions.bad name!: a name is letters, digits",
        "interventions.unknown_trait.trait: 'behavior/nope' is not in traits",
        "interventions.no_set.gate.threshold.prompt_set: 'unmonitored' is not in prompt_sets",
        "interventions.late_gate.gate.layer: 3 is after the first steered layer 1",
        "interventions.no_label.non_trigger: no prompt of 'mixed_requests' has note = 'friendly'",
        "interventions.no_range: a capped intervention needs low, high or both",
    ]
    for fragment in expected:
        assert sum(fragment in line for line in errors) == 1, (fragment, errors)
    assert len(errors) == len(expected), errors
    assert not any("interventions.ok" in line for line in errors)
    assert math.isfinite(len(errors))
