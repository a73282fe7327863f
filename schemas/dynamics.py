"""Dynamics of projection trajectories over the response tokens (see ``trait_interp.monitoring.dynamics``).

A trajectory is one (prompt_id, layer, trait, method, site) of a ``Projections`` table, over its
response tokens in ``token_index`` order.
"""

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series


class Dynamics(pa.DataFrameModel):
    """One row per response token of each trajectory."""

    prompt_id: Series[str]
    layer: Series[int] = pa.Field(ge=0)
    trait: Series[str]
    method: Series[str]
    site: Series[str]
    token_index: Series[int] = pa.Field(ge=0)  # position in prompt+response ids, 0-based
    smoothed: Series[float]  # trailing (causal) moving average of the projection
    velocity: Series[float] = pa.Field(nullable=True)  # smoothed[t+1] - smoothed[t]; NaN at the last token
    acceleration: Series[float] = pa.Field(nullable=True)  # velocity[t+1] - velocity[t]; NaN at the last two

    class Config:
        strict = True
        coerce = True
        unique = ["prompt_id", "layer", "trait", "method", "site", "token_index"]


class Commitment(pa.DataFrameModel):
    """One row per trajectory: its length, mean projection and commitment point."""

    prompt_id: Series[str]
    layer: Series[int] = pa.Field(ge=0)
    trait: Series[str]
    method: Series[str]
    site: Series[str]
    n_tokens: Series[int] = pa.Field(ge=1)  # response tokens in the trajectory
    mean_projection: Series[float]  # mean raw projection over the response tokens
    # token_index of the first token from which |smoothed velocity| stays below the threshold; null = never
    commitment_token: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)

    class Config:
        strict = True
        coerce = True
        unique = ["prompt_id", "layer", "trait", "method", "site"]
