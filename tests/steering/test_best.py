"""best.json: the typed record steering writes and monitoring reads, checked on write and on read."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest

from trait_interp.core.errors import UserInputError
from trait_interp.steering.best import BestSteering, read_best, write_best

BEST = BestSteering(
    trait="emotion/optimism", model="toy-instruct", position="response[:5]", layers=(2,), method="probe",
    site="residual", positions="all", direction="positive", coefficient=3.5, ratio=0.7, trait_mean=64.0,
    coherence_mean=78.0, baseline_trait_mean=41.5, baseline_coherence_mean=82.0, delta=22.5, valid=True,
    min_coherence=70.0, activation_norm=5.0,
)


def test_round_trip_in_field_order(tmp_path):
    path = tmp_path / "best.json"
    write_best(path, BEST)
    assert read_best(path) == BEST
    data = json.loads(path.read_text())
    assert list(data) == list(asdict(BEST)) and data["layers"] == [2]


def test_unscored_steps_are_none_and_bad_values_are_refused(tmp_path):
    path = tmp_path / "best.json"
    write_best(path, replace(BEST, trait_mean=None, delta=None, valid=False))
    assert read_best(path).delta is None
    with pytest.raises(UserInputError, match="direction: 'up' is not one of"):
        write_best(path, replace(BEST, direction="up"))  # type: ignore[arg-type]
    path.write_text(json.dumps({**asdict(BEST), "layers": "2"}))
    with pytest.raises(UserInputError, match=r"best\.json.*layers: expected a list.*steering evaluation"):
        read_best(path)
