"""Smoke test of the stage commands on toy models in a temp dir, and their bad-input errors."""

from __future__ import annotations

import importlib
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from schemas.evaluation import VectorEvaluation
from schemas.examples import Examples
from schemas.responses import Responses
from schemas.steering import SteeringCurve, SteeringResponses
from schemas.sweep import SweepPlot, SweepResponses, SweepResults
from schemas.vetting import VettingScores
from stages.cli import STAGES
from tests.conftest import CORPUS, REPO, TINY_TRAINING
from trait_interp.core.tables import read_table

runner = CliRunner()
LEXICON = REPO / "datasets/toy/lexicon.json"


def make_params(tmp: Path, models_root: Path | None = None, **overrides) -> Path:
    """A params file in ``tmp`` for toy models under ``models_root`` (default ``tmp``)."""
    root = models_root or tmp
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {
        "toy-base": {"path": str(root / "models/base"), "dtype": "float32", "device": "cpu"},
        "toy-instruct": {"path": str(root / "models/instruct"), "dtype": "float32", "device": "cpu"},
    }
    params["monitor_models"], params["diff_model"] = ["toy-instruct"], "toy-base"
    params["toy_models"].update(vocab_size=400, hidden_size=32, intermediate_size=48, num_layers=3, **TINY_TRAINING)
    # these stage tests exercise the local LLM judge backend (the toy default is the lexicon oracle)
    params["judge"].update(backend="local", relevance_check=True)
    params["judge"]["local_model"]["path"] = str(root / "models/judge")
    params["judge"]["lexicon"] = str(LEXICON)
    params["vetting"].update(pos_threshold=35, neg_threshold=65)  # the stand-in judge's scores mean nothing
    params["vetting"]["min_pairs"] = 3
    params["steering"].update(subset=3, max_new_tokens=6, search_steps=2, sweep_ratios=None)
    params["layer"] = 1
    params["extraction"]["val_fraction"] = 0.25
    for dotted, value in overrides.items():
        node = params
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    path = tmp / f"params-{len(list(tmp.glob('params*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def build_args(params: Path, models: Path, plots: Path | None = None) -> tuple:
    """build-toy-models writing base, instruct and judge under ``models`` (loss curves and metrics beside)."""
    plots = plots or models
    return ("build-toy-models", "--world", REPO / "datasets/toy/world.json", "--lexicon", LEXICON,
            "--filler", CORPUS, "--out-base", models / "base", "--out-instruct", models / "instruct",
            "--out-judge", models / "judge", "--loss-base", plots / "loss-base.csv",
            "--loss-chat", plots / "loss-chat.csv", "--metrics", plots / "training.json", "--params", params)


def vet_args(out: Path, params: Path, table: Path, cache: Path, metrics: Path) -> tuple:
    return ("vet-responses", "--trait", "behavior/refusal", "--responses", out / "responses.jsonl",
            "--definition", REPO / "datasets/traits/behavior/refusal/definition.txt",
            "--judge-cache", cache, "--out", table, "--metrics", metrics, "--params", params)


def steer_args(out: Path, params: Path, dest: Path, cache: Path | None = None,
               questions: Path = REPO / "datasets/traits/behavior/refusal/steering.json") -> tuple:
    return ("steering-eval", "--trait", "behavior/refusal", "--questions", questions,
            "--definition", REPO / "datasets/traits/behavior/refusal/definition.txt",
            "--vectors", out / "vectors", "--evaluation", out / "evaluation.csv",
            "--judge-cache", cache or out / "cache/steer.jsonl", "--responses", dest / "responses.jsonl",
            "--best", dest / "best.json", "--metrics", dest / "metrics.json", "--headline", dest / "headline.json",
            "--plot", dest / "curve.csv", "--params", params)


from tests.stage_runs import invoke, resolved_folder, with_records  # noqa: E402  (stage commands with their model records, as dvc.yaml passes them)


