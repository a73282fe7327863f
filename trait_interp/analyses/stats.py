"""Two-group statistics: signed Cohen's d with a percentile-bootstrap interval and Welch's p-value.

Conventions follow ``trait_interp.core.metrics`` (d is ``mean_a - mean_b`` over the pooled sd, ddof=1,
and 0.0 when both groups are constant). Where a group has fewer than 2 values, d, its interval and
the p-value are undefined: they come back NaN rather than raising, so one thin group in a table of
many (trait, layer) rows does not stop the whole analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trait_interp.core.metrics import Scores, cohens_d, welch_p_value

NAN = float("nan")


def _values(values: Scores, name: str) -> np.ndarray:
    """1-D float64 copy; may be empty. Non-finite values are a caller bug, not data to skip."""
    if hasattr(values, "detach"):
        values = values.detach().to("cpu").double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _pooled_d_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cohen's d per row of ``a`` [n_boot, n_a] and ``b`` [n_boot, n_b]; 0.0 where pooled sd is 0.

    The vectorised twin of ``metrics.cohens_d`` (tests check they agree row by row).
    """
    n_a, n_b = a.shape[1], b.shape[1]
    pooled_var = ((n_a - 1) * a.var(axis=1, ddof=1) + (n_b - 1) * b.var(axis=1, ddof=1)) / (n_a + n_b - 2)
    pooled_sd = np.sqrt(pooled_var)  # [n_boot]
    diff = a.mean(axis=1) - b.mean(axis=1)  # [n_boot]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = diff / pooled_sd
    return np.where(pooled_sd == 0.0, 0.0, d)


def bootstrap_ci_cohens_d(
    a: Scores, b: Scores, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap interval for Cohen's d (a minus b); (NaN, NaN) if a group has < 2 values.

    Each group is resampled with replacement on its own (group sizes fixed), ``n_boot`` times, from
    ``numpy.random.default_rng(seed)``: first all of a's index draws ``[n_boot, n_a]``, then all of
    b's ``[n_boot, n_b]``. The interval is the ``(1-level)/2`` and ``(1+level)/2`` quantiles
    (numpy's default linear interpolation) of the resampled d's.
    """
    a_arr, b_arr = _values(a, "a"), _values(b, "b")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    if a_arr.size < 2 or b_arr.size < 2:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    idx_a = rng.integers(0, a_arr.size, size=(n_boot, a_arr.size))
    idx_b = rng.integers(0, b_arr.size, size=(n_boot, b_arr.size))
    ds = _pooled_d_rows(a_arr[idx_a], b_arr[idx_b])  # [n_boot]
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(ds, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass(frozen=True)
class GroupStats:
    """Summary of group a against group b. Means are NaN for an empty group."""

    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    cohens_d: float  # signed, a minus b, pooled sd; NaN if a group has < 2 values
    ci_low: float
    ci_high: float
    p_value: float  # Welch two-sided; 1.0 when both groups are constant (metrics convention)


def group_stats(a: Scores, b: Scores, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> GroupStats:
    a_arr, b_arr = _values(a, "a"), _values(b, "b")
    mean_a = float(a_arr.mean()) if a_arr.size else NAN
    mean_b = float(b_arr.mean()) if b_arr.size else NAN
    if a_arr.size < 2 or b_arr.size < 2:
        d = p = NAN
        low = high = NAN
    else:
        d = cohens_d(a_arr, b_arr)
        p = welch_p_value(a_arr, b_arr)
        low, high = bootstrap_ci_cohens_d(a_arr, b_arr, n_boot=n_boot, seed=seed, level=level)
    return GroupStats(
        mean_a=mean_a, mean_b=mean_b, n_a=int(a_arr.size), n_b=int(b_arr.size),
        cohens_d=d, ci_low=low, ci_high=high, p_value=p,
    )
