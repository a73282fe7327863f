"""Trajectory dynamics on hand-made arrays, and the per-token / per-trajectory tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from schemas.dynamics import Commitment, Dynamics
from trait_interp.monitoring.dynamics import (
    acceleration,
    commitment_point,
    dynamics_table,
    smooth,
    velocity,
)

NAN = np.nan


def test_smooth_is_a_trailing_moving_average():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    np.testing.assert_allclose(smooth(x, 3), [1.0, 1.5, 2.0, 3.0, 4.0])  # causal: only past tokens
    np.testing.assert_allclose(smooth(x, 1), x)
    np.testing.assert_allclose(smooth(x, 10), [1.0, 1.5, 2.0, 2.5, 3.0])  # window longer than the trajectory
    spike = smooth([0.0, 0.0, 9.0, 0.0, 0.0], 3)
    np.testing.assert_allclose(spike, [0.0, 0.0, 3.0, 3.0, 3.0])  # nothing before the spike moves
    assert smooth([], 3).size == 0
    with pytest.raises(ValueError, match="window"):
        smooth(x, 0)


def test_velocity_and_acceleration_are_forward_differences():
    x = [1.0, 4.0, 9.0, 16.0]
    np.testing.assert_allclose(velocity(x), [3.0, 5.0, 7.0, NAN])
    np.testing.assert_allclose(acceleration(x), [2.0, 2.0, NAN, NAN])
    np.testing.assert_allclose(velocity([2.0]), [NAN])
    np.testing.assert_allclose(acceleration([1.0, 3.0]), [NAN, NAN])
    with pytest.raises(ValueError, match="1-D"):
        velocity(np.zeros((2, 2)))


def test_commitment_point():
    # velocities 10, 10, 0.1, 0, 0 -> settled from token 2 on
    assert commitment_point([0.0, 10.0, 20.0, 20.1, 20.1, 20.1], window=1, threshold=0.5) == 2
    assert commitment_point([3.0, 3.0, 3.1, 3.0], window=1, threshold=0.5) == 0  # immediately
    assert commitment_point([0.0, 0.0, 0.0, 5.0], window=1, threshold=0.5) is None  # last step moves: never
    assert commitment_point([0.0, 1.0, 0.0, 1.0, 0.0], window=1, threshold=0.5) is None  # oscillates: never
    assert commitment_point([4.0], window=1, threshold=0.5) is None  # no velocity at all
    # a settle that is interrupted later does not count
    assert commitment_point([0.0, 0.0, 0.0, 5.0, 5.0, 5.0], window=1, threshold=0.5) == 3
    # the threshold is strict: |v| must be below it
    assert commitment_point([0.0, 0.5, 1.0], window=1, threshold=0.5) is None
    # smoothing: the oscillation averages out with window 2 (smoothed 0, .5, .5, .5, .5)
    assert commitment_point([0.0, 1.0, 0.0, 1.0, 0.0], window=2, threshold=0.1) == 1
    with pytest.raises(ValueError, match="threshold"):
        commitment_point([0.0, 1.0], window=1, threshold=0.0)


def _projections() -> pd.DataFrame:
    rows = []
    trajectories = {
        ("p0", 2, "evil"): (3, [0.0, 10.0, 20.0, 20.1, 20.1]),  # prompt of 3 tokens, commits at token 2 of 5
        ("p0", 2, "calm"): (3, [1.0, 1.0, 1.0, 1.0, 9.0]),  # never
        ("p1", 2, "evil"): (2, [5.0, 5.0, 5.0]),  # immediately
        ("p1", 0, "evil"): (2, [7.0]),  # one token: no velocity, no commitment
    }
    for (pid, layer, trait), (n_prompt, response) in trajectories.items():
        for t in range(n_prompt):
            rows.append((pid, "prompt", t, f"t{t}", layer, trait, "probe", "residual", 100.0 * t, 1.0))
        for i, x in enumerate(response):
            rows.append((pid, "response", n_prompt + i, f"r{i}", layer, trait, "probe", "residual", x, 1.0))
    columns = ["prompt_id", "frame", "token_index", "token", "layer", "trait", "method", "site", "projection", "token_norm"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # order must not matter


def test_dynamics_table():
    per_token, per_trajectory = dynamics_table(_projections(), window=1, threshold=0.5)
    Dynamics.validate(per_token)
    Commitment.validate(per_trajectory)
    assert list(per_token.columns) == list(Dynamics.to_schema().columns)
    assert list(per_trajectory.columns) == list(Commitment.to_schema().columns)
    assert len(per_token) == 5 + 5 + 3 + 1  # response tokens only
    evil = per_token[(per_token.prompt_id == "p0") & (per_token.trait == "evil")]
    assert evil.token_index.tolist() == [3, 4, 5, 6, 7]
    np.testing.assert_allclose(evil.velocity, [10.0, 10.0, 0.1, 0.0, NAN], atol=1e-9)
    np.testing.assert_allclose(evil.acceleration, [0.0, -9.9, -0.1, NAN, NAN], atol=1e-9)
    summary = per_trajectory.set_index(["prompt_id", "layer", "trait"])
    assert summary.loc[("p0", 2, "evil"), "commitment_token"] == 5  # token_index, not response offset
    assert pd.isna(summary.loc[("p0", 2, "calm"), "commitment_token"])
    assert summary.loc[("p1", 2, "evil"), "commitment_token"] == 2
    assert pd.isna(summary.loc[("p1", 0, "evil"), "commitment_token"])
    assert summary.loc[("p0", 2, "calm"), "n_tokens"] == 5
    assert summary.loc[("p0", 2, "calm"), "mean_projection"] == pytest.approx(2.6)  # prompt rows excluded
    assert str(per_trajectory.commitment_token.dtype) == "Int64"


def test_dynamics_table_smooths_before_differencing():
    per_token, per_trajectory = dynamics_table(_projections(), window=2, threshold=0.5)
    evil = per_token[(per_token.prompt_id == "p0") & (per_token.trait == "evil")]
    np.testing.assert_allclose(evil.smoothed, [0.0, 5.0, 15.0, 20.05, 20.1])
    np.testing.assert_allclose(evil.velocity, [5.0, 10.0, 5.05, 0.05, NAN])
    row = per_trajectory[(per_trajectory.prompt_id == "p0") & (per_trajectory.trait == "evil")]
    assert row.commitment_token.item() == 6


def test_no_response_tokens_gives_empty_tables():
    prompt_only = _projections().query("frame == 'prompt'")
    per_token, per_trajectory = dynamics_table(prompt_only, window=3, threshold=0.5)
    assert per_token.empty and per_trajectory.empty
    Dynamics.validate(per_token)
    Commitment.validate(per_trajectory)