def write_trait(tmp: Path, n: int = 12, n_negative: int | None = None) -> tuple[Path, Path]:
    source = REPO / "datasets/traits/behavior/refusal"
    folder = tmp / "traits/behavior/refusal"
    folder.mkdir(parents=True, exist_ok=True)
    pos = source.joinpath("positive.txt").read_text().splitlines()[:n]
    neg = source.joinpath("negative.txt").read_text().splitlines()[: n if n_negative is None else n_negative]
    (folder / "positive.txt").write_text("\n".join(pos) + "\n")
    (folder / "negative.txt").write_text("\n".join(neg) + "\n")
    return folder / "positive.txt", folder / "negative.txt"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run every stage once; later tests read the outputs."""
    tmp = tmp_path_factory.mktemp("stages")
    params = make_params(tmp)
    pos, neg = write_trait(tmp)
    out = tmp / "exp"
    steps = [
        build_args(params, tmp / "models", tmp / "training"),
        ("generate-responses", "--trait", "behavior/refusal", "--positive", pos, "--negative", neg,
         "--out", out / "responses.jsonl", "--params", params),
        vet_args(out, params, out / "vetting.jsonl", out / "cache/vet.jsonl", out / "vet-metrics.json"),
        ("capture-activations", "--responses", out / "responses.jsonl", "--vetting", out / "vetting.jsonl",
         "--out", out / "activations", "--params", params),
        ("extract-vectors", "--activations", out / "activations", "--out", out / "vectors", "--params", params),
        ("evaluate-vectors", "--activations", out / "activations", "--vectors", out / "vectors",
         "--table", out / "evaluation.csv", "--metrics", out / "metrics.json",
         "--plot-accuracy", out / "plots/acc.csv", "--plot-effect", out / "plots/d.csv"),
        steer_args(out, params, out / "steering"),
    ]
    for step in steps:
        result = invoke(*step)
        assert result.exit_code == 0, (step[0], result.output)
    return tmp, params, out


def test_every_stage_is_listed_with_help():
    result = invoke("--help")
    assert result.exit_code == 0
    for name, module_name in STAGES.items():
        assert name in result.output
        module = importlib.import_module(f"stages.{module_name}")
        assert module.main.__doc__
        sub = invoke(name, "--help")
        assert sub.exit_code == 0 and "--params" in sub.output or name == "evaluate-vectors"


def test_outputs_are_complete_and_valid(pipeline):
    tmp, params, out = pipeline
    responses = read_table(out / "responses.jsonl", Responses)
    assert len(responses) == 24 and set(responses["polarity"]) == {"positive", "negative"}
    assert (responses["response_ids"].map(len) <= 5).all()  # response[:5] -> 5 new tokens, not 16
    assert not responses["chat"].any()  # base model: completion mode
    vetting = read_table(out / "vetting.jsonl", VettingScores)
    kept = int(vetting["kept"].sum())
    assert len(vetting) == 24 and 6 <= kept < 24 and kept % 2 == 0  # paired filtering keeps whole pairs
    examples = read_table(out / "activations/examples.csv", Examples)
    assert len(examples) == kept
    # pair-preserving: both sides of a pair are in the same split
    assert (examples.groupby("pair_index")["split"].nunique() == 1).all()
    acts = load_file(str(out / "activations/activations.safetensors"))
    assert acts["residual"].shape == (kept, 3, 32) and acts["k_proj"].shape[0] == kept
    table = read_table(out / "evaluation.csv", VectorEvaluation)
    methods = set(yaml.safe_load(params.read_text())["vectors"]["methods"])
    assert set(table["method"]) == methods and set(table["layer"]) == {0, 1, 2}
    sidecar = json.loads((out / "vectors/residual/probe.json").read_text())
    assert sidecar["position"] == "response[:5]" and sidecar["layers"] == [0, 1, 2]
    assert sidecar["n_train"] + sidecar["n_val"] == kept and sidecar["dataset_hash"]
    vectors = load_file(str(out / "vectors/residual/probe.safetensors"))["vectors"]
    assert vectors.shape == (3, 32) and ((vectors.norm(dim=1) - 1).abs() < 1e-5).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["method"] != "random_baseline" and "probe" in metrics["residual"]
    plot = pd.read_csv(out / "plots/acc.csv")
    assert list(plot["layer"]) == [0, 1, 2] and methods <= set(plot.columns)


def test_stored_activations_follow_the_model_dtype_and_methods_compute_in_float32(pipeline, tmp_path):
    """extraction.store_dtype: model (the default) stores a bf16 model's activations as bf16; float32 when
    asked; the toy's float32 model stores float32 (the pipeline fixture). Vectors and evaluation from the
    bf16 file are float32 and equal what the same stages give on that file's values written as float32."""
    from safetensors import safe_open

    tmp, params, out = pipeline

    def dtypes(folder: Path) -> set[str]:
        with safe_open(str(folder / "activations.safetensors"), "pt") as f:
            return {str(f.get_slice(k).get_dtype()) for k in f.keys() if k != "__layers__"}

    assert dtypes(out / "activations") == {"F32"}
    runs = {}
    for name, overrides in (("bf16", {}), ("bf16-float32", {"extraction.store_dtype": "float32"})):
        p = make_params(tmp_path, tmp, **{"models.toy-base.dtype": "bfloat16", **overrides})
        acts = tmp_path / name / "activations"
        result = invoke("capture-activations", "--responses", out / "responses.jsonl", "--vetting",
                        out / "vetting.jsonl", "--out", acts, "--params", p)
        assert result.exit_code == 0, result.output
        runs[name] = (p, acts)
    assert dtypes(runs["bf16"][1]) == {"BF16"} and dtypes(runs["bf16-float32"][1]) == {"F32"}
    assert "stored as bfloat16" in invoke("capture-activations", "--responses", out / "responses.jsonl", "--vetting",
                                          out / "vetting.jsonl", "--out", tmp_path / "again", "--params",
                                          runs["bf16"][0]).output
    # the bf16 file's values, written as float32: the methods must give exactly the same results on both
    upcast = tmp_path / "upcast/activations"
    shutil.copytree(runs["bf16"][1], upcast)
    tensors = load_file(str(upcast / "activations.safetensors"))
    save_file({k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()},
              str(upcast / "activations.safetensors"))
    tables = []
    for acts in (runs["bf16"][1], upcast):
        folder = acts.parent
        for step in (("extract-vectors", "--activations", acts, "--out", folder / "vectors", "--params", runs["bf16"][0]),
                     ("evaluate-vectors", "--activations", acts, "--vectors", folder / "vectors",
                      "--table", folder / "evaluation.csv", "--metrics", folder / "metrics.json",
                      "--plot-accuracy", folder / "acc.csv", "--plot-effect", folder / "d.csv")):
            result = invoke(*step)
            assert result.exit_code == 0, (step[0], result.output)
        tables.append(load_file(str(folder / "vectors/residual/probe.safetensors"))["vectors"])
    # vectors are stored as the activations were (bf16 here, float32 for the upcast copy), computed in
    # float32 from the same values: the bf16 file is the float32 result rounded
    assert tables[0].dtype == torch.bfloat16 and tables[1].dtype == torch.float32
    assert torch.equal(tables[0], tables[1].to(torch.bfloat16))


