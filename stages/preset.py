"""``trait-interp preset <name>``: switch params.yaml to a ready real-model setup. Not a DVC stage.

A preset (``presets/<name>.yaml``) holds whole top-level sections of params.yaml (the models, the
roles, the layer, the judge, the batch sizes, ``pipeline``: which optional stages exist); each one
replaces the section of the same name, and every other section (traits, prompt sets, analyses, ...)
stays as it is, comments included. ``dvc.yaml`` is never edited: ``dvc repro`` then runs the real
models. Going back to the toy world: ``git checkout params.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages._common import ParamsOption, user_errors
from trait_interp.core.config import params_file_problems
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import read_text, write_text

PRESETS = Path("presets")


def _yaml():
    from ruamel.yaml import YAML  # round-trip YAML: comments and key order survive

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 110
    return yaml


def apply_preset(params_text: str, preset_text: str, where: str) -> tuple[str, list[str]]:
    """params.yaml's text with each top-level section of the preset replacing its namesake."""
    import io

    yaml = _yaml()
    params = yaml.load(params_text)
    preset = yaml.load(preset_text)
    if not isinstance(preset, dict) or not preset:
        raise UserInputError(f"{where}: a preset is a mapping of top-level params sections")
    for key, value in preset.items():
        params[key] = value
    problems = params_file_problems(dict(params), where)
    if problems:
        raise UserInputError(problems[0])
    buffer = io.StringIO()
    yaml.dump(params, buffer)
    return buffer.getvalue(), list(preset)


def available(root: Path) -> list[str]:
    return sorted(p.stem for p in Path(root).glob("*.yaml"))


@user_errors
def main(
    name: Annotated[str | None, typer.Argument(help="Preset name (presets/<name>.yaml); leave out to list them.")] = None,
    presets: Annotated[Path, typer.Option(help="Folder of presets.")] = PRESETS,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Replace params.yaml's sections with a preset's (e.g. gemma-2-2b); dvc.yaml stays as it is."""
    names = available(presets)
    if name is None:
        typer.echo("presets: " + (", ".join(names) or f"none under {presets}"))
        return
    path = presets / f"{name}.yaml"
    if not path.is_file():
        raise UserInputError(f"unknown preset '{name}' (no {path}); presets: {', '.join(names) or 'none'}")
    text, sections = apply_preset(read_text(params), read_text(path), str(path))
    write_text(params, text)
    typer.echo(f"{params}: {len(sections)} sections from {path} ({', '.join(sections)}); "
               "next: dvc repro (or dvc exp run -n <name>)")
