"""Params read after ``dvc exp run -S`` keep the values the user wrote.

DVC rewrites params.yaml in YAML 1.2 style and drops quotes 1.2 does not need (``"yes"`` -> ``yes``,
``"1:3"`` -> ``1:3``, ``1e-8`` -> ``1e-08``). PyYAML's YAML 1.1 schema read those as True, as the
base-60 integer 63 and as a string; params are read with YAML 1.2 core-schema scalars instead.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.conftest import REPO
from tests.pipeline.test_stages import build_args, invoke, make_params, write_trait
from tests.stage_runs import resolved_folder
from tests.toy_project import run
from trait_interp.core.config import load_yaml

# What DVC 3 wrote back for a params file holding group_a: "yes", group_b: "no", layers: "1:3",
# tol: 1.0e-7 after `dvc exp run -S other=2 -S grp.group_b=no -S grp.tol=1e-8` (captured verbatim)
DVC_WRITTEN = """\
# comment
traits:
- a
grp:
  group_a: yes
  group_b: no
  layers: 1:3
  tol: 1e-08
other: 2
"""


def test_the_text_dvc_writes_reads_back_as_written(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(DVC_WRITTEN)
    assert load_yaml(path) == {"traits": ["a"], "grp": {"group_a": "yes", "group_b": "no", "layers": "1:3",
                                                        "tol": 1e-08}, "other": 2}


@pytest.mark.parametrize(("text", "value"), [
    ("on", "on"), ("off", "off"), ("y", "y"), ("N", "N"), ("Yes", "Yes"), ("2024-01-01", "2024-01-01"),
    ("1_000", "1_000"), ("010", 10), ("0o17", 15), ("0x1f", 31), ("true", True), ("False", False),
    ("TRUE", True), ("null", None), ("~", None), ("", None), ("1e-08", 1e-08), ("-2.5", -2.5), (".5", 0.5),
    ("12", 12), ("-3", -3), (".inf", float("inf")), ("=", "="), ("'yes'", "yes"),
])
def test_yaml_12_core_scalars(tmp_path, text, value):
    path = tmp_path / "params.yaml"
    path.write_text(f"key: {text}\n")
    got = load_yaml(path)["key"]
    assert got == value and type(got) is type(value)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("yaml12")
    params = make_params(tmp, **{"extraction.sites": ["residual"], "vectors.methods": ["gradient"],
                                 "extraction.layers": "0:1"})
    assert invoke(*build_args(params, tmp / "models", tmp / "training")).exit_code == 0
    pos, neg = write_trait(tmp, n=6)
    responses = tmp / "responses.jsonl"
    result = invoke("generate-responses", "--trait", "behavior/refusal", "--positive", pos, "--negative", neg,
                    "--out", responses, "--params", params)
    assert result.exit_code == 0, result.output
    return params, responses


SEEN = ("from trait_interp.core.config import read_params; import json, sys; "
        "key = 'analyses.judged_comparisons.refused_vs_complied'; "
        "json.dump(read_params('params.yaml', [key])[key], open('seen.json', 'w'))")


def test_dvc_exp_run_set_values_reach_the_stages_unchanged(toy, tmp_path):
    """A real `dvc exp run -S` round trip: DVC writes the unquoted text, the stage commands read it."""
    params, responses = toy
    root = tmp_path / "repo"
    root.mkdir()
    (root / "params.yaml").write_text(params.read_text())
    stages = {
        "capture": {"cmd": f"python -m stages capture-activations --responses {responses} --out acts --params params.yaml "
                           f"--model {resolved_folder(params)[0] / 'toy-base.json'}",
                    "params": ["extraction"], "outs": ["acts"]},
        "vectors": {"cmd": "python -m stages extract-vectors --activations acts --out vecs --params params.yaml",
                    "deps": ["acts"], "params": ["vectors"], "outs": ["vecs"]},
        "seen": {"cmd": f'python -c "{SEEN}"', "params": ["analyses.judged_comparisons"], "outs": ["seen.json"]},
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "init"], root)
    run(["dvc", "exp", "run", "-S", "extraction.layers=1:3", "-S", "vectors.settings.gradient_tolerance=1e-8",
         "-S", "analyses.judged_comparisons.refused_vs_complied.group_a=yes"], root, env=env)

    written = (root / "params.yaml").read_text()
    for line in ("layers: 1:3", "gradient_tolerance: 1e-08", "group_a: yes", "group_b: no"):
        assert line in written, (line, written)  # DVC's own text: unquoted
    assert json.loads((root / "acts/meta.json").read_text())["layers"] == [1, 2]
    sidecar = json.loads((root / "vecs/residual/gradient.json").read_text())
    assert sidecar["method_params"]["gradient_tolerance"] == 1e-08
    assert json.loads((root / "seen.json").read_text())["group_a"] == "yes"
    assert json.loads((root / "seen.json").read_text())["group_b"] == "no"
