"""Response vetting: one row per extraction response, with its judge score and verdict."""

import pandera.pandas as pa
from pandera.typing import Series


class VettingScores(pa.DataFrameModel):
    pair_index: Series[int] = pa.Field(ge=0)
    polarity: Series[str] = pa.Field(isin=["positive", "negative"])
    score: Series[float] = pa.Field(ge=0, le=100, nullable=True)  # None: judge gave no score, or vetting off
    passed: Series[bool]  # this response meets its polarity's threshold (always true when vetting is off)
    kept: Series[bool]  # used for extraction (with paired filtering: both sides of the pair passed)

    class Config:
        strict = True
        coerce = True
        unique = ["pair_index", "polarity"]
