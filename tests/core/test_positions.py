"""Tests for trait_interp.core.positions: hand-worked spans, Python's own slice semantics as the oracle."""

from __future__ import annotations

import itertools

import pytest

from trait_interp.core.errors import UserInputError
from trait_interp.core.positions import (
    Position,
    always_empty,
    parse_position,
    resolve_max_new_tokens,
    select_span,
    tokens_needed,
)

# --------------------------------------------------------------------------- hand-worked spans

# prompt = tokens 0..9, response = tokens 10..19.
PROMPT_LEN, SEQ_LEN = 10, 20


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # the reference system's verified examples
        ("response[:5]", (10, 15)),
        ("prompt[-1]", (9, 10)),
        ("response[-1]", (19, 20)),
        ("all[2:-2]", (2, 18)),
        # more, worked out by hand
        ("response[:]", (10, 20)),
        ("prompt[:]", (0, 10)),
        ("all[3]", (3, 4)),
        ("response[2:4]", (12, 14)),
        ("response[0]", (10, 11)),
        ("response[-2]", (18, 19)),
        ("prompt[0]", (0, 1)),
        ("prompt[-3:]", (7, 10)),
        ("all[-1]", (19, 20)),
        ("all[:]", (0, 20)),
        ("response[-3:-1]", (17, 19)),
        ("response[:100]", (10, 20)),  # clamped
        ("prompt[5:100]", (5, 10)),  # clamped to the prompt frame
    ],
)
def test_select_span_hand_worked(spec: str, expected: tuple[int, int]) -> None:
    assert select_span(parse_position(spec), PROMPT_LEN, SEQ_LEN) == expected


@pytest.mark.parametrize(
    ("spec", "prompt_len", "seq_len"),
    [
        ("response[:5]", 10, 10),  # no response at all
        ("response[-1]", 10, 10),
        ("response[15]", 10, 20),  # index past the end of the response
        ("response[-11]", 10, 20),  # index before the start of the response
        ("prompt[12]", 10, 20),  # never spills into the response
    ],
)
def test_select_span_empty(spec: str, prompt_len: int, seq_len: int) -> None:
    start, end = select_span(parse_position(spec), prompt_len, seq_len)
    assert start == end


@pytest.mark.parametrize("position", [Position("response", 5, 3), Position("all", None, 0)])
def test_select_span_empty_slices(position: Position) -> None:
    """Always-empty slices (rejected by parse_position) still select nothing, never something odd."""
    start, end = select_span(position, 10, 20)
    assert start == end


@pytest.mark.parametrize(("prompt_len", "seq_len"), [(-1, 5), (6, 5)])
def test_select_span_rejects_inconsistent_lengths(prompt_len: int, seq_len: int) -> None:
    with pytest.raises(ValueError):
        select_span(parse_position("all[:]"), prompt_len, seq_len)


# --------------------------------------------------------------------------- property vs Python


def _frame_bounds(frame: str, prompt_len: int, seq_len: int) -> tuple[int, int]:
    return {"prompt": (0, prompt_len), "response": (prompt_len, seq_len), "all": (0, seq_len)}[frame]


def _check_against_python(spec: str, expected_indices: list[int], prompt_len: int, seq_len: int,
                          position: Position | None = None) -> None:
    start, end = select_span(position or parse_position(spec), prompt_len, seq_len)
    lo, hi = _frame_bounds(spec.split("[")[0], prompt_len, seq_len)
    assert start <= end, spec
    assert lo <= start and end <= hi, (spec, prompt_len, seq_len, (start, end))
    assert list(range(start, end)) == expected_indices, (spec, prompt_len, seq_len, (start, end))


BOUNDS = [None, *range(-7, 8)]
LENGTHS = [(p, s) for p in range(0, 5) for s in range(p, p + 5)]


@pytest.mark.parametrize("frame", ["prompt", "response", "all"])
def test_slices_match_python(frame: str) -> None:
    """Every slice [a:b] of every small frame selects what list(range(...))[a:b] selects."""
    n_checked = n_empty = 0
    for prompt_len, seq_len in LENGTHS:
        lo, hi = _frame_bounds(frame, prompt_len, seq_len)
        tokens = list(range(lo, hi))
        for a, b in itertools.product(BOUNDS, BOUNDS):
            spec = f"{frame}[{'' if a is None else a}:{'' if b is None else b}]"
            expected = tokens[a:b]
            position = Position(frame, a, b)  # type: ignore[arg-type]
            _check_against_python(spec, expected, prompt_len, seq_len, position)
            if always_empty(position):  # rejected when parsed: empty for every length
                assert expected == []
            else:
                assert parse_position(spec) == position
            n_checked += 1
            n_empty += not expected
    assert n_checked == len(LENGTHS) * len(BOUNDS) ** 2
    assert 0 < n_empty < n_checked  # both kinds were exercised


