"""The per-trait phase runner (stages/for_each_trait.py): one stage over every trait, re-running only what changed.

The truth each run is held to is the per-trait command run directly, as dvc.yaml ran it before the
phases were one stage each: the runner's outputs must be those bytes, for every trait.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.bad_input_toy import toy_models
from tests.conftest import REPO
from tests.stage_runs import invoke, resolved_folder

TRAITS = ("behavior/refusal", "behavior/echo")
SMALL = {"extraction.sites": ["residual"], "vectors.methods": ["probe", "mean_diff"]}


def write_traits(root: Path) -> None:
    source = REPO / "datasets/traits/behavior/refusal"
    pos = source.joinpath("positive.txt").read_text().splitlines()
    neg = source.joinpath("negative.txt").read_text().splitlines()
    for k, trait in enumerate(TRAITS):
        folder = root / "traits" / trait
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "positive.txt").write_text("\n".join(pos[8 * k: 8 * k + 8]) + "\n")
        (folder / "negative.txt").write_text("\n".join(neg[8 * k: 8 * k + 8]) + "\n")
        shutil.copy(source / "definition.txt", folder / "definition.txt")


def phase_args(stage: str, record_of_model: Path) -> list[str]:
    """The runner's command line for one phase, as dvc.yaml writes it (paths relative to the project)."""
    per_trait = {
        "generate-responses": ["--trait", "{trait}", "--positive", "traits/{trait}/positive.txt",
                               "--negative", "traits/{trait}/negative.txt", "--model", str(record_of_model),
                               "--out", "out/responses/{trait}.jsonl"],
        "capture-activations": ["--responses", "out/responses/{trait}.jsonl", "--model", str(record_of_model),
                                "--out", "out/activations/{trait}"],
        "extract-vectors": ["--activations", "out/activations/{trait}", "--out", "out/vectors/{trait}"],
        "vet-responses": ["--trait", "{trait}", "--responses", "out/responses/{trait}.jsonl",
                          "--definition", "traits/{trait}/definition.txt", "--judge-cache", "cache/{trait}.jsonl",
                          "--judge-record", str(record_of_model.with_name("judge.json")),
                          "--out", "out/vetting/{trait}.jsonl", "--metrics", "metrics/vetting/{trait}.json"],
    }[stage]
    module = stage.replace("-", "_")
    return ["for-each-trait", stage, "--stage-inputs", f"stage_inputs/{module}.json",
            "--record", f"trait_runs/{module}.json", "--", *per_trait]


def run_phase(project: Path, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "stages", *args], cwd=project, env=environ,
                          capture_output=True, text=True, timeout=600)


def traits_run(done: subprocess.CompletedProcess) -> list[str]:
    return [line.split("'")[1].split("@", 1)[1] for line in done.stdout.splitlines() if line.startswith("Running trait")]


