"""Smoke test of the stage commands on toy models in a temp dir, and their bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from schemas.evaluation import VectorEvaluation
from schemas.examples import Examples
from schemas.responses import Responses
from stages.cli import STAGES, app
from tests.conftest import CORPUS, REPO
from trait_interp.tables import read_table

runner = CliRunner()


def make_params(tmp: Path, models_root: Path | None = None, **overrides) -> Path:
    """A params file in ``tmp`` for toy models under ``models_root`` (default ``tmp``)."""
    root = models_root or tmp
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {
        "toy-base": {"path": str(root / "models/base"), "dtype": "float32", "device": "cpu"},
        "toy-instruct": {"path": str(root / "models/instruct"), "dtype": "float32", "device": "cpu"},
    }
    params["toy_models"].update(vocab_size=400, hidden_size=32, intermediate_size=48, num_layers=3)
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


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


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
        ("build-toy-models", "--corpus", CORPUS, "--out-base", tmp / "models/base",
         "--out-instruct", tmp / "models/instruct", "--params", params),
        ("generate-responses", "--trait", "behavior/refusal", "--positive", pos, "--negative", neg,
         "--out", out / "responses.jsonl", "--params", params),
        ("capture-activations", "--responses", out / "responses.jsonl", "--out", out / "activations", "--params", params),
        ("extract-vectors", "--activations", out / "activations", "--out", out / "vectors", "--params", params),
        ("evaluate-vectors", "--activations", out / "activations", "--vectors", out / "vectors",
         "--table", out / "evaluation.csv", "--metrics", out / "metrics.json",
         "--plot-accuracy", out / "plots/acc.csv", "--plot-effect", out / "plots/d.csv"),
    ]
    for step in steps:
        result = invoke(*step)
        assert result.exit_code == 0, (step[0], result.output)
    return tmp, params, out


def test_every_stage_is_listed_with_help():
    result = invoke("--help")
    assert result.exit_code == 0
    for name, module in STAGES.items():
        assert name in result.output
        assert module.main.__doc__
        sub = invoke(name, "--help")
        assert sub.exit_code == 0 and "--params" in sub.output or name == "evaluate-vectors"


def test_outputs_are_complete_and_valid(pipeline):
    tmp, params, out = pipeline
    responses = read_table(out / "responses.jsonl", Responses)
    assert len(responses) == 24 and set(responses["polarity"]) == {"positive", "negative"}
    assert (responses["response_ids"].map(len) <= 5).all()  # response[:5] -> 5 new tokens, not 16
    assert not responses["chat"].any()  # base model: completion mode
    examples = read_table(out / "activations/examples.csv", Examples)
    # pair-preserving: both sides of a pair are in the same split
    assert (examples.groupby("pair_index")["split"].nunique() == 1).all()
    acts = load_file(str(out / "activations/activations.safetensors"))
    assert acts["residual"].shape == (24, 3, 32) and acts["k_proj"].shape[0] == 24
    table = read_table(out / "evaluation.csv", VectorEvaluation)
    methods = set(yaml.safe_load(params.read_text())["vectors"]["methods"])
    assert set(table["method"]) == methods and set(table["layer"]) == {0, 1, 2}
    sidecar = json.loads((out / "vectors/residual/probe.json").read_text())
    assert sidecar["position"] == "response[:5]" and sidecar["layers"] == [0, 1, 2]
    assert sidecar["n_train"] + sidecar["n_val"] == 24 and sidecar["dataset_hash"]
    vectors = load_file(str(out / "vectors/residual/probe.safetensors"))["vectors"]
    assert vectors.shape == (3, 32) and ((vectors.norm(dim=1) - 1).abs() < 1e-5).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["method"] != "random_baseline" and "probe" in metrics["residual"]
    plot = pd.read_csv(out / "plots/acc.csv")
    assert list(plot["layer"]) == [0, 1, 2] and methods <= set(plot.columns)


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
    from trait_interp.datasets import load_prompt_set, load_steering_questions, trait_dir
    from trait_interp.errors import UserInputError

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
    params = make_params(tmp_path)
    for run in ("a", "b"):
        result = invoke("build-toy-models", "--corpus", CORPUS, "--out-base", tmp_path / run / "base",
                        "--out-instruct", tmp_path / run / "instruct", "--params", params)
        assert result.exit_code == 0, result.output
    weights = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("model.safetensors")}
    assert weights["a/base/model.safetensors"] == weights["b/base/model.safetensors"]
    assert weights["a/instruct/model.safetensors"] == weights["b/instruct/model.safetensors"]
    assert weights["a/base/model.safetensors"] != weights["a/instruct/model.safetensors"]


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
