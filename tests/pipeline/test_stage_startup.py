"""A stage command starts fast: importing a stage module pulls in no heavy library.

``python -m stages <stage> --help`` imports only that stage's module (``stages.cli`` is lazy), so the
stage module's top level decides the start-up time: torch, transformers, pandas and the rest are
imported inside ``main()`` (or the helpers that use them), never at import.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest

from stages.cli import STAGES
from tests.conftest import REPO

HEAVY = ("torch", "transformers", "pandas", "pandera", "scipy", "sklearn", "peft", "openai", "numpy",
         "pyarrow", "accelerate")

# one fresh interpreter imports every stage module in turn and records, after each, the heavy
# modules that appeared during its import (the first module to pull one in is the one blamed)
PROBE = """
import importlib, json, sys
heavy, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
offenders = {}
for module in modules:
    before = {h for h in heavy if h in sys.modules}
    importlib.import_module(f"stages.{module}")
    offenders[module] = sorted(h for h in heavy if h in sys.modules and h not in before)
print(json.dumps(offenders))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(COLUMNS="200", TERM="dumb", NO_COLOR="1")
    return env


def test_no_stage_module_imports_a_heavy_library():
    modules = sorted(set(STAGES.values()))
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY), json.dumps(modules)], cwd=REPO,
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    offenders = {m: heavy for m, heavy in json.loads(result.stdout).items() if heavy}
    assert not offenders, f"stage modules importing heavy libraries at import (move them into main): {offenders}"


@pytest.mark.parametrize("command", ["validate", "capture-raw", "steering-sweep"])
def test_stage_help_lists_its_options(command):
    import importlib

    main = importlib.import_module(f"stages.{STAGES[command]}").main
    options = [f"--{name.replace('_', '-')}" for name in inspect.signature(main).parameters]
    result = subprocess.run([sys.executable, "-m", "stages", command, "--help"], cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    missing = [option for option in options if option not in result.stdout]
    assert options and not missing, f"{command} --help lacks {missing}:\n{result.stdout}"
