"""Stage stage_inputs: what each per-trait stage reads (its params' values, a hash of its code), one small file each.

The per-trait stages run as one phase stage each over every trait (stages/for_each_trait.py),
which re-runs a trait when anything that trait's run reads has changed: its files, and the params
and code of the stage. This stage reads those params and hashes that code once and writes
``<stage>.json`` for each per-trait stage: the values of the stage's ``PARAMS`` and a content hash
of its module and of the library folders it imports (``PER_TRAIT_CODE``). Each phase depends on its
file instead of on params.yaml and the code folders, and the runner digests it into every trait's
inputs; the file changes exactly when one of those params or that code changes, so what re-runs is
what direct deps would re-run (the JSON is written with sorted keys: reordering params.yaml changes
nothing). The params are still this stage's DVC params, so `dvc status`, `dvc params diff` and
`dvc exp show` name them.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Annotated

import typer

from stages._common import ParamsOption, stage_params, user_errors
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import atomic_dir

HERE = Path(__file__).parent
ROOT = HERE.parent

# per-trait stage -> the library folders it imports (its own stages/<stage>.py is always hashed too)
PER_TRAIT_CODE: dict[str, tuple[str, ...]] = {
    "generate_responses": ("trait_interp/core",),
    "vet_responses": ("trait_interp/core", "trait_interp/extraction", "trait_interp/judge"),
    "capture_activations": ("trait_interp/core", "trait_interp/extraction"),
    "extract_vectors": ("trait_interp/core", "trait_interp/extraction"),
    "evaluate_vectors": ("trait_interp/core", "trait_interp/extraction"),
    "steering_eval": ("trait_interp/core", "trait_interp/extraction", "trait_interp/judge", "trait_interp/steering"),
    "steering_sweep": ("trait_interp/core", "trait_interp/extraction", "trait_interp/judge", "trait_interp/steering"),
}
# every key a per-trait stage reads (a section covers its dotted keys): this stage's DVC params
PARAMS: tuple[str, ...] = ("extraction", "generation", "vetting", "judge", "vectors", "layer", "steering", "sweep")
IGNORED_SUFFIXES = (".pyc", ".trait-interp.tmp")  # what .dvcignore leaves out of a code folder's hash


def module_params(stage: str) -> tuple[str, ...]:
    """A stage module's ``PARAMS``, read from its source (importing it would load torch)."""
    tree = ast.parse((HERE / f"{stage}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "PARAMS" and node.value is not None:
            return tuple(ast.literal_eval(node.value))
    raise UserInputError(f"stages/{stage}.py declares no PARAMS")


def covered(key: str, keys: tuple[str, ...]) -> bool:
    """``extraction.paired`` is covered by ``extraction`` (or by itself)."""
    return any(key == k or key.startswith(k + ".") for k in keys)


def code_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative path and content, sorted), skipping caches and temps."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(IGNORED_SUFFIXES))
    if not files:
        raise UserInputError(f"{path}: no code found to hash")
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def stage_record(stage: str, params: Path, root: Path = ROOT) -> dict:
    keys = module_params(stage)
    missing = [k for k in keys if not covered(k, PARAMS)]
    if missing:
        raise UserInputError(f"stages/{stage}.py reads {missing}: add them to stage_inputs' PARAMS and dvc.yaml")
    code = (f"stages/{stage}.py", *PER_TRAIT_CODE[stage])
    return {"stage": stage, "params": stage_params(params, keys), "code": {c: code_hash(root / c) for c in code}}


@user_errors
def main(
    out: Annotated[Path, typer.Option(help="Folder to write: <stage>.json for each per-trait stage.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Write each per-trait stage's params values and code hash, the one dependency that stands for both."""
    records = {stage: stage_record(stage, params) for stage in PER_TRAIT_CODE}
    with atomic_dir(out) as tmp:
        for stage, record in records.items():
            text = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            (tmp / f"{stage}.json").write_text(text, encoding="utf-8")
    typer.echo(f"inputs of {len(records)} per-trait stages -> {out}")
