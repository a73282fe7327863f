"""Correlation between traits: of per-response means, and of token trajectories at a lag.

Both return a long-form matrix over all ordered trait pairs, the diagonal included (at lag 0
it is 1; at other lags it is the trait's autocorrelation). ``r`` is NaN when fewer than 2 pairs
exist or either side is constant.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two equal-length 1-D arrays; NaN if n < 2 or either is constant."""
    if x.size < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    if denom == 0.0:
        return float("nan")
    return float(np.clip((dx * dy).sum() / denom, -1.0, 1.0))


def _select(df: pd.DataFrame, layer: int, method: str, site: str) -> pd.DataFrame:
    rows = df[(df["layer"] == layer) & (df["method"] == method) & (df["site"] == site)]
    if rows.empty:
        raise ValueError(f"no rows for layer {layer}, method {method!r}, site {site!r}")
    return rows


def _pair_r(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """r and n over the positions where both x and y are present (not NaN)."""
    both = ~(np.isnan(x) | np.isnan(y))
    return pearson(x[both], y[both]), int(both.sum())


def response_correlation(means_df: pd.DataFrame, layer: int, method: str, site: str) -> pd.DataFrame:
    """Pearson r between traits of the per-response mean projections (from ``response_means``).

    Each pair uses the prompts that have a mean for both traits. Columns: trait_a, trait_b, r, n.
    """
    rows = _select(means_df, layer, method, site)
    wide = rows.pivot(index="prompt_id", columns="trait", values="mean_projection")  # [prompts, traits]
    traits = sorted(wide.columns)
    records = []
    for ta in traits:
        for tb in traits:
            r, n = _pair_r(wide[ta].to_numpy(dtype=float), wide[tb].to_numpy(dtype=float))
            records.append({"trait_a": ta, "trait_b": tb, "r": r, "n": n})
    return pd.DataFrame.from_records(records, columns=["trait_a", "trait_b", "r", "n"])


def _trajectories(rows: pd.DataFrame, traits: list[str]) -> list[np.ndarray]:
    """Per prompt: ``[n_positions, n_traits]`` over token_index min..max, NaN where a trait lacks a token."""
    out = []
    for _, prompt_rows in rows.groupby("prompt_id", sort=True):
        wide = prompt_rows.pivot(index="token_index", columns="trait", values="projection")
        full = pd.RangeIndex(int(wide.index.min()), int(wide.index.max()) + 1)
        out.append(wide.reindex(index=full, columns=traits).to_numpy(dtype=float))
    return out


def lagged_correlation(
    projections_df: pd.DataFrame, layer: int, method: str, site: str, max_lag: int = 10, frame: str = "response"
) -> pd.DataFrame:
    """Pearson r of trait_a at token t against trait_b at token t + lag, for lag in -max_lag..max_lag.

    Sign convention: a positive lag means trait_b is read ``lag`` tokens *after* trait_a, so if
    trait_b's trajectory repeats trait_a's 3 tokens later (b[t] = a[t-3]), r peaks at lag +3; and
    r(a, b, lag) = r(b, a, -lag). Pairs are formed within each response only (a response shorter
    than |lag| + 1 tokens adds none) and pooled over responses before computing one r. Tokens are
    matched by token_index, so a gap in the table is never bridged. Prompt ids may be any string.

    Columns: trait_a, trait_b, lag, r, n (the number of pooled token pairs).
    """
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0; got {max_lag}")
    rows = _select(projections_df, layer, method, site)
    rows = rows[rows["frame"] == frame]
    traits = sorted(rows["trait"].unique())
    trajectories = _trajectories(rows, traits)
    records = []
    for lag in range(-max_lag, max_lag + 1):
        xs, ys = [], []
        for traj in trajectories:  # traj [T, n_traits]
            length = traj.shape[0] - abs(lag)
            if length <= 0:
                continue
            start = max(0, -lag)
            xs.append(traj[start : start + length])  # x_t
            ys.append(traj[start + lag : start + lag + length])  # y_{t+lag}
        x_all = np.concatenate(xs) if xs else np.empty((0, len(traits)))
        y_all = np.concatenate(ys) if ys else np.empty((0, len(traits)))
        for i, ta in enumerate(traits):
            for j, tb in enumerate(traits):
                r, n = _pair_r(x_all[:, i], y_all[:, j])
                records.append({"trait_a": ta, "trait_b": tb, "lag": lag, "r": r, "n": n})
    return pd.DataFrame.from_records(records, columns=["trait_a", "trait_b", "lag", "r", "n"])
