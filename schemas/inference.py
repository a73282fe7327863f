"""Monitoring responses: one row per prompt of a prompt set, with the exact token ids and strings."""

import pandera.pandas as pa
from pandera.typing import Series

from schemas.responses import is_token_id_list


def is_string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


class InferenceResponses(pa.DataFrameModel):
    prompt_set: Series[str]
    prompt_id: Series[str]  # ids are stored as strings (prompt sets use ints or strings)
    prompt: Series[str]  # the prompt text as written in the set (before any template)
    system_prompt: Series[str] = pa.Field(nullable=True)
    note: Series[str] = pa.Field(nullable=True)
    extra: Series[str]  # the prompt's other fields, as a JSON object
    model: Series[str]  # the registry key of the model (variant) that generated the response
    source: Series[str]  # its hub id or local path
    chat: Series[bool]
    prompt_ids: Series[object]
    response_ids: Series[object]
    prompt_tokens: Series[object]  # token strings, one per prompt id
    response_tokens: Series[object]
    prompt_end: Series[int] = pa.Field(ge=0)  # = len(prompt_ids): the first response position
    response: Series[str]

    @pa.check("prompt_ids", "response_ids", element_wise=True, error="must be a list of token ids (ints >= 0)")
    @classmethod
    def token_id_lists(cls, value: object) -> bool:
        return is_token_id_list(value)

    @pa.check("prompt_tokens", "response_tokens", element_wise=True, error="must be a list of strings")
    @classmethod
    def token_lists(cls, value: object) -> bool:
        return is_string_list(value)

    @pa.dataframe_check(error="prompt_end must equal len(prompt_ids); token strings must match the ids")
    @classmethod
    def aligned(cls, df):  # type: ignore[no-untyped-def]
        return (
            (df["prompt_end"] == df["prompt_ids"].map(len))
            & (df["prompt_tokens"].map(len) == df["prompt_ids"].map(len))
            & (df["response_tokens"].map(len) == df["response_ids"].map(len))
        )

    class Config:
        strict = True
        coerce = True
        unique = ["prompt_id"]
