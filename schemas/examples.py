"""The train/val split index of captured examples (row = row of the pooled activation tensors)."""

import pandera.pandas as pa
from pandera.typing import Series


class Examples(pa.DataFrameModel):
    row: Series[int] = pa.Field(ge=0, unique=True)
    pair_index: Series[int] = pa.Field(ge=0)
    polarity: Series[str] = pa.Field(isin=["positive", "negative"])
    split: Series[str] = pa.Field(isin=["train", "val"])
    n_tokens: Series[int] = pa.Field(ge=0)  # tokens pooled; 0 = empty selection, excluded

    class Config:
        strict = True
        coerce = True
