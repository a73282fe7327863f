"""The best-steering record (``best.json``): what the steering evaluation chose for a trait, read by monitoring.

Validated on write and on read like the tables: an unknown or missing key, or a value of the wrong
type, is a one-line error naming the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from trait_interp.core.config import from_mapping
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import read_json, write_json
from trait_interp.steering.coefficient_search import Direction
from trait_interp.steering.interventions import SteeringPositions


@dataclass(frozen=True)
class BestSteering:
    """The chosen step of one trait's steering search, with its baseline (field order = the file's)."""

    trait: str
    model: str  # the application model's key in params
    position: str  # the extraction position the vectors were fitted at
    layers: tuple[int, ...]  # steered together with one coefficient
    method: str
    site: str
    positions: SteeringPositions
    direction: Direction
    coefficient: float
    ratio: float  # coefficient / activation_norm
    trait_mean: float | None
    coherence_mean: float | None
    baseline_trait_mean: float | None
    baseline_coherence_mean: float | None
    delta: float | None  # trait_mean - baseline_trait_mean
    valid: bool  # coherence_mean >= min_coherence
    min_coherence: float
    activation_norm: float  # mean ||h|| at the steered layers and positions


def write_best(path: Path, record: BestSteering) -> None:
    data = asdict(record)
    from_mapping(BestSteering, data, str(path))  # the same checks a reader makes
    write_json(path, data)  # tuples are written as JSON lists


def read_best(path: Path) -> BestSteering:
    data = read_json(path)
    try:
        return from_mapping(BestSteering, data, str(path))
    except UserInputError as err:
        raise UserInputError(f"{err}; re-run this trait's steering evaluation") from None
