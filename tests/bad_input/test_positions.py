"""Empty position slices (``response[3:1]``, ``response[:0]``) are rejected when parsed, naming extraction.position.

They used to pass and give empty activations much later; ``response[:0]`` was even blamed on
``generation.max_new_tokens``.
"""

from __future__ import annotations

import itertools

import pytest

from tests.bad_input_toy import toy_models
from tests.pipeline.test_stages import _fails, invoke, make_params, write_trait
from trait_interp.core.positions import (
    Position,
    always_empty,
    parse_position,
    select_span,
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("positions")
    toy_models(tmp)
    return tmp


EMPTY = ["response[3:1]", "response[:0]", "response[2:2]", "prompt[-1:-3]", "all[0:0]", "response[:-0]"]


@pytest.mark.parametrize("position", EMPTY)
def test_generate_responses_rejects_an_empty_slice_naming_the_param(toy, tmp_path, position):
    pos, neg = write_trait(tmp_path, n=4)
    params = make_params(tmp_path, toy, **{"extraction.position": position})
    out = tmp_path / "out/responses.jsonl"
    result = invoke("generate-responses", "--trait", "behavior/refusal", "--positive", pos, "--negative", neg,
                    "--out", out, "--params", params)
    _fails(result, f"extraction.position: position '{position}' selects no token of any example")
    assert "max_new_tokens" not in result.output  # response[:0] used to be blamed on generation.max_new_tokens
    assert not out.parent.exists()


def test_capture_activations_rejects_an_empty_slice_before_loading(toy, tmp_path):
    params = make_params(tmp_path, toy, **{"extraction.position": "response[3:1]"})
    out = tmp_path / "acts"
    result = invoke("capture-activations", "--responses", tmp_path / "none.jsonl", "--out", out, "--params", params)
    _fails(result, "extraction.position: position 'response[3:1]' selects no token")
    assert not out.exists()


def test_malformed_positions_name_the_param():
    from trait_interp.core.errors import UserInputError

    with pytest.raises(UserInputError, match=r"^extraction\.position: malformed position 'response\[5'"):
        parse_position("response[5")


def test_only_slices_empty_for_every_length_are_rejected():
    """Rejected slices select nothing at any frame length; every accepted one selects something at some length."""
    bounds = [None, *range(-9, 10)]
    for frame, a, b in itertools.product(("prompt", "response", "all"), bounds, bounds):
        position = Position(frame, a, b)  # type: ignore[arg-type]
        lengths = range(0, 30)
        sizes = [len(range(30)[:n][a:b]) for n in lengths]
        assert always_empty(position) == (max(sizes) == 0), (position, sizes)
        spans = [select_span(position, 0, n) if frame != "prompt" else select_span(position, n, n) for n in lengths]
        assert [end - start for start, end in spans] == sizes
