"""``trait-interp warm -- <command>``: run a command (``dvc repro``, ``dvc exp run``) with a warm stage server. Not a DVC stage.

Every stage DVC starts while the command runs is served by one process that has imported torch,
transformers and the rest once (stages/_stage_server.py): a stage of a small model starts in a
fraction of a second instead of 2-5 s. Outputs are the same as without it; a stage the server cannot
take runs in its own process. The server starts beside the command (stages that start before it is
ready run on their own) and stops when the command ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from stages._stage_server import SERVER_VARIABLE


def run_warm(command: list[str], environ: dict[str, str] | None = None) -> int:
    """Run ``command`` with a stage server beside it; returns the command's exit status."""
    environ = dict(os.environ if environ is None else environ)
    folder = tempfile.mkdtemp(prefix="trait-interp-warm-")
    socket_path, log = str(Path(folder) / "stages.sock"), Path(folder) / "commands.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "stages._stage_server", socket_path, str(os.getpid()), str(log)],
        env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=None, start_new_session=True,
        cwd=Path(__file__).resolve().parent.parent,  # this checkout: `-m stages._stage_server` finds its module
    )
    try:
        return subprocess.run(command, env={**environ, SERVER_VARIABLE: socket_path}).returncode
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        print(summary(log.read_text(encoding="utf-8").splitlines() if log.is_file() else []), file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)


def summary(lines: list[str]) -> str:
    """One line on what the server did: how many stage commands it ran, and why it left any to run alone."""
    served = sum(line == "served" for line in lines)
    declined = [line.removeprefix("declined ") for line in lines if line != "served"]
    text = f"warm: {served} stage command(s) ran on the warm stage server"
    if declined:
        text += f"; {len(declined)} ran in their own process ({declined[0]})"
    return text


def main(
    command: Annotated[list[str] | None, typer.Argument(help="The command to run, after --: e.g. -- dvc repro")] = None,
) -> None:
    """Run a command with a warm stage server (stages start in a fraction of a second)."""
    if not command:
        print("error: warm: give the command to run after --, e.g. trait-interp warm -- dvc repro", file=sys.stderr)
        raise typer.Exit(code=2)
    if shutil.which(command[0]) is None:
        print(f"error: warm: {command[0]!r} is not on PATH; give a command such as: trait-interp warm -- dvc repro",
              file=sys.stderr)
        raise typer.Exit(code=2)
    raise typer.Exit(code=run_warm(command))
