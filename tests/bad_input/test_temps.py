"""A writer killed (SIGKILL) inside ``atomic_dir`` / ``atomic_path`` leaves its temp behind; DVC must not see it.

Temps live beside their target, so a temp of ``.../toy-base/activations/<trait>`` sits inside
``experiments/toy/extraction/toy-base/activations``, a phase's output folder that other stages depend on. The committed
``.dvcignore`` matches exactly the temp names ``trait_interp/io.py`` makes, and the next write of the
same target removes temps whose writer is gone (never a running writer's).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.toy_project import run
from trait_interp.core.io import TEMP_SUFFIX, atomic_dir, atomic_path

UP_TO_DATE = "Data and pipelines are up to date."

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from trait_interp.core.io import atomic_dir, atomic_path

    kind, target = sys.argv[1], Path(sys.argv[2])
    if kind == "dir":
        with atomic_dir(target) as tmp:
            (tmp / "part.bin").write_bytes(b"half written")
            print("writing", flush=True)
            time.sleep(600)
    else:
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            print("writing", flush=True)
            time.sleep(600)
    """
)


def start_writer(kind: str, target: Path) -> subprocess.Popen:
    """A writer process paused inside the atomic block (its temp exists, the rename has not happened)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, kind, str(target)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(f".*{TEMP_SUFFIX}"))


@pytest.fixture()
def repo(tmp_path):
    """A git + DVC repo with the project's .dvcignore and a tracked folder ``data`` (like a dependency folder)."""
    root = tmp_path / "repo"
    (root / "data/trait").mkdir(parents=True)
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    shutil.copy(REPO / ".dvcignore", root / ".dvcignore")
    (root / "data/trait/responses.jsonl").write_text("{}\n")
    (root / "data/trait/activations").mkdir()
    (root / "data/trait/activations/meta.json").write_text("{}\n")
    run(["dvc", "add", "-q", "data"], root)
    assert UP_TO_DATE in run(["dvc", "status"], root)
    return root


def test_a_killed_directory_write_changes_no_dvc_hash_and_the_next_write_sweeps_it(repo):
    folder = repo / "data/trait"
    kill(start_writer("dir", folder / "activations"))
    (left,) = temps(folder)
    assert left.is_dir() and (left / "part.bin").is_file() and left.name.startswith(".activations.")
    assert (folder / "activations/meta.json").read_text() == "{}\n"  # the old output is untouched
    assert UP_TO_DATE in run(["dvc", "status"], repo)

    # the check can fail: without the committed pattern, the leftover changes the tracked folder
    (repo / ".dvcignore").write_text("")
    assert "modified" in run(["dvc", "status"], repo)
    shutil.copy(REPO / ".dvcignore", repo / ".dvcignore")

    with atomic_dir(folder / "activations") as tmp:  # the next write of the same target
        (tmp / "meta.json").write_text("{}\n")
    assert temps(folder) == []
    assert UP_TO_DATE in run(["dvc", "status"], repo)


def test_a_killed_file_write_changes_no_dvc_hash_and_the_next_write_sweeps_it(repo):
    folder = repo / "data/trait"
    kill(start_writer("file", folder / "responses.jsonl"))
    (left,) = temps(folder)
    assert left.is_file() and left.name.startswith(".responses.jsonl.")
    assert UP_TO_DATE in run(["dvc", "status"], repo)

    with atomic_path(folder / "responses.jsonl") as tmp:
        tmp.write_text("{}\n")
    assert temps(folder) == []
    assert UP_TO_DATE in run(["dvc", "status"], repo)


def test_a_running_writers_temp_is_never_swept(tmp_path):
    target = tmp_path / "activations"
    writer = start_writer("dir", target)
    try:
        (live,) = temps(tmp_path)
        with atomic_dir(target) as tmp:  # another writer of the same target finishes meanwhile
            (tmp / "meta.json").write_text("{}\n")
        assert temps(tmp_path) == [live] and (live / "part.bin").is_file()
    finally:
        kill(writer)
    with atomic_path(tmp_path / "other.json") as tmp:  # a write of another target leaves it too
        tmp.write_text("{}")
    assert temps(tmp_path) == [live]
    with atomic_dir(target) as tmp:
        (tmp / "meta.json").write_text("{}\n")
    assert temps(tmp_path) == []
