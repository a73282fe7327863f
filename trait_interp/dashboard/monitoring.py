"""Trait dynamics data: a prompt set's index (for the picker) and per-prompt token series.

A series is one (trait, layer, method, site) of the projection table over a response's tokens.
Values are RAW projections (massive dims not removed), whatever cleaning the table was written
with: ``raw = projection + massive_<mode>`` for the mode the table was cleaned with. The page
subtracts ``massive_<mode>`` to clean with a mode and the vector's train-set midpoint to centre.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trait_interp.core.errors import UserInputError
from trait_interp.dashboard.jsonable import num, nums
from trait_interp.monitoring.massive_dims import CLEANING_PARTS

MODES = CLEANING_PARTS  # the massive-dim cleaning modes (besides none)
MAX_FILTER_VALUES = 200  # a field with more distinct values than this is searchable, not a filter


@dataclass(frozen=True)
class Series:
    trait: str
    layer: int
    method: str
    site: str

    def key(self) -> tuple[str, int, str, str]:
        return (self.trait, self.layer, self.method, self.site)


def _text(value: Any) -> str | None:
    """A prompt field as filter text: strings as they are, other JSON values as JSON, missing as None."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def series_of(projections: pd.DataFrame, traits: Sequence[str]) -> list[Series]:
    """The projected (trait, layer, method, site) combinations, in the order of ``traits``, then layer."""
    keys = projections[["trait", "layer", "method", "site"]].drop_duplicates()
    order = {trait: i for i, trait in enumerate(traits)}
    found = [Series(str(r.trait), int(r.layer), str(r.method), str(r.site)) for r in keys.itertuples()]
    return sorted(found, key=lambda s: (order.get(s.trait, len(order)), s.trait, s.layer, s.method, s.site))


def raw_projection(projections: pd.DataFrame, cleaned_with: str) -> np.ndarray:
    """The uncleaned projection of every row: the table's value plus the part its cleaning removed."""
    values = projections["projection"].to_numpy(dtype=np.float64)
    if cleaned_with == "none":
        return values
    column = f"massive_{cleaned_with}"
    if column not in projections:
        raise ValueError(f"the table was cleaned with '{cleaned_with}' but has no {column} column")
    return values + projections[column].to_numpy(dtype=np.float64)


def prompt_index(
    responses: pd.DataFrame,
    labels: Mapping[str, Mapping[str, str]],
    series: Sequence[Series],
    midpoints: Mapping[tuple[str, str, str, int], float],
    cleaning: Mapping[str, Any],
    file_key: str,
) -> dict[str, Any]:
    """The picker's index of one prompt set on one model: every prompt in full, filter fields, series.

    ``responses`` is a ``schemas.inference.InferenceResponses`` table; ``labels`` maps a label name
    (e.g. a judge verdict ``refused``) to ``{prompt_id: value}``; ``file_key`` + ``/p<row>`` names
    each prompt's token file.
    """
    prompts, fields = [], {}
    for row_index, row in enumerate(responses.itertuples()):
        extra = json.loads(row.extra) if row.extra else {}
        values = {"note": _text(row.note)}
        values.update({str(k): _text(v) for k, v in extra.items()})
        for name, by_id in labels.items():
            values[name] = by_id.get(str(row.prompt_id))
        for name, value in values.items():
            fields.setdefault(name, Counter())[value] += 1
        prompts.append({
            "id": str(row.prompt_id),
            "prompt": str(row.prompt),
            "system_prompt": None if row.system_prompt is None or row.system_prompt != row.system_prompt else str(row.system_prompt),
            "response": str(row.response),
            "n_tokens": len(row.response_tokens),
            "fields": values,
            "file": f"{file_key}/p{row_index}",
        })
    filters = [
        {"name": name, "kind": "label" if name in labels else ("note" if name == "note" else "field"),
         "values": [[value, count] for value, count in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))]}
        for name, counts in fields.items()
        if name in labels or (name == "note" and set(counts) != {None}) or 1 < len(counts) <= MAX_FILTER_VALUES
    ]
    return {
        "n_prompts": len(prompts),
        "filters": filters,
        "series": [
            {"trait": s.trait, "layer": s.layer, "method": s.method, "site": s.site,
             "midpoint": num(midpoints.get((s.trait, s.site, s.method, s.layer)))}
            for s in series
        ],
        "cleaning": dict(cleaning),
        "prompts": prompts,
    }


def token_files(
    responses: pd.DataFrame, projections: pd.DataFrame, series: Sequence[Series], cleaned_with: str, where: str
) -> list[dict[str, Any]]:
    """One dict per prompt (responses order): its response tokens and, per series, raw values and massive parts.

    A prompt whose projected response length differs from its stored tokens is a user error naming
    ``where`` (the projection table): the two files come from different runs.
    """
    response = projections[projections["frame"] == "response"].copy()
    response["raw"] = raw_projection(response, cleaned_with)
    has_massive = [mode for mode in MODES if f"massive_{mode}" in response and response[f"massive_{mode}"].notna().all()]
    response = response.sort_values(["prompt_id", "trait", "layer", "method", "site", "token_index"], kind="stable")
    by_prompt = {str(pid): group for pid, group in response.groupby("prompt_id", sort=False)}
    files = []
    for row in responses.itertuples():
        tokens = list(row.response_tokens)
        group = by_prompt.get(str(row.prompt_id))
        trajectories = {} if group is None else {
            (str(t), int(la), str(m), str(si)): g for (t, la, m, si), g in group.groupby(["trait", "layer", "method", "site"])
        }
        values, massive = [], {mode: [] for mode in has_massive}
        for s in series:
            trajectory = trajectories.get(s.key())
            if trajectory is None:
                if tokens:
                    raise UserInputError(f"{where}: prompt {row.prompt_id} has no {s.trait} layer {s.layer} projection; "
                                         "re-run the project stage")
                trajectory = response.iloc[0:0]
            if len(trajectory) != len(tokens):
                raise UserInputError(
                    f"{where}: prompt {row.prompt_id} has {len(trajectory)} projected response tokens but "
                    f"{len(tokens)} stored tokens; the projections come from other responses: re-run the project stage"
                )
            values.append(nums(trajectory["raw"]))
            for mode in has_massive:
                massive[mode].append(nums(trajectory[f"massive_{mode}"]))
        files.append({"id": str(row.prompt_id), "tokens": tokens, "values": values, "massive": massive})
    return files


def cleaning_info(projections: pd.DataFrame, cleaned_with: str, calibration: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the page's cleaning control offers: the modes whose parts the table has, and their dims."""
    available = [m for m in MODES if f"massive_{m}" in projections and projections[f"massive_{m}"].notna().all()]
    dims: dict[str, Any] = {}
    if calibration is not None:
        dims = {"recommended": list(calibration.get("recommended", [])),
                "top_k": {str(k): list(v) for k, v in calibration.get("top_dims_by_layer", {}).items()}}
    return {"table": cleaned_with, "available": available, "dims": dims}
