"""Run stage commands as dvc.yaml does: a stage that loads a model gets that model's record.

In the pipeline, ``resolve_models`` writes one record per model (``models/resolved/<key>.json``) and
every stage that loads a model takes it as ``--model`` (the judging stages take the judge's record as
``--judge-record``). ``with_records`` does the same for a stage command given in a test: it resolves
the models of the command's ``--params`` file once (again when the file changes), then adds the
records the stage needs; a ``--model <key>`` in the arguments is replaced by that key's record.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from typer.testing import CliRunner

from stages.cli import app

RUNNER = CliRunner()
# stage -> (the role whose record is --model, whether it takes --judge-record)
NEEDS = {
    "generate-responses": ("extraction_model", False),
    "capture-activations": ("extraction_model", False),
    "steering-eval": ("application_model", True),
    "steering-sweep": ("application_model", True),
    "intervention-eval": ("application_model", True),
    "vet-responses": (None, True),
    "label-responses": (None, True),
    "generate-inference": ("application_model", False),
    "calibrate-massive-dims": ("application_model", False),
    "project": ("application_model", False),
    "capture-raw": ("application_model", False),
    "monitor-layers": ("application_model", False),
    "model-diff": ("application_model", False),
}


def resolved_folder(params: Path):
    """The records of a params file's models, resolved once per content of the file, and the resolve run.

    The run's result is None when an earlier call resolved this content; else the resolve-models
    result, which carries the error when resolving fails (where ``dvc repro`` would stop too).
    """
    digest = hashlib.sha256(Path(params).read_bytes()).hexdigest()[:12]
    folder = Path(params).parent / f"resolved-{Path(params).stem}-{digest}"
    if folder.is_dir():
        return folder, None
    return folder, RUNNER.invoke(app, ["resolve-models", "--out", str(folder), "--params", str(params)])


def with_records(args: list[str], folder: Path) -> list[str]:
    stage = args[0]
    params = Path(args[args.index("--params") + 1])
    role, judged = NEEDS[stage]
    roles = yaml.safe_load(params.read_text(encoding="utf-8-sig"))
    out = list(args)
    if "--model" in out:
        i = out.index("--model") + 1
        if not out[i].endswith(".json"):
            out[i] = str(folder / f"{out[i]}.json")
    elif role is not None:
        out += ["--model", str(folder / f"{roles[role]}.json")]
    if stage == "model-diff" and "--diff-model" not in out:
        out += ["--diff-model", str(folder / f"{roles['diff_model']}.json")]
    if judged and "--judge-record" not in out:
        out += ["--judge-record", str(folder / "judge.json")]
    return out


def invoke(*args: object):
    """A stage command through the CLI, with its records (see the module docstring).

    When resolving the models fails, its result is returned: the error is resolve-models'.
    """
    words = [str(a) for a in args]
    if not words or words[0] not in NEEDS or "--params" not in words:
        return RUNNER.invoke(app, words)
    folder, resolved = resolved_folder(Path(words[words.index("--params") + 1]))
    if resolved is not None and resolved.exit_code != 0:
        return resolved
    return RUNNER.invoke(app, with_records(words, folder))
