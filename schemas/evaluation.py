"""Held-out evaluation of vectors: one row per (site, method, layer)."""

import pandera.pandas as pa
from pandera.typing import Series


class VectorEvaluation(pa.DataFrameModel):
    trait: Series[str]
    site: Series[str]
    method: Series[str]
    layer: Series[int] = pa.Field(ge=0)
    train_accuracy: Series[float] = pa.Field(ge=0, le=1)
    val_accuracy: Series[float] = pa.Field(ge=0, le=1)
    cohens_d: Series[float]
    polarity_correct: Series[bool]
    p_value: Series[float] = pa.Field(ge=0, le=1)
    threshold: Series[float]
    n_val_positive: Series[int] = pa.Field(ge=1)
    n_val_negative: Series[int] = pa.Field(ge=1)

    class Config:
        strict = True
        coerce = True
        unique = ["site", "method", "layer"]
