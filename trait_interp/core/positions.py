"""Token positions: ``prompt[...]``, ``response[...]``, ``all[...]`` with Python slice syntax.

Frames, for an example whose prompt has ``prompt_len`` tokens and whose prompt+response has
``seq_len`` tokens: ``prompt`` = [0, prompt_len), ``response`` = [prompt_len, seq_len),
``all`` = [0, seq_len). The slice is applied inside the frame with Python semantics (clamped);
``[i]`` means the single token i (``[-1]`` = the last). Selected tokens are pooled by mean.
An empty selection is reported by the caller, never silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from trait_interp.core.errors import UserInputError

Frame = Literal["prompt", "response", "all"]
_POSITION = re.compile(r"^(prompt|response|all)\[(-?\d*)(?:(:)(-?\d*))?\]$")


@dataclass(frozen=True)
class Position:
    frame: Frame
    start: int | None
    stop: int | None

    def __str__(self) -> str:
        s = "" if self.start is None else str(self.start)
        e = "" if self.stop is None else str(self.stop)
        return f"{self.frame}[{s}:{e}]"


def parse_position(spec: str, param: str = "extraction.position") -> Position:
    """Parse ``response[:5]``, ``prompt[-1]``, ``all[2:-2]``...; malformed specs are errors naming ``param``.

    A slice that is empty whatever the lengths (``response[3:1]``, ``response[:0]``) is rejected here:
    it would select no token of any example.
    """
    match = _POSITION.match(spec.strip().replace(" ", ""))
    if match is None:
        raise UserInputError(
            f"{param}: malformed position '{spec}'; use frame[slice] with frame prompt|response|all, "
            "e.g. response[:5], response[:], prompt[-1], all[2:-2]"
        )
    frame, first, colon, second = match.groups()
    if colon is None:
        if first in ("", "-"):
            raise UserInputError(f"{param}: malformed position '{spec}': an index is needed inside []")
        index = int(first)
        return Position(frame, index, index + 1 if index != -1 else None)  # type: ignore[arg-type]
    position = Position(frame, _int_or_none(first, spec, param), _int_or_none(second, spec, param))  # type: ignore[arg-type]
    if always_empty(position):
        raise UserInputError(
            f"{param}: position '{spec}' selects no token of any example (the slice is empty); "
            "use a slice with stop after start, e.g. response[:5] or response[1:3]"
        )
    return position


def always_empty(position: Position) -> bool:
    """True when the slice selects nothing for every frame length: ``[:0]``, ``[3:1]``, ``[-1:-3]``."""
    start, stop = position.start, position.stop
    if stop is None:
        return False
    if stop == 0 or start is None:
        return stop == 0
    return (start >= 0) == (stop >= 0) and stop <= start


def _int_or_none(text: str, spec: str, param: str) -> int | None:
    if text == "":
        return None
    if text == "-":
        raise UserInputError(f"{param}: malformed position '{spec}'")
    return int(text)


def select_span(position: Position, prompt_len: int, seq_len: int) -> tuple[int, int]:
    """Absolute [start, end) token span of ``position`` for one example (may be empty)."""
    if not 0 <= prompt_len <= seq_len:
        raise ValueError(f"need 0 <= prompt_len ({prompt_len}) <= seq_len ({seq_len})")
    lo, hi = {"prompt": (0, prompt_len), "response": (prompt_len, seq_len), "all": (0, seq_len)}[
        position.frame
    ]
    start, stop, _ = slice(position.start, position.stop).indices(hi - lo)
    return lo + start, lo + max(start, stop)


def tokens_needed(position: Position) -> int | None:
    """New tokens a generation must produce for ``position``; None when the slice is open-ended.

    ``response[:5]`` needs 5 (the reference system generated 16 here: a bug not to repeat),
    ``prompt[...]`` needs 0.
    """
    if position.frame == "prompt":
        return 0
    if position.frame == "response":
        start_ok = position.start is None or position.start >= 0
        if start_ok and position.stop is not None and position.stop > 0:
            return position.stop
    return None


def resolve_max_new_tokens(position: Position, requested: int | None) -> int:
    """Combine what the position needs with the user's ``max_new_tokens`` (None = auto)."""
    needed = tokens_needed(position)
    if requested is None:
        if needed is None:
            raise UserInputError(
                f"position '{position}' does not bound the response length; "
                "set generation.max_new_tokens to an integer"
            )
        return needed
    if needed is not None and requested < needed:
        raise UserInputError(
            f"generation.max_new_tokens={requested} is less than the {needed} tokens position "
            f"'{position}' needs; raise it or set it to auto"
        )
    return requested
