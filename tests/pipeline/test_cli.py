"""The command line loads lazily, and the toy world is one folder that can go without touching the rest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.toy_project import copy_sources


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env={"PYTHONPATH": str(cwd), "PATH": ""},
                          capture_output=True, text=True, timeout=300)


def test_help_lists_every_command_without_importing_any_stage_or_torch():
    done = _python(
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from stages.cli import STAGES, app\n"
        "out = CliRunner().invoke(app, ['--help']).output\n"
        "assert all(name in out for name in STAGES), out\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('torch', 'transformers', 'stages.', 'trait_interp')))\n"
        "print(loaded)\n",
        REPO,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['stages.cli']"


def test_a_stage_command_imports_only_its_own_stage_module():
    done = _python(
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from stages.cli import app\n"
        "result = CliRunner().invoke(app, ['decompose', '--help'])\n"
        "assert result.exit_code == 0 and '--trait-x' in result.output, result.output\n"
        "print(sorted(m for m in sys.modules if m.startswith('stages.')))\n",
        REPO,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['stages._common', 'stages.cli', 'stages.decompose']"


def test_the_toy_world_can_be_deleted_as_one_folder(tmp_path):
    root = tmp_path / "no-toy"
    copy_sources(REPO, root)
    shutil.rmtree(root / "trait_interp" / "toy")
    for toy_stage in ("build_toy_models", "build_toy_lora"):
        (root / "stages" / f"{toy_stage}.py").unlink()
    done = _python(
        # the venv's editable install maps trait_interp.* onto the original checkout, whose toy folder is
        # still there; a user who deletes the folder deletes it where that install points, so drop its finder
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]\n"
        "import importlib, pkgutil\n"
        "import trait_interp, stages\n"
        "from typer.testing import CliRunner\n"
        "for package in (trait_interp, stages):\n"
        "    for m in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        if m.name != 'stages.__main__':\n"
        "            importlib.import_module(m.name)\n"
        "from stages.cli import app\n"
        "out = CliRunner().invoke(app, ['--help']).output\n"
        "assert 'build-toy-models' not in out and 'steering-eval' in out, out\n"
        "from trait_interp.core.errors import UserInputError\n"
        "from trait_interp.judge.settings import JudgeSettings, make_backend\n"
        "try:\n"
        "    make_backend(JudgeSettings(backend='lexicon', relevance_check=False), 'judge', ('a/b', None))\n"
        "except UserInputError as err:\n"
        "    print(err)\n",
        root,
    )
    assert done.returncode == 0, done.stderr
    assert "judge.backend: lexicon is the toy world's oracle and trait_interp/toy is not installed" in done.stdout
