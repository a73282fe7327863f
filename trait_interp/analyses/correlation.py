"""Correlation between traits: of per-response means, and of token trajectories at a lag.

Both return a long-form matrix over ordered trait pairs, the diagonal included (at lag 0 it is 1;
at other lags it is the trait's autocorrelation). ``r`` is NaN when fewer than 2 pairs exist or
either side is constant.

``response_correlation`` / ``lagged_correlation`` compare every trait at one given layer. The
``paired_*`` forms take a whole (method, site) of a table whose traits may sit at different
layers (``layer: best``) and pair them by ``trait_interp.analyses.pairing``: at each shared
layer, or, for two traits that share no layer, each at its own layers (every combination). They
say where each side was read in ``layer_a`` / ``layer_b``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from trait_interp.analyses.pairing import Reading, reading_pairs, trait_layers


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


def _select_method_site(df: pd.DataFrame, method: str, site: str) -> pd.DataFrame:
    rows = df[(df["method"] == method) & (df["site"] == site)]
    if rows.empty:
        raise ValueError(f"no rows for method {method!r}, site {site!r}")
    return rows


def _pair_r(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """r and n over the positions where both x and y are present (not NaN)."""
    both = ~(np.isnan(x) | np.isnan(y))
    return pearson(x[both], y[both]), int(both.sum())


def _response_r(rows: pd.DataFrame, pairs: Sequence[tuple[Reading, Reading]]) -> list[tuple[float, int]]:
    """r, n of the per-response means of each pair of readings (trait, layer), over the prompts having both."""
    wide = rows.pivot(index="prompt_id", columns=["trait", "layer"], values="mean_projection")  # [prompts, readings]
    column = {(str(t), int(la)): wide[(t, la)].to_numpy(dtype=float) for t, la in wide.columns}
    return [_pair_r(column[a], column[b]) for a, b in pairs]


def response_correlation(means_df: pd.DataFrame, layer: int, method: str, site: str) -> pd.DataFrame:
    """Pearson r between traits of the per-response mean projections (from ``response_means``), at one layer.

    Each pair uses the prompts that have a mean for both traits. Columns: trait_a, trait_b, r, n.
    """
    rows = _select(means_df, layer, method, site)
    traits = sorted({str(t) for t in rows["trait"]})
    pairs = [((ta, int(layer)), (tb, int(layer))) for ta in traits for tb in traits]
    records = [{"trait_a": a[0], "trait_b": b[0], "r": r, "n": n} for (a, b), (r, n) in zip(pairs, _response_r(rows, pairs))]
    return pd.DataFrame.from_records(records, columns=["trait_a", "trait_b", "r", "n"])


def paired_response_correlation(means_df: pd.DataFrame, method: str, site: str) -> pd.DataFrame:
    """``response_correlation`` over one (method, site), traits paired by ``pairing.reading_pairs``.

    Rows in the order (layer_a, layer_b, trait_a, trait_b); with shared layers only, that is
    ``response_correlation`` of each layer (where two or more traits were projected) one after the
    other, with layer_a = layer_b = that layer. Empty when fewer than two traits were projected.
    Columns: trait_a, trait_b, layer_a, layer_b, r, n.
    """
    rows = _select_method_site(means_df, method, site)
    pairs = reading_pairs(trait_layers(rows, method, site))
    records = [
        {"trait_a": a[0], "trait_b": b[0], "layer_a": a[1], "layer_b": b[1], "r": r, "n": n}
        for (a, b), (r, n) in zip(pairs, _response_r(rows, pairs) if pairs else [])
    ]
    return pd.DataFrame.from_records(records, columns=["trait_a", "trait_b", "layer_a", "layer_b", "r", "n"])


def _trajectories(rows: pd.DataFrame, readings: Sequence[Reading]) -> list[np.ndarray]:
    """Per prompt: ``[n_positions, n_readings]`` over token_index min..max, NaN where a reading lacks a token."""
    out = []
    for _, prompt_rows in rows.groupby("prompt_id", sort=True):
        wide = prompt_rows.pivot(index="token_index", columns=["trait", "layer"], values="projection")
        full = pd.RangeIndex(int(wide.index.min()), int(wide.index.max()) + 1)
        columns = pd.MultiIndex.from_tuples(list(readings), names=["trait", "layer"])
        out.append(wide.reindex(index=full, columns=columns).to_numpy(dtype=float))
    return out


def _lagged_records(rows: pd.DataFrame, pairs: Sequence[tuple[Reading, Reading]], max_lag: int,
                    progress: bool = False) -> list[dict]:
    """One record per pair and lag: r of reading a at token t with reading b at t + lag, pooled within responses
    (``progress``: a bar on stderr, by lag; each lag correlates every pair)."""
    readings = sorted({reading for pair in pairs for reading in pair})
    column = {reading: i for i, reading in enumerate(readings)}
    trajectories = _trajectories(rows, readings)
    records = []
    lags = range(-max_lag, max_lag + 1)
    for lag in tqdm(lags, desc=f"lagged correlation ({len(pairs)} pairs)", unit="lag", disable=not progress):
        xs, ys = [], []
        for traj in trajectories:  # traj [T, n_readings]
            length = traj.shape[0] - abs(lag)
            if length <= 0:
                continue
            start = max(0, -lag)
            xs.append(traj[start : start + length])  # x_t
            ys.append(traj[start + lag : start + lag + length])  # y_{t+lag}
        x_all = np.concatenate(xs) if xs else np.empty((0, len(readings)))
        y_all = np.concatenate(ys) if ys else np.empty((0, len(readings)))
        for a, b in pairs:
            r, n = _pair_r(x_all[:, column[a]], y_all[:, column[b]])
            records.append({"trait_a": a[0], "trait_b": b[0], "layer_a": a[1], "layer_b": b[1], "lag": lag, "r": r, "n": n})
    return records


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
    traits = sorted({str(t) for t in rows["trait"]})
    pairs = [((ta, int(layer)), (tb, int(layer))) for ta in traits for tb in traits]
    records = _lagged_records(rows, pairs, max_lag) if pairs else []
    return pd.DataFrame.from_records(records, columns=["trait_a", "trait_b", "lag", "r", "n"])


def paired_lagged_correlation(
    projections_df: pd.DataFrame, method: str, site: str, max_lag: int = 10, frame: str = "response",
    progress: bool = False,
) -> pd.DataFrame:
    """``lagged_correlation`` over one (method, site), traits paired by ``pairing.reading_pairs``.

    A cross-layer pair correlates trait_a at layer_a, token t, with trait_b at layer_b, token
    t + lag (same response, same token_index convention). Rows in the order (layer_a, layer_b,
    lag, trait_a, trait_b): with shared layers only, ``lagged_correlation`` of each layer in turn.
    Columns: trait_a, trait_b, layer_a, layer_b, lag, r, n.
    """
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0; got {max_lag}")
    rows = _select_method_site(projections_df, method, site)
    rows = rows[rows["frame"] == frame]
    pairs = reading_pairs(trait_layers(rows, method, site))
    records = _lagged_records(rows, pairs, max_lag, progress) if pairs else []
    records.sort(key=lambda r: (r["layer_a"], r["layer_b"], r["lag"], r["trait_a"], r["trait_b"]))
    return pd.DataFrame.from_records(records, columns=["trait_a", "trait_b", "layer_a", "layer_b", "lag", "r", "n"])
