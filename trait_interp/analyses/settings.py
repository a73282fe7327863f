"""``analyses:`` in params: the questions asked of the projections."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AnalysisSettings:
    n_boot: int = 2000  # bootstrap resamples for Cohen's d intervals
    seed: int = 0
    max_lag: int = 10  # trait correlation of token trajectories at lags -max_lag..max_lag
