"""Extraction responses: one row per (pair, polarity), with the exact token ids."""

import pandera.pandas as pa
from pandera.typing import Series


def is_token_id_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value)


class Responses(pa.DataFrameModel):
    trait: Series[str]
    pair_index: Series[int] = pa.Field(ge=0)
    polarity: Series[str] = pa.Field(isin=["positive", "negative"])
    scenario_line: Series[int] = pa.Field(ge=1)  # 1-based line in the scenario file
    prompt: Series[str]
    system_prompt: Series[str] = pa.Field(nullable=True)
    chat: Series[bool]
    prompt_ids: Series[object]
    response_ids: Series[object]
    response: Series[str]
    model: Series[str]

    @pa.check("prompt_ids", "response_ids", element_wise=True, error="must be a list of token ids (ints >= 0)")
    @classmethod
    def token_id_lists(cls, value: object) -> bool:
        return is_token_id_list(value)

    class Config:
        strict = True
        coerce = True
        unique = ["pair_index", "polarity"]
