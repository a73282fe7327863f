"""Token-by-token projections (long form): one row per (prompt, token, layer, trait vector)."""

from typing import Optional

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
    # the RAW projection's part on the calibrated massive dims (sum_d h[d] v[d] / ||v||) of each cleaning
    # mode, so raw = projection + massive_<mode the table was cleaned with>; absent without a calibration
    massive_recommended: Optional[Series[pa.Float32]] = pa.Field(nullable=True)
    massive_top_k: Optional[Series[pa.Float32]] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True
        unique = ["prompt_id", "token_index", "layer", "trait", "method", "site"]
