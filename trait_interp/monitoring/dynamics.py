"""Per-token dynamics of a projection trajectory (1-D, over the response tokens).

Conventions (the reference only had velocity, in the dashboard: ``v_t = x_{t+1} - x_t``):

- ``smooth``: TRAILING (causal) moving average, ``s_t = mean(x[max(0, t-w+1) : t+1])``; the first
  ``w-1`` tokens average over the tokens seen so far. Causal, so a token's smoothed value never
  depends on later tokens (what a live monitor could show). ``window=1`` is the identity.
- ``velocity``: forward difference ``v_t = x_{t+1} - x_t``, same length as ``x``, NaN at the last
  token (there is no next token).
- ``acceleration``: velocity of the velocity, ``a_t = x_{t+2} - 2 x_{t+1} + x_t``, NaN at the last two.
- ``commitment_point``: first token ``t`` from which ``|velocity(smooth(x))|`` stays strictly below
  ``threshold`` up to the end of the response; 0 = committed from the start, None = never settles
  (the last velocity is above threshold) or fewer than 2 tokens (no velocity at all).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

KEYS = ("prompt_id", "layer", "trait", "method", "site")
TOKEN_COLUMNS = (*KEYS, "token_index", "smoothed", "velocity", "acceleration")  # = schemas.dynamics.Dynamics
TRAJECTORY_COLUMNS = (*KEYS, "n_tokens", "mean_projection", "commitment_token")  # = schemas.dynamics.Commitment


def _as_1d(x: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"a trajectory must be 1-D, got shape {array.shape}")
    return array


def smooth(x: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` tokens (shorter at the start); window 1 = identity."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"smoothing window must be an int >= 1, got {window!r}")
    array = _as_1d(x)
    if window == 1 or array.size == 0:
        return array.copy()
    cumsum = np.concatenate([[0.0], np.cumsum(array)])
    ends = np.arange(1, array.size + 1)
    starts = np.maximum(0, ends - window)
    return (cumsum[ends] - cumsum[starts]) / (ends - starts)


def velocity(x: Sequence[float] | np.ndarray) -> np.ndarray:
    """``v_t = x_{t+1} - x_t``; same length as ``x``, NaN at the last position."""
    array = _as_1d(x)
    out = np.full(array.shape, np.nan)
    out[:-1] = np.diff(array)
    return out


def acceleration(x: Sequence[float] | np.ndarray) -> np.ndarray:
    """``a_t = v_{t+1} - v_t = x_{t+2} - 2 x_{t+1} + x_t``; NaN at the last two positions."""
    return velocity(velocity(x))


def commitment_point(x: Sequence[float] | np.ndarray, window: int, threshold: float) -> int | None:
    """First index after which ``|velocity(smooth(x, window))| < threshold`` for the rest of ``x``."""
    if not threshold > 0:
        raise ValueError(f"commitment threshold must be > 0, got {threshold!r}")
    speed = np.abs(velocity(smooth(x, window))[:-1])  # the n-1 defined velocities
    if speed.size == 0:
        return None
    above = np.flatnonzero(~(speed < threshold))  # NaN counts as not settled
    if above.size == 0:
        return 0
    last = int(above[-1])
    return None if last == speed.size - 1 else last + 1


def dynamics_table(projections: pd.DataFrame, window: int, threshold: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dynamics of every response trajectory of a ``Projections`` table.

    A trajectory is one (prompt_id, layer, trait, method, site) over its response tokens, in
    ``token_index`` order. Returns ``(per_token, per_trajectory)`` with the columns of
    ``schemas.dynamics.Dynamics`` and ``schemas.dynamics.Commitment``; ``commitment_token`` is the
    ``token_index`` (position in prompt+response) of the commitment point, or missing.
    """
    smooth([0.0], window)  # validates window
    if not threshold > 0:
        raise ValueError(f"commitment threshold must be > 0, got {threshold!r}")
    response = projections.loc[projections["frame"] == "response", [*KEYS, "token_index", "projection"]]
    response = response.sort_values([*KEYS, "token_index"], kind="stable").reset_index(drop=True)
    group_id = response.groupby(list(KEYS), sort=False, observed=True).ngroup().to_numpy()
    changes = np.flatnonzero(np.diff(group_id)) + 1
    bounds = np.concatenate([[0], changes, [len(response)]]).astype(int) if len(response) else np.zeros(1, dtype=int)
    values = response["projection"].to_numpy(dtype=np.float64)
    index = response["token_index"].to_numpy(dtype=np.int64)
    smoothed = np.empty_like(values)
    speed = np.empty_like(values)
    accel = np.empty_like(values)
    n_tokens, means, commitment = [], [], []
    for start, end in zip(bounds[:-1], bounds[1:]):  # contiguous trajectories (sorted by key)
        x = values[start:end]
        smoothed[start:end] = smooth(x, window)
        speed[start:end] = velocity(smoothed[start:end])
        accel[start:end] = velocity(speed[start:end])
        point = commitment_point(x, window, threshold)
        n_tokens.append(end - start)
        means.append(float(x.mean()))
        commitment.append(pd.NA if point is None else int(index[start + point]))
    per_token = response[[*KEYS, "token_index"]].copy()
    per_token["smoothed"], per_token["velocity"], per_token["acceleration"] = smoothed, speed, accel
    per_trajectory = response.loc[bounds[:-1], list(KEYS)].reset_index(drop=True)
    per_trajectory["n_tokens"] = np.asarray(n_tokens, dtype=np.int64)
    per_trajectory["mean_projection"] = np.asarray(means, dtype=np.float64)
    per_trajectory["commitment_token"] = pd.array(commitment, dtype="Int64")
    return per_token[list(TOKEN_COLUMNS)], per_trajectory[list(TRAJECTORY_COLUMNS)]
