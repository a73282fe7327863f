"""The one layer-index convention, written once.

Layer ``i`` is the output of decoder block ``i``, 0-based (= HF ``hidden_states[i + 1]``, except
for the last block, whose ``hidden_states`` entry has the final norm applied). Negative indices
count from the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from trait_interp.core.errors import UserInputError


def _named(param: str | None) -> str:
    return f"{param}: " if param else ""


def normalize_layer(layer: int, n_layers: int, param: str | None = None) -> int:
    """Map ``-1`` to ``n_layers - 1`` etc.; out of range is a user error naming ``param`` (e.g. ``layer``)."""
    if not -n_layers <= layer < n_layers:
        raise UserInputError(
            f"{_named(param)}layer {layer} is out of range for a model with {n_layers} layers "
            f"(use 0..{n_layers - 1} or -{n_layers}..-1)"
        )
    return layer % n_layers


def parse_layers(spec: str | int | Sequence[int], n_layers: int, param: str | None = None) -> tuple[int, ...]:
    """``all``, an int, a list of ints, or ``a:b`` (Python range) -> sorted unique layer indices.

    ``param`` (e.g. ``extraction.layers``) names the setting in error messages.
    """
    named = _named(param)
    if isinstance(spec, bool):
        raise UserInputError(f"{named}invalid layers spec {spec!r}")
    if isinstance(spec, int):
        return (normalize_layer(spec, n_layers, param),)
    if isinstance(spec, str):
        text = spec.strip()
        if text == "all":
            return tuple(range(n_layers))
        if ":" in text:
            parts = text.split(":")
            try:
                bounds = [int(p) if p else None for p in parts]
            except ValueError:
                raise UserInputError(f"{named}invalid layers spec '{spec}'; use all, 5, [2, 3] or 2:6") from None
            selected = range(n_layers)[slice(*bounds)]
            if not selected:
                raise UserInputError(f"{named}layers spec '{spec}' selects no layer of {n_layers}")
            return tuple(selected)
        try:
            return (normalize_layer(int(text), n_layers, param),)
        except ValueError:
            raise UserInputError(f"{named}invalid layers spec '{spec}'; use all, 5, [2, 3] or 2:6") from None
    layers = sorted({normalize_layer(int(x), n_layers, param) for x in spec})
    if not layers:
        raise UserInputError(f"{named}layers list is empty; name at least one layer or use all")
    return tuple(layers)


def best_offset(spec: object) -> int | None:
    """``best`` -> 0, ``best+2`` -> 2, ``best-1`` -> -1; None when ``spec`` does not name ``best``."""
    if not isinstance(spec, str) or not spec.replace(" ", "").startswith("best"):
        return None
    text = spec.replace(" ", "")[4:]
    try:
        return int(text) if text else 0
    except ValueError:
        raise UserInputError(f"layer: '{spec}' is not understood; use an int, a list, best or best+N") from None


def parse_layer_choice(
    value: object, n_layers: int, best_layer: Callable[[], int], param: str = "layer", allow_all: bool = True
) -> tuple[int, ...]:
    """A layer choice param: an int, a list, ``best`` / ``best+N`` / ``best-N``, or (``allow_all``) ``all``.

    ``best_layer()`` gives the layer ``best`` stands for (it raises a user error when there is none);
    it is called only when the choice names ``best``. ``param`` names the param in messages.
    """
    offset = best_offset(value)
    if offset is not None:
        return (normalize_layer(best_layer() + offset, n_layers, param),)
    allowed = "an int, a list, all, best or best+N" if allow_all else "an int, a list, best, or best+N"
    if isinstance(value, bool) or not isinstance(value, (int, str, list, tuple)) or (isinstance(value, str) and not allow_all):
        raise UserInputError(f"{param}: '{value}' is not understood; use {allowed}")
    return parse_layers(list(value) if isinstance(value, (list, tuple)) else value, n_layers, param)