@pytest.mark.parametrize("frame", ["prompt", "response", "all"])
def test_single_index_matches_python(frame: str) -> None:
    """[i] is the token list[i] when it exists, else an empty selection (never an IndexError)."""
    for prompt_len, seq_len in LENGTHS:
        lo, hi = _frame_bounds(frame, prompt_len, seq_len)
        tokens = list(range(lo, hi))
        for i in range(-7, 8):
            expected = [tokens[i]] if -len(tokens) <= i < len(tokens) else []
            _check_against_python(f"{frame}[{i}]", expected, prompt_len, seq_len)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "spec",
    [
        "response[5",
        "resp[:5]",
        "response[]",
        "response[::2]",
        "response[1:5:1]",
        "response[a:b]",
        "response[-]",
        "response[-:3]",
        "response[:-]",
        "response[1.5]",
        "response",
        "Response[:5]",
        "tokens[:5]",
        "response(:5)",
        "",
        "response[:5]x",
    ],
)
def test_parse_rejects_malformed(spec: str) -> None:
    with pytest.raises(UserInputError):
        parse_position(spec)


@pytest.mark.parametrize(
    ("spec", "frame", "start", "stop"),
    [
        ("response[:5]", "response", None, 5),
        ("prompt[-1]", "prompt", -1, None),
        ("all[2:-2]", "all", 2, -2),
        ("response[:]", "response", None, None),
        ("response[3]", "response", 3, 4),
        ("response[-2]", "response", -2, -1),
        (" response[ 2 : 4 ] ", "response", 2, 4),
    ],
)
def test_parse_fields(spec: str, frame: str, start: int | None, stop: int | None) -> None:
    # a slice with these fields selects what the spec means under Python semantics
    assert parse_position(spec) == Position(frame, start, stop)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [
        "response[:5]",
        "prompt[-1]",
        "response[-1]",
        "all[2:-2]",
        "response[:]",
        "prompt[:]",
        "all[3]",
        "response[2:4]",
        "response[-3:]",
        "prompt[0]",
        "response[-2]",
        "all[:-1]",
    ],
)
def test_str_round_trips(spec: str) -> None:
    position = parse_position(spec)
    again = parse_position(str(position))
    assert again == position
    for prompt_len, seq_len in LENGTHS:
        assert select_span(again, prompt_len, seq_len) == select_span(position, prompt_len, seq_len)


# --------------------------------------------------------------------------- tokens_needed


@pytest.mark.parametrize(
    ("spec", "needed"),
    [
        ("response[:5]", 5),  # the reference system generated 16 here
        ("response[2:7]", 7),
        ("response[3]", 4),
        ("response[0]", 1),
        ("prompt[-1]", 0),
        ("prompt[:]", 0),
        ("response[:]", None),
        ("response[-1]", None),
        ("response[-3:]", None),
        ("response[2:]", None),
        ("response[:-1]", None),
        ("all[2:-2]", None),
    ],
)
def test_tokens_needed(spec: str, needed: int | None) -> None:
    assert tokens_needed(parse_position(spec)) == needed


def _response_selection(position: Position, prompt_len: int, response_len: int) -> tuple[int, ...]:
    """The selected token indices (all empty selections are the same selection)."""
    return tuple(range(*select_span(position, prompt_len, prompt_len + response_len)))


@pytest.mark.parametrize("frame", ["prompt", "response"])
def test_tokens_needed_is_sufficient_and_minimal(frame: str) -> None:
    """With ``need`` response tokens the selection is final (more tokens change nothing), and for a
    non-empty selection ``need - 1`` tokens are not enough; an open-ended position keeps changing."""
    prompt_len = 4
    horizon = 30
    for a, b in itertools.product(BOUNDS, BOUNDS):
        position = Position(frame, a, b)  # type: ignore[arg-type]
        final = _response_selection(position, prompt_len, horizon)
        selections = {_response_selection(position, prompt_len, n) for n in range(horizon + 1)}
        need = tokens_needed(position)
        if need is not None:
            for n in range(need, horizon + 1):
                assert _response_selection(position, prompt_len, n) == final, (position, n)
            if final and need > 0:
                assert _response_selection(position, prompt_len, need - 1) != final, (position, need)
        elif final:
            # None is only right when no finite length fixes the selection
            assert len(selections) > 1, position
            assert _response_selection(position, prompt_len, horizon - 1) != final, position


# --------------------------------------------------------------------------- resolve_max_new_tokens


def test_resolve_auto_uses_the_need() -> None:
    assert resolve_max_new_tokens(parse_position("response[:5]"), None) == 5
    assert resolve_max_new_tokens(parse_position("response[3]"), None) == 4
    assert resolve_max_new_tokens(parse_position("prompt[-1]"), None) == 0


def test_resolve_explicit_below_need_is_an_error() -> None:
    with pytest.raises(UserInputError, match="max_new_tokens"):
        resolve_max_new_tokens(parse_position("response[:5]"), 4)


@pytest.mark.parametrize("spec", ["response[:]", "response[-1]", "all[2:-2]"])
def test_resolve_auto_open_ended_is_an_error(spec: str) -> None:
    with pytest.raises(UserInputError, match=r"generation\.max_new_tokens"):
        resolve_max_new_tokens(parse_position(spec), None)


@pytest.mark.parametrize(
    ("spec", "requested"),
    [("response[:5]", 5), ("response[:5]", 32), ("response[:]", 7), ("response[-1]", 1), ("prompt[-1]", 0)],
)
def test_resolve_explicit_at_least_need_is_kept(spec: str, requested: int) -> None:
    assert resolve_max_new_tokens(parse_position(spec), requested) == requested
