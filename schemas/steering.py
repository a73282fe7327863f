"""Steering evaluation tables: per-response judge scores and per-configuration means."""

import pandera.pandas as pa
from pandera.typing import Series

from schemas.responses import is_token_id_list

KINDS = ["baseline", "search", "grid", "sweep"]  # sweep: steering.sweep_ratios, never the best


class SteeringResponses(pa.DataFrameModel):
    """One row per (configuration, question); scores are None where the judge gave none."""

    trait: Series[str]
    kind: Series[str] = pa.Field(isin=KINDS)
    step: Series[int] = pa.Field(ge=0)
    layers: Series[str]  # steered layers, comma-separated (one coefficient at all of them)
    method: Series[str]
    site: Series[str]
    coefficient: Series[float]
    ratio: Series[float]  # coefficient / mean ||h_L|| of the steered model
    question_index: Series[int] = pa.Field(ge=0)
    question: Series[str]
    response: Series[str]
    response_ids: Series[object]
    trait_score: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    coherence: Series[float] = pa.Field(ge=0, le=100, nullable=True)

    @pa.check("response_ids", element_wise=True, error="must be a list of token ids (ints >= 0)")
    @classmethod
    def token_id_lists(cls, value: object) -> bool:
        return is_token_id_list(value)

    class Config:
        strict = True
        coerce = True
        unique = ["kind", "step", "question_index"]


class SteeringCurve(pa.DataFrameModel):
    """One row per configuration (the baseline is coefficient 0): the DVC plot of a trait."""

    trait: Series[str]
    layers: Series[str]
    kind: Series[str] = pa.Field(isin=KINDS)
    step: Series[int] = pa.Field(ge=0)
    coefficient: Series[float]
    ratio: Series[float]
    trait_mean: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    coherence_mean: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    n_trait_scored: Series[int] = pa.Field(ge=0)
    n_coherence_scored: Series[int] = pa.Field(ge=0)
    n_questions: Series[int] = pa.Field(ge=1)

    class Config:
        strict = True
        coerce = True
        unique = ["kind", "step"]
