"""Monitoring settings and which vectors monitoring projects on: per trait, the chosen layers.

``monitoring.layer`` is monitoring's own layer choice (the top-level ``layer`` is steering's): an
int, a list, ``all``, or ``best`` / ``best+N`` / ``best-N``, where ``best`` is each trait's own best
steering layer, so different traits may be projected at different layers. ``choose_layers`` turns
the choice into ``{trait: layers}``, which a stage writes as a small record; the projection reads
that record, so it re-runs when the chosen layers change, not whenever steering re-runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trait_interp.core.batching import BatchSize
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import read_json, write_json
from trait_interp.core.layers import parse_layer_choice
from trait_interp.extraction.vectors import load_vectors
from trait_interp.monitoring.massive_dims import CleanMode
from trait_interp.monitoring.projection import TraitVector
from trait_interp.steering.best import read_best

LayerChoice = int | str | tuple[int, ...]


@dataclass(frozen=True)
class MonitoringSettings:
    """``monitoring:`` in params."""

    layer: LayerChoice = "best"  # per trait: an int, a list, all, best (its best steering layer), best+N
    method: str = "probe"
    site: str = "residual"
    batch_size: BatchSize = 8
    clean_massive_dims: CleanMode = "none"
    dynamics_window: int = 5  # trailing moving average before velocity / commitment
    commitment_threshold: float = 0.5  # |smoothed velocity| below this (projection units per token)


def choose_layers(
    traits: Sequence[str], choice: object, n_layers: int, best_layer: Callable[[str], int], param: str = "monitoring.layer"
) -> dict[str, tuple[int, ...]]:
    """``{trait: layers}`` for a layer choice; ``best_layer(trait)`` is asked only for ``best``."""
    return {
        str(trait): parse_layer_choice(choice, n_layers, lambda t=str(trait): best_layer(t), param, allow_all=True)
        for trait in traits
    }


def monitor_vectors(
    vector_dirs: Mapping[str, Path], layers: Mapping[str, Sequence[int]], settings: MonitoringSettings
) -> list[TraitVector]:
    """One TraitVector per (trait, chosen layer), read from each trait's vectors folder (trait -> folder)."""
    vectors = []
    for trait, folder in vector_dirs.items():
        if trait not in layers:
            raise UserInputError(f"no layers chosen for trait {trait}; choose the monitoring layers again (dvc repro)")
        vector_set = load_vectors(folder, settings.site, settings.method)
        for chosen in layers[trait]:
            vectors.append(TraitVector(trait, settings.method, settings.site, int(chosen), vector_set.layer(int(chosen))))
    return vectors


def steering_best_layer(best_files: Mapping[str, Path]) -> Callable[[str], int]:
    """``layer: best`` for monitoring: the first layer of each trait's steering result (trait -> best.json)."""

    def best(trait: str) -> int:
        path = Path(best_files[trait])
        if not path.is_file():
            raise UserInputError(f"{path}: layer: best needs a steering result for {trait}; steer it first (dvc repro)")
        return int(read_best(path).layers[0])

    return best


def write_layers(path: Path, choice: object, layers: Mapping[str, Sequence[int]]) -> None:
    """The layer record: the choice as written in params and the layers it gave each trait."""
    write_json(path, {"choice": choice, "layers": {trait: list(values) for trait, values in layers.items()}})


def read_layers(path: Path) -> dict[str, tuple[int, ...]]:
    data = read_json(path)
    chosen = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(chosen, dict) or not all(
        isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v) for v in chosen.values()
    ):
        raise UserInputError(f"{path}: not a monitoring layer record; choose the monitoring layers again (dvc repro)")
    return {str(trait): tuple(values) for trait, values in chosen.items()}
