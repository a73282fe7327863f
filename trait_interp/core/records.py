"""Typed JSON records (frozen dataclasses) handed from one stage to the next, validated on write and read.

A record is written only after the checks a reader makes pass (``from_mapping``: no unknown or
missing key, every value of its declared type), and read back through the same checks, so a
damaged or stale file is a one-line error naming it and the fix, never a ``KeyError`` later.
Tuples are written as JSON lists; the field order is the file's key order.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from trait_interp.core.config import from_mapping
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import read_json, write_json

T = TypeVar("T")


def write_record(path: Path, record: Any) -> None:
    data = asdict(record)
    from_mapping(type(record), data, str(path))  # the same checks a reader makes
    write_json(path, data)


def read_record(cls: type[T], path: Path, missing: str, fix: str) -> T:
    """The record at ``path``; ``missing`` says what to do when there is none, ``fix`` when it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: {missing}")
    try:
        return from_mapping(cls, read_json(path), str(path))
    except UserInputError as err:
        raise UserInputError(f"{err}; {fix}") from None
