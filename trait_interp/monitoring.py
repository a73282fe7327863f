"""Monitoring settings and the layer choice per trait (the top-level ``layer`` param)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trait_interp.errors import UserInputError
from trait_interp.io import read_json
from trait_interp.layers import best_offset, normalize_layer, parse_layers
from trait_interp.projection import TraitVector
from trait_interp.vectors import load_vectors


@dataclass(frozen=True)
class MonitoringSettings:
    """``monitoring:`` in params."""

    method: str = "probe"
    site: str = "residual"
    batch_size: int = 8
    clean_massive_dims: Literal["none", "recommended", "top_k"] = "none"
    dynamics_window: int = 5  # trailing moving average before velocity / commitment
    commitment_threshold: float = 0.5  # |smoothed velocity| below this (projection units per token)


def monitor_layers(value: object, n_layers: int, trait: str, best_layer: Callable[[str], int]) -> tuple[int, ...]:
    """Layers to project ``trait`` on: an int, a list, ``all``, ``best`` or ``best+N`` / ``best-N``.

    ``best`` is the trait's best steering layer (``best.json`` of steering_eval); ``best_layer``
    raises a user error when the trait has no steering result.
    """
    offset = best_offset(value)
    if offset is not None:
        return (normalize_layer(best_layer(trait) + offset, n_layers, "layer"),)
    if isinstance(value, bool) or not isinstance(value, (int, str, list, tuple)):
        raise UserInputError(f"layer: '{value}' is not understood; use an int, a list, all, best or best+N")
    return parse_layers(list(value) if isinstance(value, (list, tuple)) else value, n_layers, "layer")


def monitor_vectors(
    vectors_root: Path,
    traits: Sequence[str],
    layer: object,
    n_layers: int,
    settings: MonitoringSettings,
    best_layer: Callable[[str], int],
) -> list[TraitVector]:
    """One TraitVector per (trait, chosen layer), read from ``<vectors_root>/<trait>/vectors``."""
    vectors = []
    for trait in traits:
        vector_set = load_vectors(Path(vectors_root) / trait / "vectors", settings.site, settings.method)
        for chosen in monitor_layers(layer, n_layers, trait, best_layer):
            vectors.append(TraitVector(trait, settings.method, settings.site, chosen, vector_set.layer(chosen)))
    return vectors


def steering_best_layer(steering_root: Path) -> Callable[[str], int]:
    """``layer: best`` for monitoring: the first layer of each trait's steering ``best.json``."""

    def best(trait: str) -> int:
        path = Path(steering_root) / trait / "best.json"
        if not path.is_file():
            raise UserInputError(f"{path}: layer: best needs a steering result for {trait}; run steering_eval first")
        return int(read_json(path)["layers"][0])

    return best
