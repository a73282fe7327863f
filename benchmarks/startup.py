"""How long a stage command takes to start: ``python -m stages <stage> --help``, each stage once.

    .venv/bin/python benchmarks/startup.py            # a table, slowest stage last
    .venv/bin/python -m benchmarks --only startup     # the row of the issue's measures

Each stage's ``--help`` runs in a fresh process (Python start-up, ``stages.cli``, that stage's
module and the library it imports at top level: no model, no data). The goal is under 3 s for any
stage; the row reports the slowest and every stage's time. Where one is slow, see what it imports
with ``python -X importtime -m stages <stage> --help 2>&1 | sort -t'|' -k2 -n | tail``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL_S = 3.0


def stage_seconds(command: str) -> float:
    """Wall time of ``python -m stages <command> --help`` in a fresh process (it must exit 0)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "stages", command, "--help"], cwd=REPO, env=env,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"python -m stages {command} --help failed:\n{result.stderr}")
    return seconds


def startup_rows() -> list[dict]:
    """One row: the slowest stage's ``--help`` time (``ratio``, seconds) and every stage's."""
    from stages.cli import STAGES, available

    present = available()
    seconds = {command: round(stage_seconds(command), 2) for command in STAGES if command in present}
    slowest = max(seconds, key=seconds.get)
    return [{
        "measure": "stage start-up: python -m stages <stage> --help, slowest stage",
        "shape": slowest,
        "ratio": seconds[slowest],
        "goal": f"< {GOAL_S:g} s",
        "seconds": seconds,
    }]


def main() -> None:
    (row,) = startup_rows()
    for command, seconds in sorted(row["seconds"].items(), key=lambda item: item[1]):
        print(f"{command:<28} {seconds:6.2f} s")
    print(f"{'slowest: ' + row['shape']:<28} {row['ratio']:6.2f} s  goal {row['goal']}")


if __name__ == "__main__":
    main()
