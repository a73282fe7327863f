"""Atomic file writing and small readers: every write goes to a temp file, then a rename.

A stage that fails half-way therefore never leaves a truncated output behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trait_interp.errors import UserInputError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a fresh temp directory; it replaces ``path`` (whole) only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def write_with(path: Path, writer: Callable[[Path], None]) -> None:
    """Atomically write ``path`` with a writer that takes the temp path (safetensors, parquet)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def read_text(path: Path) -> str:
    """A text file as UTF-8, without a leading byte-order mark (U+FEFF, which Windows editors write).

    ``str.strip()`` keeps U+FEFF, so an undecoded BOM would become part of the first line's text.
    """
    return Path(path).read_text(encoding="utf-8-sig")


def read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error becomes a one-line error naming file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: file not found")
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise UserInputError(
            f"{path}:{err.lineno}:{err.colno}: invalid JSON ({err.msg}); fix the syntax at that position"
        ) from None
