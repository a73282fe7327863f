"""The record of an intervention as run (``intervention.json``): every threshold resolved to a number.

Validated on write and on read like ``best.json``: an unknown or missing key, or a value of the wrong
type, is a one-line error naming the file. The dashboard reads it for the gate's threshold and the caps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from trait_interp.core.config import from_mapping
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import read_json, write_json
from trait_interp.steering.gating import GateMode, GateWhen
from trait_interp.steering.interventions import SteeringPositions


@dataclass(frozen=True)
class GateRecord:
    trait: str
    layer: int
    method: str
    site: str
    threshold: float
    threshold_from: str  # value | midpoint | p<percentile> of <prompt set>
    when: GateWhen
    mode: GateMode
    skip_first_token: bool


@dataclass(frozen=True)
class CapRecord:
    layer: int
    low: float | None
    high: float | None


@dataclass(frozen=True)
class InterventionRecord:
    """What an intervention stage ran, every threshold resolved to a number (field order = the file's)."""

    name: str
    kind: Literal["gated", "capped"]
    trait: str
    model: str
    method: str
    site: str
    positions: SteeringPositions
    layers: tuple[int, ...]
    coefficient: float | None  # gated: added at every steered layer where the gate is open
    gate: GateRecord | None
    caps: tuple[CapRecord, ...]
    low_from: str | None
    high_from: str | None
    prompt_set: str
    label: str
    trigger: str
    non_trigger: str


def write_record(path: Path, record: InterventionRecord) -> None:
    data = asdict(record)
    from_mapping(InterventionRecord, data, str(path))
    write_json(path, data)


def read_record(path: Path) -> InterventionRecord:
    try:
        return from_mapping(InterventionRecord, read_json(path), str(path))
    except UserInputError as err:
        raise UserInputError(f"{err}; re-run this intervention's stage") from None
