"""Monitoring settings and which vectors monitoring projects on: per trait, the chosen layers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from trait_interp.core.batching import BatchSize
from trait_interp.core.errors import UserInputError
from trait_interp.core.layers import parse_layer_choice
from trait_interp.extraction.vectors import load_vectors
from trait_interp.monitoring.massive_dims import CleanMode
from trait_interp.monitoring.projection import TraitVector
from trait_interp.steering.best import read_best


@dataclass(frozen=True)
class MonitoringSettings:
    """``monitoring:`` in params."""

    method: str = "probe"
    site: str = "residual"
    batch_size: BatchSize = 8
    clean_massive_dims: CleanMode = "none"
    dynamics_window: int = 5  # trailing moving average before velocity / commitment
    commitment_threshold: float = 0.5  # |smoothed velocity| below this (projection units per token)


def monitor_vectors(
    vector_dirs: Mapping[str, Path],
    layer: object,
    n_layers: int,
    settings: MonitoringSettings,
    best_layer: Callable[[str], int],
) -> list[TraitVector]:
    """One TraitVector per (trait, chosen layer), read from each trait's vectors folder (trait -> folder).

    ``layer``: an int, a list, ``all``, ``best`` or ``best+N`` / ``best-N``, where ``best`` is the
    trait's best steering layer (``best_layer(trait)``, which raises a user error when there is none).
    """
    vectors = []
    for trait, folder in vector_dirs.items():
        vector_set = load_vectors(folder, settings.site, settings.method)
        for chosen in parse_layer_choice(layer, n_layers, lambda t=trait: best_layer(t), "layer", allow_all=True):
            vectors.append(TraitVector(trait, settings.method, settings.site, chosen, vector_set.layer(chosen)))
    return vectors


def steering_best_layer(best_files: Mapping[str, Path]) -> Callable[[str], int]:
    """``layer: best`` for monitoring: the first layer of each trait's steering result (trait -> best.json)."""

    def best(trait: str) -> int:
        path = Path(best_files[trait])
        if not path.is_file():
            raise UserInputError(f"{path}: layer: best needs a steering result for {trait}; steer it first (dvc repro)")
        return int(read_best(path).layers[0])

    return best

