"""The best-steering record (``best.json``): what the steering evaluation chose for a trait, read by monitoring.

Validated on write and on read like the tables: an unknown or missing key, or a value of the wrong
type, is a one-line error naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trait_interp.core.records import read_record, write_record
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
    write_record(path, record)


def read_best(path: Path) -> BestSteering:
    return read_record(BestSteering, path, "no steering result; steer this trait first (dvc repro)",
                       "re-run this trait's steering evaluation")
