"""What every stage shares: the params option, reading declared keys, path patterns, user-facing errors."""

from __future__ import annotations

import functools
import string
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from trait_interp.core.config import check_params_file, read_params
from trait_interp.core.errors import UserInputError

if TYPE_CHECKING:  # torch and transformers load with the stages that use a model, not with every command
    from trait_interp.core.models import ModelSpec
    from trait_interp.core.resolution import ResolvedModel

F = TypeVar("F", bound=Callable[..., Any])

ParamsOption = Annotated[
    Path, typer.Option("--params", help="Params file; the stage reads only the keys it declares in dvc.yaml.")
]


def user_errors(fn: F) -> F:
    """Turn a UserInputError into ``error: <message>`` on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserInputError as err:
            print(f"error: {err}", file=sys.stderr)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


def stage_params(params_path: Path, keys: tuple[str, ...], **placeholders: str) -> dict[str, Any]:
    """Read the stage's declared keys; ``{name}`` placeholders are filled from earlier keys.

    E.g. ``models.{extraction_model}`` is read after ``extraction_model``. The whole file is checked
    first: an unknown top-level key or a repeated trait, prompt set or monitored model is an error.
    """
    check_params_file(params_path)
    values: dict[str, Any] = {}
    for key in keys:
        concrete = key.format(**{**placeholders, **{k: v for k, v in values.items() if isinstance(v, str)}})
        values[key] = read_params(params_path, [concrete])[concrete]
    return values


def resolved_model(record_path: Path) -> tuple[ResolvedModel, ModelSpec, str]:
    """A model's record (written by resolve_models), its entry pinned to the record, and its params name.

    The name (``models.<key>``) is what error messages about the model use.
    """
    from trait_interp.core.resolution import pinned, read_model_record

    record = read_model_record(record_path)
    return record, pinned(record), f"models.{record.key}"


ModelRecordOption = Annotated[
    Path, typer.Option("--model", help="The model's record from resolve_models (models/resolved/<key>.json).")
]
JudgeRecordOption = Annotated[
    Path, typer.Option("--judge-record", help="The judge's record from resolve_models (models/resolved/judge.json).")
]


def rounded(value: float | None, digits: int = 4) -> float | None:
    """A metrics value for JSON: rounded, with None for missing or NaN (JSON has no NaN)."""
    if value is None or value != value:
        return None
    return round(float(value), digits)


def fill_pattern(pattern: str, option: str, **values: str) -> Path:
    """A path from a pattern option of dvc.yaml, e.g. ``.../{trait}/vectors`` with ``trait=...``.

    Stages that read one artifact per trait (or model, prompt set) take the layout as a pattern, so
    the experiment's folder layout is written in dvc.yaml alone. The pattern must name exactly the
    placeholders given.
    """
    named = {field for _, field, _, _ in string.Formatter().parse(pattern) if field is not None}
    if named != set(values):
        wanted = ", ".join("{" + name + "}" for name in sorted(values))
        raise UserInputError(f"--{option} '{pattern}': the pattern must contain exactly {wanted}")
    return Path(pattern.format(**values))


def per_trait(pattern: str, option: str, traits: Any) -> dict[str, Path]:
    """``{trait: path}`` for every trait, from a ``{trait}`` pattern option."""
    return {str(trait): fill_pattern(pattern, option, trait=str(trait)) for trait in traits}


def touch_output(path: Path) -> None:
    """Make sure a declared output file exists (DVC fails a stage whose output is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=True)
