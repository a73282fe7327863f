"""Atomic file writing and small readers: every write goes to a temp file, then a rename.

A stage that fails half-way therefore never leaves a truncated output behind. Temps are named
``.<name>.<pid>-<random>.trait-interp.tmp`` beside their target: ``.dvcignore`` (and ``.gitignore``)
match exactly that, so a temp left by a killed writer never changes the hash of a folder DVC
tracks, and the next write of the same target removes temps whose writer process is gone.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trait_interp.core.errors import UserInputError

TEMP_SUFFIX = ".trait-interp.tmp"  # .dvcignore and .gitignore hold the pattern .*.trait-interp.tmp


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"


def _writer_pid(temp: Path, path: Path) -> int | None:
    """The pid in a temp name made for ``path``; None when the name is not one of ours."""
    middle = temp.name[len(f".{path.name}.") : -len(TEMP_SUFFIX)]
    pid, dash, _ = middle.partition("-")
    return int(pid) if dash and pid.isdigit() else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_stale_temps(path: Path) -> list[Path]:
    """Remove the temps of ``path`` whose writer process no longer runs (killed mid-write); return them."""
    path = Path(path)
    removed = []
    for temp in path.parent.glob(f"{glob.escape(f'.{path.name}.')}*{TEMP_SUFFIX}"):
        pid = _writer_pid(temp, path)
        if pid is None or _running(pid):
            continue
        if temp.is_dir() and not temp.is_symlink():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)
        removed.append(temp)
    return removed


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
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
    sweep_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent))
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
    A file in another encoding is a one-line error naming the file and the offending byte.
    """
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserInputError(
            f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); save the file as UTF-8"
        ) from None


def read_safetensors(path: Path, restore: Path, stage: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every tensor of a safetensors file that a stage wrote.

    A truncated or corrupt file (an interrupted copy or pull), or one without the tensors ``keys``,
    is a one-line error naming the file and the fix: ``dvc checkout <restore>`` (the DVC output that
    holds it) or re-running ``stage``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    fix = f"restore it with `dvc checkout {restore}` or re-run {stage}"
    try:
        tensors = load_file(str(path))
    except SafetensorError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{path}: corrupt or truncated safetensors file ({reason}); {fix}") from None
    missing = [key for key in keys if key not in tensors]
    if missing:
        raise UserInputError(f"{path}: no tensor {', '.join(repr(k) for k in missing)} in this safetensors file; {fix}")
    return tensors


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
