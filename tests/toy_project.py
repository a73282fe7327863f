"""One reduced toy project reproduced with `dvc repro`, shared by the DVC tests (a repro costs minutes).

The session fixture (conftest ``reproduced_toy``) builds it once; each test module takes its own
full copy (``copy_project``: git history, DVC cache and outputs), so modules never see each other's
edits. The copy is cheap next to a repro: the toy experiment's outputs are a few MB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from stages.stage_inputs import PER_TRAIT_CODE

TRAITS = ("behavior/refusal", "tone/formality")


def warm(args: list[str]) -> list[str]:
    """``dvc repro`` and ``dvc exp run`` through ``trait-interp warm`` (a stage starts in a fraction of a
    second instead of 2-5 s: most of the suite's time), unless TRAIT_INTERP_TEST_COLD=1 is set. Queued
    experiments run later, in DVC's own workers, as plain processes."""
    if os.environ.get("TRAIT_INTERP_TEST_COLD") == "1" or "--queue" in args:
        return args
    if args[:2] == ["dvc", "repro"] or args[:3] == ["dvc", "exp", "run"]:
        return [sys.executable, "-m", "stages", "warm", "--", *args]
    return args


def run(args: list[str], cwd: Path, *, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    """Run a command (the venv's tools first on PATH) and return stdout + stderr; a failure fails the test.

    ``dvc repro`` and ``dvc exp run`` run with a warm stage server (``warm``)."""
    args = warm(args)
    full = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", **(env or {})}
    done = subprocess.run(args, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def stages_run(output: str) -> set[str]:
    """What ran: DVC's stages, except that a per-trait phase (stages/for_each_trait.py) counts as the
    traits it ran, ``<stage>@<trait>`` (its own stage runs whenever any trait's inputs changed)."""
    stages = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
    traits = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running trait")}
    return (stages - PHASES) | traits


# the per-trait phases: one DVC stage each over every trait (the stages stage_inputs records)
PHASES = set(PER_TRAIT_CODE)


def copy_sources(repo: Path, root: Path) -> None:
    """The project's files as git sees them (tracked and new, not ignored), without experiment outputs."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=repo,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        if rel.startswith("experiments/") or not (repo / rel).is_file():
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, root / rel)


def reduce_params(root: Path) -> None:
    """Two traits, two sites and methods, one prompt set and model, short generations.

    The pipeline's mechanics, not the toy world's effects (tests/toy/test_world_trained.py): barely
    trained models, so vetting keeps everything (it still judges, through the cache)."""
    from tests.conftest import TINY_TRAINING

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["traits"] = list(TRAITS)
    params["toy_models"].update(TINY_TRAINING)
    params["vetting"].update(pos_threshold=0, neg_threshold=100)
    params["extraction"]["sites"] = ["residual", "attn_out"]
    params["vectors"]["methods"] = ["probe", "mean_diff"]
    params["steering"].update(subset=3, search_steps=2, max_new_tokens=8, sweep_ratios=[-0.5, 0.5])
    params["sweep"].update(layers=[1, 2], windows=[[1, 2]], methods=["probe", "mean_diff"], ratios=[-0.5, 0.5],
                           subset=2, max_new_tokens=8, side_effect_prompts=4)
    params["inference"]["max_new_tokens"] = 8
    params["prompt_sets"] = ["mixed_requests"]
    params["monitor_models"] = ["toy-instruct"]
    params["massive_dims"]["prompt_set"] = "mixed_requests"
    params["analyses"]["n_boot"] = 200
    params["analyses"]["decompositions"]["refusal_x_optimism"]["trait_y"] = "tone/formality"
    params["analyses"]["cross_evaluation"]["traits"] = list(TRAITS)
    params["interventions"]["refusal_gate"]["gate"]["threshold"]["prompt_set"] = "mixed_requests"  # the one set left
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def reproduce(repo: Path, root: Path) -> str:
    """A git repo at ``root`` with the reduced toy config, reproduced and committed; returns repro's output."""
    copy_sources(repo, root)
    reduce_params(root)
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "copy"], root)
    output = run(["dvc", "repro"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "reproduced"], root)
    return output


def copy_project(source: Path, dest: Path) -> Path:
    """A full, independent copy: working tree, .git, DVC cache (symlinks kept as links)."""
    shutil.copytree(source, dest, symlinks=True)
    return dest
