"""Token-by-token projections (long form): one row per (prompt, token, layer, trait vector)."""

import pandera.pandas as pa
from pandera.typing import Series


class Projections(pa.DataFrameModel):
    prompt_id: Series[str]
    frame: Series[str] = pa.Field(isin=["prompt", "response"])  # which part of the sequence the token is in
    token_index: Series[int] = pa.Field(ge=0)  # position in prompt+response ids, 0-based
    token: Series[str]
    layer: Series[int] = pa.Field(ge=0)
    trait: Series[str]
    method: Series[str]
    site: Series[str]
    # float32: the precision of the activations they come from, at half the bytes of float64
    projection: Series[pa.Float32]  # h . v / ||v|| (massive dims removed from h and v when cleaning is on)
    token_norm: Series[pa.Float32] = pa.Field(ge=0)  # ||h|| (cleaned alike), so cosine = projection / token_norm

    class Config:
        strict = True
        coerce = True
        unique = ["prompt_id", "token_index", "layer", "trait", "method", "site"]