def files_of(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A project with two traits, every phase run once by the runner; and each trait run directly for truth."""
    tmp = tmp_path_factory.mktemp("for_each_trait")
    params = toy_models(tmp, **SMALL)
    project = tmp / "project"
    project.mkdir()
    write_traits(project)
    settings = yaml.safe_load(params.read_text())
    settings["traits"] = list(TRAITS)
    (project / "params.yaml").write_text(yaml.safe_dump(settings))
    records, resolved = resolved_folder(project / "params.yaml")
    assert resolved is None or resolved.exit_code == 0, resolved.output
    model = records / f"{settings['extraction_model']}.json"
    assert invoke("stage-inputs", "--out", project / "stage_inputs", "--params", project / "params.yaml").exit_code == 0
    first = {}
    for stage in ("generate-responses", "capture-activations", "extract-vectors"):
        done = run_phase(project, phase_args(stage, model))
        assert done.returncode == 0, done.stdout + done.stderr
        first[stage] = done
    truth = tmp / "truth"
    for trait in TRAITS:  # the per-trait commands themselves, one process (CliRunner) for all
        steps = [
            ("generate-responses", "--trait", trait, "--positive", project / "traits" / trait / "positive.txt",
             "--negative", project / "traits" / trait / "negative.txt", "--model", model,
             "--out", truth / trait / "responses.jsonl", "--params", project / "params.yaml"),
            ("capture-activations", "--responses", truth / trait / "responses.jsonl", "--model", model,
             "--out", truth / trait / "activations", "--params", project / "params.yaml"),
            ("extract-vectors", "--activations", truth / trait / "activations", "--out", truth / trait / "vectors",
             "--params", project / "params.yaml"),
        ]
        for step in steps:
            result = invoke(*step)
            assert result.exit_code == 0, (step[0], result.output)
    return {"project": project, "model": model, "first": first, "truth": truth}


def test_every_trait_runs_once_and_gives_the_bytes_of_its_own_command(world):
    project, truth = world["project"], world["truth"]
    for stage, done in world["first"].items():
        assert traits_run(done) == list(TRAITS), done.stdout
        assert f"{stage.replace('-', '_')}: 2 of 2 traits to run, 0 up to date" in done.stdout
    for trait in TRAITS:
        # responses name their own paths nowhere; activations and vectors are written from the responses
        assert files_of(project / "out/responses" / f"{trait}.jsonl") == files_of(truth / trait / "responses.jsonl")
        for artifact in ("activations", "vectors"):
            ours, theirs = files_of(project / "out" / artifact / trait), files_of(truth / trait / artifact)
            assert ours and ours == theirs, (trait, artifact)
    record = json.loads((project / "trait_runs/extract_vectors.json").read_text())
    assert record["stage"] == "extract_vectors" and list(record["traits"]) == list(TRAITS)


def test_an_unchanged_phase_runs_no_trait_and_rewrites_the_same_record(world):
    project = world["project"]
    record = project / "trait_runs/capture_activations.json"
    before = record.read_bytes()
    done = run_phase(project, phase_args("capture-activations", world["model"]))
    assert done.returncode == 0 and traits_run(done) == [], done.stdout + done.stderr
    assert "0 of 2 traits to run, 2 up to date" in done.stdout
    assert record.read_bytes() == before  # the same content: DVC sees the same out


def test_editing_one_trait_reruns_that_trait_alone(world):
    project = world["project"]
    positive = project / "traits" / TRAITS[1] / "positive.txt"
    original = positive.read_text()
    kept = project / "out/responses" / f"{TRAITS[0]}.jsonl"
    stamp = kept.stat().st_mtime_ns
    try:
        positive.write_text(original.replace("\n", " Indeed.\n", 1))
        done = run_phase(project, phase_args("generate-responses", world["model"]))
        assert done.returncode == 0 and traits_run(done) == [TRAITS[1]], done.stdout + done.stderr
        assert kept.stat().st_mtime_ns == stamp  # the other trait's file was not even rewritten
        assert "Indeed." in (project / "out/responses" / f"{TRAITS[1]}.jsonl").read_text()
    finally:
        positive.write_text(original)
        done = run_phase(project, phase_args("generate-responses", world["model"]))
        assert done.returncode == 0 and traits_run(done) == [TRAITS[1]]
    assert files_of(project / "out/responses" / f"{TRAITS[1]}.jsonl") == files_of(
        world["truth"] / TRAITS[1] / "responses.jsonl")


def test_an_output_changed_by_hand_is_written_again(world):
    project = world["project"]
    vector = next((project / "out/vectors" / TRAITS[0]).rglob("*.safetensors"))
    good = vector.read_bytes()
    vector.write_bytes(good[:-8] + b"\0" * 8)
    done = run_phase(project, phase_args("extract-vectors", world["model"]))
    assert done.returncode == 0 and traits_run(done) == [TRAITS[0]], done.stdout + done.stderr
    assert vector.read_bytes() == good


def test_every_trait_runs_again_when_asked(world):
    done = run_phase(world["project"], phase_args("extract-vectors", world["model"]),
                     env={"TRAIT_INTERP_RERUN_TRAITS": "1"})
    assert done.returncode == 0 and traits_run(done) == list(TRAITS), done.stdout + done.stderr


def test_a_failing_trait_stops_the_phase_keeps_the_others_and_resumes(world, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(world["project"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["traits"] = [*TRAITS, "behavior/broken"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    broken = project / "traits/behavior/broken"
    broken.mkdir(parents=True)
    (broken / "positive.txt").write_text("one\ntwo\n")
    (broken / "negative.txt").write_text("one\n")  # unpaired: the stage's own one-line error
    args = phase_args("generate-responses", world["model"])
    done = run_phase(project, args)
    assert done.returncode == 1 and traits_run(done) == ["behavior/broken"], done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: generate_responses: behavior/broken failed"), done.stderr
    assert "negative.txt" in done.stderr  # the stage's own message, naming the file
    record = json.loads((project / "trait_runs/generate_responses.json").read_text())
    assert list(record["traits"]) == list(TRAITS)  # the traits that ran before are kept
    assert not (project / "out/responses/behavior/broken.jsonl").exists()
    shutil.copy(project / "traits" / TRAITS[0] / "positive.txt", broken / "positive.txt")
    shutil.copy(project / "traits" / TRAITS[0] / "negative.txt", broken / "negative.txt")
    done = run_phase(project, args)
    assert done.returncode == 0 and traits_run(done) == ["behavior/broken"], done.stdout + done.stderr


def test_a_trait_dropped_from_traits_has_its_outputs_removed(world, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(world["project"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["traits"] = [TRAITS[0]]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    done = run_phase(project, phase_args("extract-vectors", world["model"]))
    assert done.returncode == 0 and traits_run(done) == [], done.stdout + done.stderr
    assert f"{TRAITS[1]} is no longer in traits; its outputs were removed" in done.stdout
    assert not (project / "out/vectors" / TRAITS[1]).exists() and (project / "out/vectors" / TRAITS[0]).is_dir()
    record = json.loads((project / "trait_runs/extract_vectors.json").read_text())
    assert list(record["traits"]) == [TRAITS[0]]


@pytest.mark.parametrize(("template", "message"), [
    (["--activations", "out/activations/x", "--out", "out/vectors/x"], "no option holds {trait}"),
    (["--activations", "out/activations/{trait}"], "pass its outputs --out"),
    (["--activations"], "must be --option value pairs"),
])
def test_a_bad_phase_command_is_one_line_naming_the_fix(world, template, message, tmp_path):
    args = ["for-each-trait", "extract-vectors", "--stage-inputs", "stage_inputs/extract_vectors.json",
            "--record", str(tmp_path / "record.json"), "--", *template]
    done = run_phase(world["project"], args)
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: for-each-trait extract-vectors") and message in last, last
    assert not (tmp_path / "record.json").exists()


def test_a_stage_that_is_not_per_trait_is_refused(world, tmp_path):
    args = ["for-each-trait", "project", "--stage-inputs", "stage_inputs/extract_vectors.json",
            "--record", str(tmp_path / "record.json"), "--", "--vectors", "out/vectors/{trait}"]
    done = run_phase(world["project"], args)
    assert done.returncode == 1 and "declares no TRAIT_OUTPUTS" in done.stderr, done.stderr


def test_a_trait_run_as_its_own_process_gives_the_same_bytes(world, tmp_path, monkeypatch):
    """Without fork (or once CUDA has started) each trait is its own `python -m stages` process."""
    from stages.for_each_trait import run_trait

    monkeypatch.chdir(world["project"])
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    out = tmp_path / "vectors"
    code = run_trait(["extract-vectors", "--activations", f"out/activations/{TRAITS[0]}", "--out", str(out)],
                     fork=False)
    assert code == 0 and files_of(out) == files_of(world["truth"] / TRAITS[0] / "vectors")
    assert run_trait(["extract-vectors", "--activations", "out/activations/none", "--out", str(tmp_path / "x")],
                     fork=False) == 1


def test_a_judge_cache_counts_by_presence_so_the_record_is_the_same_on_every_run(world, tmp_path):
    """A judge cache's entries carry timestamps: two runs from scratch write other cache bytes but the
    same record (DVC sees the same out); a deleted cache makes its trait run again."""
    project = tmp_path / "project"
    shutil.copytree(world["project"], project)
    args = phase_args("vet-responses", world["model"])
    records, caches = [], []
    for _ in range(2):
        shutil.rmtree(project / "cache", ignore_errors=True)
        (project / "trait_runs/vet_responses.json").unlink(missing_ok=True)
        done = run_phase(project, args)
        assert done.returncode == 0 and traits_run(done) == list(TRAITS), done.stdout + done.stderr
        records.append((project / "trait_runs/vet_responses.json").read_bytes())
        caches.append((project / "cache" / f"{TRAITS[0]}.jsonl").read_bytes())
    assert records[0] == records[1] and caches[0] != caches[1]
    (project / "cache" / f"{TRAITS[1]}.jsonl").unlink()
    done = run_phase(project, args)
    assert done.returncode == 0 and traits_run(done) == [TRAITS[1]], done.stdout + done.stderr
    assert (project / "cache" / f"{TRAITS[1]}.jsonl").is_file()