def test_generation_is_deterministic(pipeline):
    tmp, params, out = pipeline
    pos, neg = tmp / "traits/behavior/refusal/positive.txt", tmp / "traits/behavior/refusal/negative.txt"
    again = tmp / "again.jsonl"
    result = invoke("generate-responses", "--trait", "behavior/refusal", "--positive", pos, "--negative", neg,
                    "--out", again, "--params", params)
    assert result.exit_code == 0
    assert again.read_bytes() == (out / "responses.jsonl").read_bytes()


def _fails(result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_bad_inputs_give_one_line_errors_and_no_output(pipeline, tmp_path):
    tmp, params, out = pipeline
    pos, neg = tmp / "traits/behavior/refusal/positive.txt", tmp / "traits/behavior/refusal/negative.txt"
    target = tmp_path / "r.jsonl"

    def generate(p, positive=pos, negative=neg):
        return invoke("generate-responses", "--trait", "behavior/refusal", "--positive", positive,
                      "--negative", negative, "--out", target, "--params", p)

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    _fails(generate(params, positive=empty), str(empty), "no scenarios")
    short_pos, short_neg = write_trait(tmp_path, n=12, n_negative=10)
    _fails(generate(params, short_pos, short_neg), "12 scenarios", "10", "extraction.paired: false")
    _fails(generate(make_params(tmp_path, tmp, **{"extraction.position": "response[5"})), "malformed position 'response[5'")
    _fails(generate(make_params(tmp_path, tmp, **{"models.toy-base.path": str(tmp_path / "nope")})),
           "models.toy-base.path", "does not exist")
    _fails(generate(make_params(tmp_path, tmp, **{"generation.typo_key": 1})), "unknown key(s) typo_key")
    assert not target.exists() and not list(target.parent.glob(".r.jsonl*"))

    acts_out = tmp_path / "acts"
    capture = lambda p: invoke("capture-activations", "--responses", out / "responses.jsonl", "--out", acts_out, "--params", p)  # noqa: E731
    _fails(capture(make_params(tmp_path, tmp, **{"extraction.sites": ["residual", "resid_post"]})), "unknown site 'resid_post'")
    _fails(capture(make_params(tmp_path, tmp, **{"extraction.layers": [0, 7]})), "layer 7 is out of range")
    assert not acts_out.exists()

    vec_out = tmp_path / "vec"
    result = invoke("extract-vectors", "--activations", out / "activations", "--out", vec_out,
                    "--params", make_params(tmp_path, tmp, **{"vectors.methods": ["probe", "svm"]}))
    _fails(result, "unknown method 'svm'", "available: probe")
    assert not vec_out.exists()


def test_unknown_trait_and_bad_json_files(tmp_path):
    from trait_interp.core.datasets import (
        load_prompt_set,
        load_steering_questions,
        trait_dir,
    )
    from trait_interp.core.errors import UserInputError

    with pytest.raises(UserInputError, match="unknown trait 'behavior/nope'"):
        trait_dir(REPO / "datasets/traits", "behavior/nope")
    bad = tmp_path / "steering.json"
    bad.write_text('{"questions": ["a",\n  ]')
    with pytest.raises(UserInputError, match=r"steering.json:2:\d+: invalid JSON"):
        load_steering_questions(bad)
    no_prompts = tmp_path / "set.json"
    no_prompts.write_text('{"name": "x"}')
    with pytest.raises(UserInputError, match='no "prompts" list'):
        load_prompt_set(no_prompts)


def test_model_build_is_deterministic(tmp_path):
    """Training is deterministic: the same seed gives byte-identical weights (sha256), another seed does not."""
    import hashlib

    def build(run: str, params: Path) -> dict[str, str]:
        result = invoke(*build_args(params, tmp_path / run))
        assert result.exit_code == 0, result.output
        files = sorted((tmp_path / run).rglob("*.safetensors")) + sorted((tmp_path / run).rglob("tokenizer.json"))
        return {p.relative_to(tmp_path / run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    params = make_params(tmp_path)
    a, b = build("a", params), build("b", params)
    assert set(a) == {"base/model.safetensors", "instruct/model.safetensors", "judge/model.safetensors",
                      "base/tokenizer.json", "instruct/tokenizer.json", "judge/tokenizer.json"}
    assert a == b
    assert a["base/model.safetensors"] != a["instruct/model.safetensors"]  # the chat model was tuned further
    other = build("c", make_params(tmp_path, **{"toy_models.seed": 1}))
    assert other["base/model.safetensors"] != a["base/model.safetensors"]
    training = json.loads((tmp_path / "a/training.json").read_text())
    assert training["base"]["steps"] == TINY_TRAINING["base"]["steps"]
    assert training["chat"]["steps"] == TINY_TRAINING["chat"]["steps"]
    curve = pd.read_csv(tmp_path / "a/loss-base.csv")
    assert list(curve.columns) == ["step", "loss"] and list(curve["step"]) == list(range(1, len(curve) + 1))


def test_no_temp_files_left(pipeline):
    tmp, _, out = pipeline
    assert not [p for p in tmp.rglob("*.tmp")]


def test_outputs_are_byte_identical_across_processes(pipeline, tmp_path):
    """DVC hashes files: the same inputs must give the same bytes in a fresh process."""
    import subprocess
    import sys

    tmp, params, out = pipeline
    again = tmp_path / "vectors"
    subprocess.run(
        [sys.executable, "-m", "stages", "extract-vectors", "--activations", str(out / "activations"),
         "--out", str(again), "--params", str(params)],
        check=True, capture_output=True, cwd=REPO,
    )
    for first in sorted((out / "vectors").rglob("*.*")):
        assert first.read_bytes() == (again / first.relative_to(out / "vectors")).read_bytes(), first


# --- vetting and steering ------------------------------------------------------------------------


def test_vetting_applies_thresholds_and_reports_judge_calls(pipeline):
    tmp, params, out = pipeline
    vetting = read_table(out / "vetting.jsonl", VettingScores)
    settings = yaml.safe_load(params.read_text())["vetting"]
    positive = vetting[vetting["polarity"] == "positive"]
    assert (positive["passed"] == (positive["score"] >= settings["pos_threshold"])).all()
    negative = vetting[vetting["polarity"] == "negative"]
    assert (negative["passed"] == (negative["score"] <= settings["neg_threshold"])).all()
    both = vetting.groupby("pair_index")["passed"].transform("all")
    assert (vetting["kept"] == both).all()
    metrics = json.loads((out / "vet-metrics.json").read_text())
    assert metrics["judge"]["calls"] + metrics["judge"]["cache_hits"] == 24
    assert metrics["kept_pairs"] == int(vetting["kept"].sum()) // 2
    assert len((out / "cache/vet.jsonl").read_text().splitlines()) == metrics["judge"]["calls"]


def test_vetting_rerun_hits_the_cache_and_gives_the_same_table(pipeline, tmp_path):
    tmp, params, out = pipeline
    result = invoke(*vet_args(out, params, tmp_path / "v.jsonl", out / "cache/vet.jsonl", tmp_path / "m.json"))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["judge"]["calls"] == 0 and metrics["judge"]["cache_hits"] == 24
    assert (tmp_path / "v.jsonl").read_bytes() == (out / "vetting.jsonl").read_bytes()


def test_vetting_disabled_keeps_everything_without_judging(pipeline, tmp_path):
    tmp, _, out = pipeline
    params = make_params(tmp_path, tmp, **{"vetting.enabled": False, "judge.backend": "openai"})
    cache = tmp_path / "cache.jsonl"
    result = invoke(*vet_args(out, params, tmp_path / "v.jsonl", cache, tmp_path / "m.json"))
    assert result.exit_code == 0, result.output  # no OPENAI_API_KEY needed: nothing is judged
    assert read_table(tmp_path / "v.jsonl", VettingScores)["kept"].all()
    assert cache.is_file() and json.loads((tmp_path / "m.json").read_text())["judge"]["calls"] == 0


def test_vetting_with_too_few_pairs_fails_clearly(pipeline, tmp_path):
    tmp, _, out = pipeline
    params = make_params(tmp_path, tmp, **{"vetting.min_pairs": 13})
    result = invoke(*vet_args(out, params, tmp_path / "v.jsonl", out / "cache/vet.jsonl", tmp_path / "m.json"))
    _fails(result, "behavior/refusal: only", "pairs pass vetting (need >= 13)", "vetting.enabled: false")
    assert not (tmp_path / "v.jsonl").exists()


def test_steering_outputs_are_complete_and_valid(pipeline):
    tmp, params, out = pipeline
    steering = out / "steering"
    rows = read_table(steering / "responses.jsonl", SteeringResponses)
    curve = read_table(steering / "curve.csv", SteeringCurve)
    assert len(rows) == 3 * (1 + 2) and len(curve) == 3  # (baseline + 2 search steps) x 3 questions
    assert set(rows["layers"]) == {"1"} and set(rows["kind"]) == {"baseline", "search"}
    baseline = rows[rows["kind"] == "baseline"]
    assert (baseline["coefficient"] == 0).all()
    search = curve[curve["kind"] == "search"].sort_values("step")
    first, second = search["coefficient"].tolist()
    assert search["ratio"].iloc[0] == pytest.approx(0.7)  # start_ratio
    grew = search["coherence_mean"].iloc[0] >= 70
    assert second == pytest.approx(first * (1.3 if grew else 0.85))
    best = json.loads((steering / "best.json").read_text())
    metrics = json.loads((steering / "metrics.json").read_text())
    assert best["layers"] == [1] and best["method"] == "probe" and best["position"] == "response[:5]"
    assert metrics["best_coefficient"] == pytest.approx(best["coefficient"], abs=1e-3)
    assert metrics["baseline_trait"] == pytest.approx(baseline["trait_score"].mean(), abs=1e-3)
    assert metrics["delta"] == pytest.approx(metrics["best_trait"] - metrics["baseline_trait"], abs=2e-3)
    judged = metrics["judge"]["calls"] + metrics["judge"]["cache_hits"]
    assert judged == len(rows) * 3  # trait, grammar, relevance per response


def test_steering_rerun_makes_no_judge_calls(pipeline, tmp_path):
    """What a fresh machine sees after `dvc pull`: the same cache file, so nothing is re-judged."""
    tmp, params, out = pipeline
    cache = tmp_path / "pulled-cache.jsonl"
    cache.write_bytes((out / "cache/steer.jsonl").read_bytes())
    result = invoke(*steer_args(out, params, tmp_path / "again", cache=cache))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "again/metrics.json").read_text())
    assert metrics["judge"]["calls"] == 0 and metrics["judge"]["cache_hits"] > 0
    assert (tmp_path / "again/responses.jsonl").read_bytes() == (out / "steering/responses.jsonl").read_bytes()


def test_steering_layer_choices(pipeline, tmp_path):
    tmp, _, out = pipeline
    evaluation = read_table(out / "evaluation.csv", VectorEvaluation)
    probe = evaluation[(evaluation["site"] == "residual") & (evaluation["method"] == "probe")]
    for layer, expected in (("best", None), ([0, 2], [0, 2]), (-1, [2])):
        params = make_params(tmp_path, tmp, layer=layer, **{"steering.search_steps": 1})
        result = invoke(*steer_args(out, params, tmp_path / str(layer), cache=tmp_path / "c.jsonl"))
        assert result.exit_code == 0, result.output
        best = json.loads((tmp_path / str(layer) / "best.json").read_text())
        if expected is None:  # best = a layer of top held-out accuracy (ties broken by |d|)
            assert len(best["layers"]) == 1
            assert probe.set_index("layer").loc[best["layers"][0], "val_accuracy"] == probe["val_accuracy"].max()
        else:
            assert best["layers"] == expected


def test_steering_fixed_grid_and_negative_direction(pipeline, tmp_path):
    tmp, _, out = pipeline
    questions = tmp_path / "steering.json"
    questions.write_text(json.dumps({"questions": ["Tell me a joke.", "What is rain?"], "direction": "negative"}))
    params = make_params(tmp_path, tmp, **{"steering.coefficients": [-8.0, 4.0, 12.0]})
    result = invoke(*steer_args(out, params, tmp_path / "grid", cache=tmp_path / "c.jsonl", questions=questions))
    assert result.exit_code == 0, result.output
    curve = read_table(tmp_path / "grid/curve.csv", SteeringCurve)
    assert sorted(curve["coefficient"]) == [-8.0, 0.0, 4.0, 12.0] and set(curve["kind"]) == {"baseline", "grid"}
    best = json.loads((tmp_path / "grid/best.json").read_text())
    assert best["direction"] == "negative"
    grid = curve[curve["kind"] == "grid"]
    valid = grid[grid["coherence_mean"] >= 70]
    if len(valid):  # negative traits minimise the trait score among coherent steps
        assert best["trait_mean"] == pytest.approx(valid["trait_mean"].min())


def test_steering_sweep_runs_both_signs_beside_the_search_and_is_never_the_best(pipeline, tmp_path):
    tmp, _, out = pipeline
    params = make_params(tmp_path, tmp, **{"steering.sweep_ratios": [0.5, -0.5, 0.0], "steering.search_steps": 1})
    result = invoke(*steer_args(out, params, tmp_path / "sweep", cache=tmp_path / "c.jsonl"))
    assert result.exit_code == 0, result.output
    curve = read_table(tmp_path / "sweep/curve.csv", SteeringCurve)
    best = json.loads((tmp_path / "sweep/best.json").read_text())
    metrics = json.loads((tmp_path / "sweep/metrics.json").read_text())
    sweep = curve[curve["kind"] == "sweep"].sort_values("ratio")
    assert sweep["ratio"].tolist() == [-0.5, 0.5]  # ratio 0 is the baseline, not run twice
    assert sweep["coefficient"].tolist() == pytest.approx([-0.5 * best["activation_norm"], 0.5 * best["activation_norm"]])
    assert best["coefficient"] == pytest.approx(curve.loc[curve["kind"] == "search", "coefficient"].iloc[0])
    assert set(metrics["sweep"]) == {"-0.5", "+0", "+0.5"}
    means = [metrics["sweep"][k]["trait"] for k in ("-0.5", "+0", "+0.5")]
    assert metrics["sweep"]["+0"]["trait"] == metrics["baseline_trait"]
    assert metrics["sweep_monotonic"] == (means[0] <= means[1] <= means[2])


SWEEP = {"sweep.layers": [0, 2], "sweep.windows": [[0, 1]], "sweep.ratios": [-1.0, 1.0], "sweep.subset": 2,
         "sweep.max_new_tokens": 6, "sweep.side_effect_prompts": 3, "sweep.batch_size": 10}


def sweep_args(out: Path, params: Path, dest: Path, cache: Path) -> tuple:
    trait = REPO / "datasets/traits/behavior/refusal"
    return ("steering-sweep", "--trait", "behavior/refusal", "--questions", trait / "steering.json",
            "--definition", trait / "definition.txt", "--neutral-prompts", REPO / "datasets/inference/everyday_questions.json",
            "--vectors", out / "vectors", "--judge-cache", cache, "--results", dest / "results.csv",
            "--responses", dest / "responses.jsonl", "--best-layers", dest / "best_layers.json",
            "--metrics", dest / "metrics.json", "--plot", dest / "plot.csv", "--params", params)


@pytest.fixture(scope="module")
def swept(pipeline, tmp_path_factory):
    """The sweep stage once on the tiny models with the local LLM judge (it asks relevance too)."""
    tmp, _, out = pipeline
    dest = tmp_path_factory.mktemp("sweep")
    params = make_params(dest, tmp, **SWEEP)
    result = invoke(*sweep_args(out, params, dest, dest / "cache.jsonl"))
    assert result.exit_code == 0, result.output
    return dest, params, result.output


def test_sweep_writes_the_long_table_every_answer_and_its_costs(swept):
    dest, params, output = swept
    results = read_table(dest / "results.csv", SweepResults)
    answers = read_table(dest / "responses.jsonl", SweepResponses)
    n_configs, n_questions = 2 * (2 + 1) * 2, 2  # methods x (layers 0, 2 + window 0-1) x ratios
    assert len(results) == n_configs and len(answers) == (n_configs + 1) * n_questions
    assert set(results["layers"]) == {"0", "2", "0-1"} and set(results["method"]) == {"probe", "random_baseline"}
    assert (results["side_effect"] > 0).all() and results["relevance_mean"].notna().all()  # the local judge asks it
    assert results["composite"].between(0, 1).all()
    assert (results["delta"] == results["trait_mean"] - results["baseline_trait_mean"]).all()
    assert len(read_table(dest / "plot.csv", SweepPlot)) == n_configs
    metrics = json.loads((dest / "metrics.json").read_text())
    judged = (n_configs + 1) * n_questions * 3  # trait, grammar, relevance per answer
    assert metrics["estimate"]["judge_requests"] == judged
    # each distinct request is sent once: trait and relevance per (question, answer), grammar per answer
    distinct = 2 * len(answers.drop_duplicates(["question", "response"])) + answers["response"].nunique()
    assert metrics["judge"]["calls"] == distinct and metrics["judge"]["cache_hits"] == 0
    assert metrics["generations"] == (n_configs + 1) * n_questions and metrics["generate_calls"] == 3  # 24 rows, batch 10
    assert metrics["estimate"]["cost_usd"] > 0 and metrics["estimate"]["prompt_tokens"] > 100 * judged
    # what it will make is printed before anything runs (the model loads after it)
    announced = output.splitlines()[0]
    assert f"{n_configs} configurations" in announced and f"{(n_configs + 1) * n_questions} generations" in announced
    assert f"up to {judged} judge requests" in announced and "$" in announced and "judge.price_input_per_million" in announced
    assert output.index("generate calls") > output.index("judge requests")


def test_sweep_rerun_makes_no_judge_calls_and_the_same_tables(swept, pipeline, tmp_path):
    dest, params, _ = swept
    _, _, out = pipeline
    cache = tmp_path / "pulled-cache.jsonl"
    cache.write_bytes((dest / "cache.jsonl").read_bytes())  # what `dvc pull` restores
    result = invoke(*sweep_args(out, params, tmp_path, cache))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["judge"]["calls"] == 0 and metrics["judge"]["cache_hits"] == metrics["estimate"]["judge_requests"]
    for name in ("results.csv", "responses.jsonl", "best_layers.json", "plot.csv"):
        assert (tmp_path / name).read_bytes() == (dest / name).read_bytes(), name


def test_layer_best_can_come_from_the_sweep(pipeline, tmp_path):
    tmp, _, out = pipeline
    params = make_params(tmp_path, tmp, layer="best", **SWEEP, **{"steering.min_coherence": 0,
                                                                 "steering.best_from": "sweep",
                                                                 "steering.search_steps": 1})
    result = invoke(*sweep_args(out, params, tmp_path / "sweep", tmp_path / "sweep-cache.jsonl"))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "sweep/best_layers.json").read_text())
    results = read_table(tmp_path / "sweep/results.csv", SweepResults)
    singles = results[(results["method"] == "probe") & (results["kind"] == "layer")]
    best = singles.sort_values(["effect", "ratio"], ascending=[False, True], key=lambda c: c if c.name == "effect"
                               else c.abs()).iloc[0]  # every cell is coherent at min_coherence 0
    assert record["methods"][0] == {"method": "probe", "layer": int(best["first_layer"])}
    steered = invoke(*steer_args(out, params, tmp_path / "steer", cache=tmp_path / "c.jsonl"),
                     "--sweep-best", tmp_path / "sweep/best_layers.json")
    assert steered.exit_code == 0, steered.output
    assert json.loads((tmp_path / "steer/best.json").read_text())["layers"] == [int(best["first_layer"])]
    # without the record, or with a method the sweep did not run: one-line errors naming the param
    _fails(invoke(*steer_args(out, params, tmp_path / "x", cache=tmp_path / "c.jsonl")), "steering.best_from",
           "--sweep-best")
    other = make_params(tmp_path, tmp, layer="best", **SWEEP, **{"steering.best_from": "sweep",
                                                                "steering.method": "mean_diff"})
    _fails(invoke(*steer_args(out, other, tmp_path / "x", cache=tmp_path / "c.jsonl"), "--sweep-best",
                  tmp_path / "sweep/best_layers.json"), "no method 'mean_diff'", "sweep.methods")


