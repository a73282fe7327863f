"""A content-addressed, append-only judge cache (JSONL), safe against a killed run.

Key: sha256 of the canonical JSON of (judge model identity, template name, template version,
exact messages, request settings). Value: the raw top logprobs of the judge's first token and
the score derived from them.

The file is meant to be a DVC output with ``persist: true``: a re-run (or a fresh machine after
``dvc pull``) re-judges nothing it already paid for. Every new entry is one line written with a
single ``write`` on an ``O_APPEND`` descriptor and fsync'ed at once, so a run killed half-way keeps
every answer it had received. A crash while appending can leave a partial last line; loading
ignores it (and the next append cuts it off). A bad line anywhere else is an error naming
file:line, because it means the file was edited or damaged.

One writer per file at a time (one DVC stage owns it); the cache object holds the file open
for appending until ``close()``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trait_interp.core.errors import UserInputError
from trait_interp.judge.templates import Messages

REQUEST_SETTINGS: Mapping[str, Any] = {
    "logprobs": True,
    "max_tokens": 1,
    "seed": 42,
    "temperature": 0,
    "top_logprobs": 20,
}
"""What every judge request asks for (the OpenAI backend sends exactly this); part of the key."""

_FIELDS = ("key", "template", "version", "model", "top_logprobs", "score", "created")


def cache_key(model: str, template: str, version: int, messages: Messages) -> str:
    """Hex sha256 of the canonical JSON of everything that determines the judge's answer."""
    payload = {
        "model": model,
        "template": template,
        "version": version,
        "messages": [dict(m) for m in messages],
        "request": dict(REQUEST_SETTINGS),
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    key: str
    template: str
    version: int
    model: str
    top_logprobs: dict[str, float]
    score: float | None
    created: str

    def to_line(self) -> str:
        record = {name: getattr(self, name) for name in _FIELDS}
        return json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"


def new_entry(
    key: str, template: str, version: int, model: str, top_logprobs: Mapping[str, float], score: float | None
) -> CacheEntry:
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return CacheEntry(key, template, version, model, dict(top_logprobs), score, created)


class JudgeCache:
    """Entries by key, backed by a JSONL file (or by nothing: ``in_memory()``)."""

    def __init__(
        self, path: Path | None, entries: dict[str, CacheEntry], valid_size: int = 0, needs_newline: bool = False
    ) -> None:
        self.path = path
        self._entries = entries
        self._valid_size = valid_size  # bytes of the file up to the end of its last good line
        self._needs_newline = needs_newline  # the last good line was written without its newline
        self._fd: int | None = None

    @classmethod
    def in_memory(cls) -> JudgeCache:
        return cls(None, {})

    @classmethod
    def open(cls, path: Path) -> JudgeCache:
        """Load ``path`` if it exists (a missing file is an empty cache); new entries append to it."""
        path = Path(path)
        if not path.exists():
            return cls(path, {})
        entries, valid_size, needs_newline = _read(path)
        return cls(path, entries, valid_size, needs_newline)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> CacheEntry | None:
        return self._entries.get(key)

    def put(self, entry: CacheEntry) -> None:
        """Record ``entry``; on disk it is durable (flushed and fsync'ed) when this returns."""
        if self.path is not None:
            data = entry.to_line().encode("ascii")
            fd = self._append_fd()
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        self._entries[entry.key] = entry

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JudgeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _append_fd(self) -> int:
        if self._fd is None:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if os.fstat(fd).st_size > self._valid_size:
                os.ftruncate(fd, self._valid_size)  # drop a partial last line left by a crash
            if self._needs_newline:
                os.write(fd, b"\n")
            self._fd = fd
        return self._fd


def _read(path: Path) -> tuple[dict[str, CacheEntry], int, bool]:
    """Entries, the byte size up to the end of the last good line, and whether that line lacks its newline."""
    raw = path.read_bytes()
    entries: dict[str, CacheEntry] = {}
    valid_size = 0
    needs_newline = False
    pos = 0
    lineno = 0
    while pos < len(raw):
        lineno += 1
        newline = raw.find(b"\n", pos)
        complete = newline != -1
        end = newline + 1 if complete else len(raw)
        line = raw[pos:end].strip()
        if line:
            try:
                entry = _parse(line)
            except ValueError as err:
                if not raw[end:].strip():
                    break  # the last line, cut short by a crash while appending: ignore it
                raise UserInputError(
                    f"{path}:{lineno}: corrupt judge cache entry ({err}); delete that line "
                    "(its request is simply judged again on the next run)"
                ) from None
            entries[entry.key] = entry
            valid_size = end
            needs_newline = not complete
        elif complete:
            valid_size = end
        pos = end
    return entries, valid_size, needs_newline


def _parse(line: bytes) -> CacheEntry:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"invalid JSON: {err}") from None
    if not isinstance(record, dict) or set(record) != set(_FIELDS):
        raise ValueError(f"expected the keys {', '.join(_FIELDS)}")
    top = record["top_logprobs"]
    score = record["score"]
    if not isinstance(top, dict) or not all(isinstance(v, (int, float)) for v in top.values()):
        raise ValueError("top_logprobs must map tokens to numbers")
    if score is not None and not isinstance(score, (int, float)):
        raise ValueError("score must be a number or null")
    if not isinstance(record["key"], str) or not isinstance(record["version"], int):
        raise ValueError("key must be a string and version an integer")
    return CacheEntry(
        key=record["key"],
        template=str(record["template"]),
        version=record["version"],
        model=str(record["model"]),
        top_logprobs={str(k): float(v) for k, v in top.items()},
        score=None if score is None else float(score),
        created=str(record["created"]),
    )
