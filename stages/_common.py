"""What every stage shares: the params option, reading declared keys, user-facing errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from trait_interp.config import check_params_file, read_params
from trait_interp.errors import UserInputError
from trait_interp.models import ModelSpec, model_spec

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


def chosen_model(values: dict[str, Any], role: str, params_path: Path) -> tuple[str, ModelSpec]:
    """The registry entry named by ``role`` (e.g. ``extraction_model``), read via ``models.{role}``."""
    key = values[role]
    return key, model_spec({key: values[f"models.{{{role}}}"]}, key, str(params_path))


def named_model(values: dict[str, Any], key: str, params_path: Path) -> tuple[str, ModelSpec]:
    """The registry entry ``key`` given on the command line, read via ``models.{model}``."""
    return key, model_spec({key: values["models.{model}"]}, key, str(params_path))


def rounded(value: float | None, digits: int = 4) -> float | None:
    """A metrics value for JSON: rounded, with None for missing or NaN (JSON has no NaN)."""
    if value is None or value != value:
        return None
    return round(float(value), digits)