def test_sweep_bad_params_are_one_line_errors(pipeline, tmp_path):
    tmp, _, out = pipeline
    for override, fragments in (
        ({"sweep.windows": [[2, 1]]}, ("sweep.windows[0]", "needs last > first")),
        ({"sweep.side_effect_prompts": 99}, ("sweep.side_effect_prompts: 99", "lower it")),
        ({"sweep.methods": ["probe", "svm"]}, ("no vectors for site 'residual' method 'svm'",)),
        ({"sweep.layers": [7]}, ("sweep.layers", "layer 7 is out of range")),
    ):
        params = make_params(tmp_path, tmp, **{**SWEEP, **override})
        _fails(invoke(*sweep_args(out, params, tmp_path / "bad", tmp_path / "c.jsonl")), *fragments)
    assert not (tmp_path / "bad").exists()


def test_steering_bad_inputs(pipeline, tmp_path, monkeypatch):
    tmp, _, out = pipeline
    dest = tmp_path / "bad"
    _fails(invoke(*steer_args(out, make_params(tmp_path, tmp, layer=7), dest, cache=tmp_path / "c.jsonl")),
           "layer 7 is out of range")
    _fails(invoke(*steer_args(out, make_params(tmp_path, tmp, layer="top"), dest, cache=tmp_path / "c.jsonl")),
           "layer: 'top' is not understood")
    _fails(invoke(*steer_args(out, make_params(tmp_path, tmp, **{"steering.method": "svm"}), dest)),
           "no vectors for site 'residual' method 'svm'")
    questions = tmp_path / "steering.json"
    questions.write_text(json.dumps({"questions": ["Hi?"], "eval_prompt": "Rate {question} only"}))
    _fails(invoke(*steer_args(out, make_params(tmp_path, tmp), dest, questions=questions)), "eval_prompt")
    # the OpenAI backend without a key fails before any model loads (here: a model whose weights went
    # missing after it was resolved, so loading it would fail)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    shutil.copytree(tmp / "models/instruct", tmp_path / "weightless")
    params = make_params(tmp_path, tmp, **{"judge.backend": "openai", "models.toy-instruct.path": str(tmp_path / "weightless")})
    resolved_folder(params)
    (tmp_path / "weightless/model.safetensors").unlink()
    _fails(invoke(*steer_args(out, params, dest)), "OPENAI_API_KEY")
    assert not dest.exists()


