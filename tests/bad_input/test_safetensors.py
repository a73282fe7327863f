"""A truncated or corrupt .safetensors file read by a stage is one line naming the file and the fix.

Before, ``SafetensorError: Error while deserializing header`` came as a raw traceback naming no file.
Each test damages one file of a copied output (as an interrupted copy or pull would) and runs the
stage that reads it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bad_input_toy import toy_models
from tests.conftest import REPO
from tests.pipeline.test_stages import (
    _fails,
    invoke,
    make_params,
    steer_args,
    write_trait,
)
from trait_interp.core.errors import UserInputError
from trait_interp.monitoring.raw_capture import load_token_activations

SMALL = {"extraction.sites": ["residual"], "vectors.methods": ["probe", "mean_diff"]}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("safetensors")
    params = toy_models(tmp, **SMALL)
    pos, neg = write_trait(tmp, n=8)
    out = tmp / "exp"
    prompt_set = tmp / "set.json"
    prompts = json.loads((REPO / "datasets/inference/mixed_requests.json").read_text())
    prompt_set.write_text(json.dumps({**prompts, "prompts": prompts["prompts"][:2]}))
    steps = [
        ("generate-responses", "--trait", "behavior/refusal", "--positive", pos, "--negative", neg,
         "--out", out / "responses.jsonl", "--params", params),
        ("capture-activations", "--responses", out / "responses.jsonl", "--out", out / "activations", "--params", params),
        ("extract-vectors", "--activations", out / "activations", "--out", out / "vectors", "--params", params),
        ("evaluate-vectors", "--activations", out / "activations", "--vectors", out / "vectors",
         "--table", out / "evaluation.csv", "--metrics", out / "metrics.json",
         "--plot-accuracy", out / "acc.csv", "--plot-effect", out / "d.csv"),
        ("generate-inference", "--model", "toy-instruct", "--prompt-set", prompt_set, "--out", out / "inference.jsonl",
         "--params", params),
        ("capture-raw", "--model", "toy-instruct", "--responses", out / "inference.jsonl", "--out", out / "raw",
         "--params", params),
    ]
    for step in steps:
        result = invoke(*step)
        assert result.exit_code == 0, (step[0], result.output)
    return tmp, params, out


def damaged_copy(source: Path, dest: Path, file: str, how: str = "truncate") -> Path:
    """A copy of the output folder ``source`` at ``dest`` with ``file`` in it cut in half (or emptied)."""
    shutil.copytree(source, dest)
    target = dest / file
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2] if how == "truncate" else b"")
    return dest


@pytest.mark.parametrize("how", ["truncate", "empty"])
def test_corrupt_activations_name_the_file_and_the_fix(toy, tmp_path, how):
    _, params, out = toy
    acts = damaged_copy(out / "activations", tmp_path / "activations", "activations.safetensors", how)
    result = invoke("extract-vectors", "--activations", acts, "--out", tmp_path / "vectors", "--params", params)
    _fails(result, f"{acts / 'activations.safetensors'}: corrupt or truncated safetensors file",
           f"restore it with `dvc checkout {acts}` or re-run capture_activations")
    assert not (tmp_path / "vectors").exists()
    result = invoke("evaluate-vectors", "--activations", acts, "--vectors", out / "vectors",
                    "--table", tmp_path / "e.csv", "--metrics", tmp_path / "m.json",
                    "--plot-accuracy", tmp_path / "a.csv", "--plot-effect", tmp_path / "d.csv")
    _fails(result, f"{acts / 'activations.safetensors'}: corrupt or truncated", "capture_activations")
    assert not (tmp_path / "e.csv").exists()


def test_the_cli_prints_one_line_and_no_traceback(toy, tmp_path):
    _, params, out = toy
    acts = damaged_copy(out / "activations", tmp_path / "activations", "activations.safetensors")
    done = subprocess.run([sys.executable, "-m", "stages", "extract-vectors", "--activations", str(acts),
                           "--out", str(tmp_path / "vectors"), "--params", str(params)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "SafetensorError" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(acts / "activations.safetensors") in errors[0] and "dvc checkout" in errors[0]


def test_corrupt_vectors_name_the_file_and_the_fix(toy, tmp_path):
    tmp, params, out = toy
    vectors = damaged_copy(out / "vectors", tmp_path / "vectors", "residual/probe.safetensors")
    result = invoke("evaluate-vectors", "--activations", out / "activations", "--vectors", vectors,
                    "--table", tmp_path / "e.csv", "--metrics", tmp_path / "m.json",
                    "--plot-accuracy", tmp_path / "a.csv", "--plot-effect", tmp_path / "d.csv")
    _fails(result, f"{vectors / 'residual/probe.safetensors'}: corrupt or truncated safetensors file",
           f"`dvc checkout {vectors}` or re-run extract_vectors")
    # steering reads the same file
    shutil.copy(out / "evaluation.csv", tmp_path / "evaluation.csv")
    steer_params = make_params(tmp_path, tmp, **SMALL)
    result = invoke(*steer_args(tmp_path, steer_params, tmp_path / "steer", cache=tmp_path / "c.jsonl"))
    _fails(result, f"{vectors / 'residual/probe.safetensors'}: corrupt or truncated", "extract_vectors")
    assert not (tmp_path / "steer").exists()


def test_a_corrupt_vector_sidecar_names_the_file(toy, tmp_path):
    _, _, out = toy
    vectors = damaged_copy(out / "vectors", tmp_path / "vectors", "residual/probe.json")
    result = invoke("evaluate-vectors", "--activations", out / "activations", "--vectors", vectors,
                    "--table", tmp_path / "e.csv", "--metrics", tmp_path / "m.json",
                    "--plot-accuracy", tmp_path / "a.csv", "--plot-effect", tmp_path / "d.csv")
    _fails(result, f"{vectors / 'residual/probe.json'}: corrupt vector sidecar", f"`dvc checkout {vectors}`")


def test_a_corrupt_raw_file_names_the_file(toy, tmp_path):
    _, _, out = toy
    first = sorted((out / "raw").glob("*.safetensors"))[0]
    activations, layers = load_token_activations(first)
    assert activations.ndim == 3 and layers == (0, 1, 2)
    raw = damaged_copy(out / "raw", tmp_path / "raw", first.name)
    with pytest.raises(UserInputError, match=r"corrupt or truncated safetensors file .*re-run capture_raw") as err:
        load_token_activations(raw / first.name)
    assert str(raw / first.name) in str(err.value) and f"dvc checkout {raw}" in str(err.value)


def test_corrupt_model_weights_name_the_model_folder(toy, tmp_path):
    tmp, _, out = toy
    models = tmp_path / "models"
    damaged_copy(tmp / "models/base", models / "base", "model.safetensors")
    params = make_params(tmp_path, tmp, **{"models.toy-base.path": str(models / "base")})
    pos, neg = write_trait(tmp_path, n=2)
    result = invoke("generate-responses", "--trait", "behavior/refusal", "--positive", pos, "--negative", neg,
                    "--out", tmp_path / "r.jsonl", "--params", params)
    _fails(result, f"weights file of '{models / 'base'}' is corrupt or truncated", f"`dvc checkout {models / 'base'}`")
    assert not (tmp_path / "r.jsonl").exists()
