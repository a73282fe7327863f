"""Params files -> frozen dataclasses, strictly.

A stage reads exactly the dotted keys it declares in ``dvc.yaml`` (``read_params``), and turns
each section into a frozen dataclass (``from_mapping``), where an unknown key is an error: a typo
in ``params.yaml`` must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from trait_interp.core.errors import UserInputError
from trait_interp.core.io import read_text

T = TypeVar("T")

_MISSING = object()


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema scalars, the schema DVC writes params in.

    ``dvc exp run -S`` rewrites params.yaml in YAML 1.2 style, dropping the quotes 1.2 does not need:
    ``"yes"`` becomes ``yes``, ``"1:3"`` becomes ``1:3``. YAML 1.1 (PyYAML's default) would read those
    as True and as the base-60 integer 63, and ``1e-08`` as a string. Here only true/false (any of
    ``true True TRUE``) are booleans, integers are decimal, ``0o`` octal or ``0x`` hex, floats are
    the 1.2 spellings (``1e-08`` included), and there are no timestamps: the value the user wrote is the
    value used.
    """


_CORE_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_CORE_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_CORE_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_YAML11_ONLY = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"}
ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML11_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _CORE_BOOL, list("tTfF"))
ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:int", _CORE_INT, list("-+0123456789"))
ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:float", _CORE_FLOAT, list("-+0123456789."))


def _core_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith(("0o", "0x")):
        return int(text, 0)
    return int(text, 10)  # "010" is ten, not YAML 1.1's octal eight


def _core_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    if text.lstrip("+-") == ".inf":
        return float("-inf") if text.startswith("-") else float("inf")
    if text == ".nan":
        return float("nan")
    return float(text)


ParamsLoader.add_constructor("tag:yaml.org,2002:int", _core_int)
ParamsLoader.add_constructor("tag:yaml.org,2002:float", _core_float)


def load_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: params file not found")
    try:
        data = yaml.load(read_text(path), Loader=ParamsLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserInputError(f"{path}{where}: invalid YAML ({err.__class__.__name__}); fix the syntax") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: expected a mapping of params at the top level")
    return data


PARAM_SECTIONS: tuple[str, ...] = (
    "experiment", "pipeline", "models", "layer", "extraction_model", "application_model", "diff_model", "monitor_models",
    "prompt_sets", "traits", "toy_lora", "toy_models", "generation", "judge", "vetting", "inference", "extraction",
    "vectors", "steering", "sweep", "interventions", "monitoring", "raw_activations", "massive_dims", "analyses",
)
"""Every top-level key of a params file; any other (e.g. a misspelled ``steerng:``) is an error."""

UNIQUE_LISTS: tuple[str, ...] = ("traits", "prompt_sets", "monitor_models")
"""Top-level lists whose entries each name one thing (a DVC stage per entry): a repeat is an error."""


def params_file_problems(data: Mapping[str, Any], source: str) -> list[str]:
    """Whole-file problems, one line each: unknown top-level keys, repeated entries in ``UNIQUE_LISTS``."""
    problems = []
    for key in data:
        if key not in PARAM_SECTIONS:
            close = difflib.get_close_matches(str(key), PARAM_SECTIONS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            problems.append(
                f"{source}: unknown top-level key '{key}'; {hint}known sections: {', '.join(PARAM_SECTIONS)}"
            )
    for key in UNIQUE_LISTS:
        values = data.get(key)
        if isinstance(values, list):
            texts = [str(v) for v in values]
            repeated = sorted({t for t in texts if texts.count(t) > 1})
            if repeated:
                problems.append(f"{source}: {key} lists {', '.join(repeated)} more than once; list each entry once")
    return problems


def check_params_file(path: Path) -> None:
    """Raise on the first whole-file problem of the params file (``trait-interp validate`` lists them all)."""
    problems = params_file_problems(load_yaml(path), str(path))
    if problems:
        more = f" (and {len(problems) - 1} more: run trait-interp validate to list them)" if len(problems) > 1 else ""
        raise UserInputError(problems[0] + more)


def get_key(data: Mapping[str, Any], dotted: str, source: str) -> Any:
    """Look up ``a.b.c`` in nested mappings; a missing key names the file and the key."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise UserInputError(f"{source}: missing param '{dotted}'; add it (see docs/params.md)")
        node = node[part]
    return node


def read_params(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    """Return ``{dotted_key: value}`` for exactly ``keys`` from the params file at ``path``."""
    data = load_yaml(path)
    return {key: get_key(data, key, str(path)) for key in keys}


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """Build the frozen dataclass ``cls`` from a mapping; unknown or missing keys are errors.

    ``where`` names the section for error messages, e.g. ``params.yaml:extraction``.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise UserInputError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserInputError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise UserInputError(f"{where}: missing required key '{name}'")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check (and lightly convert) a YAML value against a type hint; lists become tuples."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserInputError as err:
                errors.append(str(err))
        if len(errors) == 1:
            raise UserInputError(errors[0])
        options = " or ".join(e.split(": ", 1)[-1] for e in errors)
        raise UserInputError(f"{where}: invalid value {value!r} ({options})")
    if origin is typing.Literal:
        if value not in args:
            raise UserInputError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list, Sequence):
        if not isinstance(value, (list, tuple)):
            raise UserInputError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise UserInputError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserInputError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserInputError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserInputError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)  # type: ignore[arg-type]
    return value
