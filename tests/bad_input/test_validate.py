"""``trait-interp validate``: one cheap check of a whole experiment, every problem in one run.

A generated experiment of 176 small traits (15 pairs each, like most real collections) with
models that are only a config.json (no weights): the clean one passes in seconds and writes the
marker; with planted problems every one is reported, one line each, exit 1, and no marker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stages.cli import app
from tests.conftest import REPO

N_TRAITS = 176
N_PAIRS = 15
REAL = ("behavior/refusal", "tone/formality", "emotion/optimism")  # the analyses in params.yaml name these
N_LAYERS = 4


def write_model(folder: Path) -> str:
    """A model folder holding only config.json: validate reads the layer count there, never weights."""
    folder.mkdir(parents=True)
    config = {"model_type": "llama", "num_hidden_layers": N_LAYERS, "hidden_size": 64, "max_position_embeddings": 512}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def write_trait(root: Path, name: str, n_pos: int = N_PAIRS, n_neg: int = N_PAIRS) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "positive.txt").write_text("".join(f"{name} positive scenario {i}\n" for i in range(n_pos)))
    (folder / "negative.txt").write_text("".join(f"{name} negative scenario {i}\n" for i in range(n_neg)))
    (folder / "definition.txt").write_text(f"How much the answer shows {name}.\n")
    (folder / "steering.json").write_text(json.dumps({"questions": [f"Question {i}?" for i in range(5)]}))
    return folder


def experiment(tmp: Path) -> tuple[Path, dict]:
    """176 traits, the real prompt sets, config-only models; returns (root, params dict)."""
    traits_root, sets_root = tmp / "traits", tmp / "inference"
    names = [*REAL, *(f"generated{i // 20}/trait{i:03d}" for i in range(N_TRAITS - len(REAL)))]
    for name in names:
        write_trait(traits_root, name)
    shutil.copytree(REPO / "datasets/inference", sets_root)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {
        "base": {"path": write_model(tmp / "models/base"), "dtype": "float32", "device": "cpu"},
        "instruct": {"path": write_model(tmp / "models/instruct"), "dtype": "float32", "device": "cpu"},
    }
    params.update(extraction_model="base", application_model="instruct", diff_model="instruct",
                  monitor_models=["instruct"], traits=names)
    params["judge"].update(backend="local", relevance_check=True)
    params["judge"]["local_model"]["path"] = params["models"]["instruct"]["path"]
    return tmp, params


def validate(root: Path, params: dict, marker: Path):
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["validate", "--params", str(path), "--traits-root", str(root / "traits"),
                                      "--prompt-sets-root", str(root / "inference"), "--out", str(marker)])
    return result, time.perf_counter() - started


def test_a_clean_176_trait_experiment_passes(tmp_path):  # its time: benchmarks (validate_speed)
    root, params = experiment(tmp_path)
    marker = tmp_path / "out/validated"
    result, seconds = validate(root, params, marker)
    assert result.exit_code == 0, result.output
    assert marker.read_text() == "valid\n"
    assert f"valid: {N_TRAITS} traits, 2 prompt sets" in result.output
    # 15 pairs at val_fraction 0.2: 3 held-out pairs each, one note for all of them
    notes = [line for line in result.output.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and f"{N_TRAITS} trait(s) will have fewer than 5 held-out pairs" in notes[0]
    print(f"validate, {N_TRAITS} traits: {seconds:.2f} s in process")


def test_every_planted_problem_is_reported_in_one_run(tmp_path):
    root, params = experiment(tmp_path)
    traits = root / "traits"
    planted = {}  # fragment that must appear in exactly one error line -> what was planted

    params["traits"] = [*params["traits"], "behavior/nope", "generated0/trait005"]
    planted["traits: unknown trait 'behavior/nope'"] = "a trait with no folder"
    planted["traits lists generated0/trait005 more than once"] = "a repeated trait"
    uneven = traits / "generated1/trait020"
    (uneven / "negative.txt").write_text("".join(f"n {i}\n" for i in range(N_PAIRS - 1)))
    planted[f"{uneven / 'positive.txt'} has 15 scenarios but {uneven / 'negative.txt'} has 14"] = "unequal counts"
    empty = traits / "generated2/trait041"
    (empty / "negative.txt").write_text("\n\n")
    planted[f"{empty / 'negative.txt'}: no scenarios"] = "an empty scenario file"
    broken = traits / "generated3/trait062/steering.json"
    broken.write_text('{"questions": ["a",\n  ]')
    planted[f"{broken}:2:"] = "invalid steering JSON"
    (root / "inference/bad_set.json").write_text('{"name": "bad_set"}')
    params["prompt_sets"] = [*params["prompt_sets"], "bad_set"]
    planted['bad_set.json: no "prompts" list'] = "a prompt set without prompts"
    params["extraction"]["position"] = "response[3:1]"
    planted["extraction.position: position 'response[3:1]' selects no token"] = "an empty position"
    params["extraction"]["layers"] = [0, 9]
    planted["extraction.layers: layer 9 is out of range for a model with 4 layers"] = "an extraction layer"
    params["layer"] = 7
    planted["out of range for a model with 4 layers (use 0..3 or -4..-1) (steering on application_model 'instruct')"] = (
        "steering layer")
    params["monitoring"]["layer"] = [1, 8]
    planted["monitoring.layer: layer 8 is out of range for a model with 4 layers (use 0..3 or -4..-1) (monitoring on "
            "monitor_models 'instruct')"] = "monitor layer"
    params["steerng"] = {"subset": 3}
    planted["unknown top-level key 'steerng'; did you mean 'steering'?"] = "a misspelled section"
    params["vectors"]["settings"]["probe_cc"] = 2.0
    planted["vectors.settings: unknown key(s) probe_cc"] = "an unknown key"
    params["steering"]["site"] = "resid"
    planted["steering.site: unknown site 'resid'"] = "an unknown site"

    marker = tmp_path / "out/validated"
    marker.parent.mkdir()
    marker.write_text("valid\n")  # from an earlier, valid run: must not survive
    result, seconds = validate(root, params, marker)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    for fragment, what in planted.items():
        hits = [line for line in errors if fragment in line]
        assert len(hits) == 1, (what, fragment, errors)
    assert len(errors) == len(planted), errors  # nothing else, nothing twice
    assert f"{len(planted)} problem(s)" in result.output
    assert not marker.exists()
    assert sum("layer: layer 7 is out of range" in line for line in errors) == 1  # steering; monitoring has its own
    known = [line for line in errors if "unknown trait 'behavior/nope'" in line][0]
    assert "known traits under" in known and "behavior/refusal" in known and "generated8/trait172" in known
    print(f"validate with {len(planted)} planted problems: {seconds:.2f} s in process")


def test_the_command_line_reports_one_line_per_problem(tmp_path):
    root, params = experiment(tmp_path)
    params["extraction"]["sites"] = ["residual", "resid_post"]
    params["traits"] = [*params["traits"], "tone/none"]
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    marker = tmp_path / "validated"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "stages", "validate", "--params", str(path), "--traits-root",
                           str(root / "traits"), "--prompt-sets-root", str(root / "inference"), "--out", str(marker)],
                          cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "Traceback" not in done.stderr
    assert "extraction.sites: unknown site 'resid_post'" in errors[0] or "extraction.sites" in errors[1]
    assert not marker.exists()
    print(f"python -m stages validate (fresh process, imports included): {seconds:.1f} s")


@pytest.mark.parametrize("problem", ["lexicon", "vetting-off"])
def test_the_lexicon_judge_needs_words_only_while_vetting_judges(tmp_path, problem):
    """With the toy's lexicon judge a trait without planted words fails vetting (an error); with vetting off,
    extraction runs and a note says steering will need its words."""
    root, params = experiment(tmp_path)
    params["judge"].update(backend="lexicon", relevance_check=False, lexicon=str(REPO / "datasets/toy/lexicon.json"))
    params["traits"] = list(REAL) + ["generated0/trait000"]
    params["vetting"]["enabled"] = problem != "vetting-off"
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    result = CliRunner().invoke(app, ["validate", "--params", str(path), "--traits-root", str(root / "traits"),
                                      "--prompt-sets-root", str(root / "inference"), "--out", str(tmp_path / "m")])
    if problem == "lexicon":
        assert result.exit_code == 1
        assert "no lexicon for trait 'generated0/trait000'" in result.output and "vetting.enabled: false" in result.output
    else:
        assert result.exit_code == 0, result.output
        assert "note: " in result.output and "steering_eval judges with the lexicon too" in result.output


def test_the_project_params_are_valid(tmp_path):
    """The committed toy experiment passes (its models are built by the pipeline: toy_models.num_layers)."""
    result = CliRunner().invoke(app, ["validate", "--params", str(REPO / "params.yaml"), "--traits-root",
                                      str(REPO / "datasets/traits"), "--prompt-sets-root",
                                      str(REPO / "datasets/inference"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
