"""The layer-index convention (normalize_layer), layer specs (parse_layers) and layer choices with best."""

from __future__ import annotations

import pytest

from trait_interp.core.errors import UserInputError
from trait_interp.core.layers import (
    best_offset,
    normalize_layer,
    parse_layer_choice,
    parse_layers,
)


@pytest.mark.parametrize("n_layers", [1, 4, 7])
def test_normalize_layer_matches_python_indexing(n_layers: int) -> None:
    layers = list(range(n_layers))
    for i in range(-n_layers, n_layers):
        assert normalize_layer(i, n_layers) == layers[i]


def test_normalize_layer_examples() -> None:
    assert normalize_layer(-1, 4) == 3
    assert normalize_layer(0, 4) == 0
    assert normalize_layer(3, 4) == 3
    assert normalize_layer(-4, 4) == 0


@pytest.mark.parametrize("layer", [4, -5, 100])
def test_normalize_layer_out_of_range(layer: int) -> None:
    with pytest.raises(UserInputError) as err:
        normalize_layer(layer, 4)
    message = str(err.value)
    assert str(layer) in message
    assert "0..3" in message and "-4..-1" in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all", (0, 1, 2, 3)),
        (" all ", (0, 1, 2, 3)),
        ("1:3", tuple(range(4)[1:3])),
        (":2", tuple(range(4)[:2])),
        ("-2:", tuple(range(4)[-2:])),
        ("0:4:2", tuple(range(4)[0:4:2])),
        ("1:100", tuple(range(4)[1:100])),
        ([3, -1, 0], (0, 3)),
        ((2, 1), (1, 2)),
        ([-4], (0,)),
        (2, (2,)),
        (-1, (3,)),
        ("2", (2,)),
        ("-1", (3,)),
    ],
)
def test_parse_layers(spec: object, expected: tuple[int, ...]) -> None:
    assert parse_layers(spec, 4) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", [7, -5, "7", "x", "1:x", "a:b", "3:1", "2:2", [], [0, 4], True, "", "1;3"])
def test_parse_layers_errors(spec: object) -> None:
    with pytest.raises(UserInputError):
        parse_layers(spec, 4)  # type: ignore[arg-type]


def test_parse_layers_out_of_range_mentions_range() -> None:
    with pytest.raises(UserInputError, match=r"0\.\.3"):
        parse_layers(7, 4)


@pytest.mark.parametrize(("spec", "offset"), [("best", 0), ("best+2", 2), ("best - 1", -1), (3, None), ("all", None)])
def test_best_offset(spec: object, offset: int | None) -> None:
    assert best_offset(spec) == offset


def test_layer_choice_best_is_asked_only_when_named() -> None:
    asked: list[int] = []

    def best() -> int:
        asked.append(1)
        return 2

    assert parse_layer_choice("best", 4, best) == (2,) and parse_layer_choice("best+1", 4, best) == (3,)
    assert parse_layer_choice([0, 3], 4, best) == (0, 3) and parse_layer_choice(-1, 4, best) == (3,)
    assert len(asked) == 2
    with pytest.raises(UserInputError, match="out of range"):
        parse_layer_choice("best+2", 4, best)


def test_all_only_where_allowed_and_messages_name_the_param() -> None:
    assert parse_layer_choice("all", 3, lambda: 0) == (0, 1, 2)
    with pytest.raises(UserInputError, match=r"^steering\.layer: 'all' is not understood; use an int, a list, best"):
        parse_layer_choice("all", 3, lambda: 0, "steering.layer", allow_all=False)
    with pytest.raises(UserInputError, match=r"^layer: 'True' is not understood"):
        parse_layer_choice(True, 3, lambda: 0)