# --- the OpenAI backend through a stage, against the local stub server ---------------------------


def openai_params(tmp_path: Path, models_root: Path, base_url: str, **overrides) -> Path:
    # the stub's scores come from a hash of the request, so how many pairs pass is luck: these tests
    # are about faults and the cache, so any number of kept pairs will do
    return make_params(tmp_path, models_root, **{
        "judge.backend": "openai", "judge.base_url": base_url, "judge.timeout_s": 0.5, "judge.max_retries": 3,
        "judge.max_concurrency": 4, "vetting.min_pairs": 1, **overrides})


def test_vetting_with_openai_survives_every_fault(pipeline, tmp_path, monkeypatch):
    from tests.openai_stub import serve_stub

    tmp, _, out = pipeline
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-dummy")
    faults = ["rate_limit", "server_error", "hang", "no_logprobs", "low_mass"]
    with serve_stub(faults=faults, retry_after="1", hang_s=1.5) as stub:
        params = openai_params(tmp_path, tmp, stub.base_url)
        started = time.monotonic()
        result = invoke(*vet_args(out, params, tmp_path / "v.jsonl", tmp_path / "cache.jsonl", tmp_path / "m.json"))
        elapsed = time.monotonic() - started
        received = stub.requests
    assert result.exit_code == 0, result.output
    judge = json.loads((tmp_path / "m.json").read_text())["judge"]
    # 429, 500 and the hang are retried and then answered; no_logprobs and low_mass become None
    assert judge["calls"] == 24 and judge["retries"] == 3 and received == 24 + 3
    assert judge["failures"] == 1 and judge["none_scores"] == 1
    assert "estimated_cost_usd" in judge and judge["prompt_tokens"] > 0
    scores = read_table(tmp_path / "v.jsonl", VettingScores)["score"]
    assert int(scores.isna().sum()) == 2
    assert elapsed >= 1.0  # Retry-After: 1 was honoured
    # the failure (no logprobs) is not cached: the re-run asks for exactly that one again
    cached = len((tmp_path / "cache.jsonl").read_text().splitlines())
    assert cached == 23
    with serve_stub() as stub:
        params = openai_params(tmp_path, tmp, stub.base_url)
        result = invoke(*vet_args(out, params, tmp_path / "v2.jsonl", tmp_path / "cache.jsonl", tmp_path / "m2.json"))
        assert result.exit_code == 0 and stub.requests == 1


