"""Steering sweep tables: every judged answer, one row per configuration, its plot, and what predicts steering."""

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas.responses import is_token_id_list

SWEEP_KINDS = ["baseline", "layer", "window"]  # a window: several layers steered together, one coefficient


class SweepResponses(pa.DataFrameModel):
    """One row per (configuration, question); ``config`` 0 is the unsteered baseline (method ``none``)."""

    trait: Series[str]
    config: Series[int] = pa.Field(ge=0)
    kind: Series[str] = pa.Field(isin=SWEEP_KINDS)
    method: Series[str]
    site: Series[str]
    layers: Series[str]  # "2", or "1-3" for a window; "" for the baseline
    ratio: Series[float]  # coefficient * ||v|| / mean ||h_L||
    coefficient: Series[float]
    question_index: Series[int] = pa.Field(ge=0)
    question: Series[str]
    response: Series[str]
    response_ids: Series[object]
    trait_score: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    coherence: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    relevance: Series[float] = pa.Field(ge=0, le=100, nullable=True)  # None when the judge does not ask it
    composite: Series[float] = pa.Field(ge=0, le=1, nullable=True)

    @pa.check("response_ids", element_wise=True, error="must be a list of token ids (ints >= 0)")
    @classmethod
    def token_id_lists(cls, value: object) -> bool:
        return is_token_id_list(value)

    class Config:
        strict = True
        coerce = True
        unique = ["config", "question_index"]


class SweepResults(pa.DataFrameModel):
    """The long table: one row per configuration (method x layer or window x ratio) of one trait."""

    trait: Series[str]
    config: Series[int] = pa.Field(ge=1)
    kind: Series[str] = pa.Field(isin=["layer", "window"])
    method: Series[str]
    site: Series[str]
    layers: Series[str]
    first_layer: Series[int] = pa.Field(ge=0)
    last_layer: Series[int] = pa.Field(ge=0)
    ratio: Series[float]
    coefficient: Series[float]
    trait_mean: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    coherence_mean: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    relevance_mean: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    composite: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    baseline_trait_mean: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    baseline_coherence_mean: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    delta: Series[float] = pa.Field(nullable=True)  # trait_mean - baseline_trait_mean
    effect: Series[float] = pa.Field(nullable=True)  # delta in the trait's steering direction
    side_effect: Series[float] = pa.Field(ge=-1e-6)  # mean KL(unsteered || steered) on neutral prompts, nats
    coherent: Series[bool]  # coherence_mean >= steering.min_coherence
    n: Series[int] = pa.Field(ge=1)  # questions
    n_scored: Series[int] = pa.Field(ge=0)

    class Config:
        strict = True
        coerce = True
        unique = ["config"]


class SweepPlot(pa.DataFrameModel):
    """``dvc plots show``'s heatmap data: layer (or window) x ratio per method."""

    method: Series[str]
    layers: Series[str]
    ratio: Series[float]
    delta: Series[float] = pa.Field(nullable=True)
    coherence: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    coherent: Series[bool]
    side_effect: Series[float] = pa.Field(ge=-1e-6)

    class Config:
        strict = True
        coerce = True
        unique = ["method", "layers", "ratio"]


class SteeringPredictors(pa.DataFrameModel):
    """Per (trait, method): how the extraction metrics across layers predict the sweep's best coherent effect."""

    trait: Series[str]
    method: Series[str]
    site: Series[str]
    n_layers: Series[int] = pa.Field(ge=0)  # layers with both an evaluation row and a coherent configuration
    r_cohens_d: Series[float] = pa.Field(ge=-1, le=1, nullable=True)  # Pearson r across those layers
    r_val_accuracy: Series[float] = pa.Field(ge=-1, le=1, nullable=True)
    best_steering_layer: Series[pd.Int64Dtype] = pa.Field(ge=0, nullable=True)  # None when no layer was coherent
    best_steering_effect: Series[float] = pa.Field(nullable=True)
    best_steering_ratio: Series[float] = pa.Field(nullable=True)
    best_extraction_layer: Series[int] = pa.Field(ge=0)  # top held-out accuracy (ties: larger |d|)
    best_extraction_val_accuracy: Series[float] = pa.Field(ge=0, le=1)
    best_extraction_cohens_d: Series[float]
    same_layer: Series[bool]

    class Config:
        strict = True
        coerce = True
        unique = ["trait", "method"]
