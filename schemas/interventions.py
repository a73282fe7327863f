"""Gated and capped interventions (``intervention_eval``): every answer, and every position the gate or cap read."""

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas.inference import is_string_list
from schemas.responses import is_token_id_list

GROUPS = ["trigger", "non_trigger"]


class InterventionResponses(pa.DataFrameModel):
    """One row per (prompt, condition): the unsteered answer and the intervened one, judged."""

    intervention: Series[str]
    kind: Series[str] = pa.Field(isin=["gated", "capped"])
    trait: Series[str]  # the trait judged (the steered or capped one)
    prompt_set: Series[str]
    prompt_id: Series[str]
    group: Series[str] = pa.Field(isin=GROUPS)  # trigger: the gate should fire; non_trigger: it should not
    condition: Series[str] = pa.Field(isin=["baseline", "intervened"])
    prompt: Series[str]
    note: Series[str] = pa.Field(nullable=True)
    extra: Series[str]  # the prompt's other fields, as a JSON object
    prompt_ids: Series[object]
    response_ids: Series[object]
    prompt_tokens: Series[object]
    response_tokens: Series[object]
    response: Series[str]
    trait_score: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    coherence: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    # intervened rows only (null for the baseline): the gate fired / the cap bound at some position read,
    # the row was steered (capped) somewhere, the first position that fired, how many positions were steered
    fired: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    steered: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    first_fired: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    n_steered: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    gate_score: Series[float] = pa.Field(nullable=True)  # what the gate decided on (prompt mean, or max / min read)
    changed: Series[pd.BooleanDtype] = pa.Field(nullable=True)  # the intervened answer differs from the unsteered one
    kl: Series[float] = pa.Field(nullable=True, ge=0)  # mean next-token KL(unsteered || intervened) on the unsteered answer (the sweeps' side effect)

    @pa.check("prompt_ids", "response_ids", element_wise=True, error="must be a list of token ids (ints >= 0)")
    @classmethod
    def token_id_lists(cls, value: object) -> bool:
        return is_token_id_list(value)

    @pa.check("prompt_tokens", "response_tokens", element_wise=True, error="must be a list of strings")
    @classmethod
    def token_lists(cls, value: object) -> bool:
        return is_string_list(value)

    class Config:
        strict = True
        coerce = True
        unique = ["prompt_id", "condition"]


class InterventionTrace(pa.DataFrameModel):
    """One row per (prompt, read, position the model read) of the intervened answers.

    ``read`` is the gate (its monitor vector at its layer) or a cap (the capped vector at one layer);
    ``projection`` is ``h . v / ||v||`` before this intervention changed that module's output. A
    ``generate`` never reads the last token it produces, so a response's last token has no row.
    """

    prompt_id: Series[str]
    group: Series[str] = pa.Field(isin=GROUPS)
    read: Series[str] = pa.Field(isin=["gate", "cap"])
    frame: Series[str] = pa.Field(isin=["prompt", "response"])
    token_index: Series[int] = pa.Field(ge=0)  # position in prompt+response ids, 0-based
    token: Series[str]
    layer: Series[int] = pa.Field(ge=0)
    trait: Series[str]
    method: Series[str]
    site: Series[str]
    projection: Series[pa.Float32]
    fired: Series[bool]  # gate: crossed its threshold here (prompt mode: the last prompt token); cap: outside the range
    steered: Series[bool]  # gate: steering was added here; cap: the projection was clamped here

    class Config:
        strict = True
        coerce = True
        unique = ["prompt_id", "read", "layer", "token_index"]