def test_a_killed_stage_keeps_its_judge_answers(pipeline, tmp_path):
    import signal
    import subprocess
    import sys

    from tests.openai_stub import serve_stub

    tmp, _, out = pipeline
    cache = tmp_path / "cache.jsonl"
    with serve_stub(latency_s=0.15) as stub:
        params = openai_params(tmp_path, tmp, stub.base_url, **{"judge.max_concurrency": 1})
        folder, _ = resolved_folder(params)
        args = with_records([str(a) for a in vet_args(out, params, tmp_path / "v.jsonl", cache, tmp_path / "m.json")],
                            folder)
        env = {**__import__("os").environ, "OPENAI_API_KEY": "sk-test-dummy"}
        proc = subprocess.Popen([sys.executable, "-m", "stages", *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline and not (cache.exists() and len(cache.read_text().splitlines()) >= 5):
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        kept = len(cache.read_text().splitlines())
        assert 5 <= kept < 24 and not (tmp_path / "v.jsonl").exists()  # killed mid-run: no table yet
        before = stub.requests
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OPENAI_API_KEY", "sk-test-dummy")
            result = invoke(*vet_args(out, params, tmp_path / "v.jsonl", cache, tmp_path / "m.json"))
        assert result.exit_code == 0, result.output
        assert stub.requests - before == 24 - kept
    judge = json.loads((tmp_path / "m.json").read_text())["judge"]
    assert judge["calls"] == 24 - kept and judge["cache_hits"] == kept
