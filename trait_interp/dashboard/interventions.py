"""Trait dynamics of an intervention's answers: each read (the gate, or a cap per layer) as a series, and marks.

An intervention's intervened answers become one more prompt set of the trait-dynamics view: the
series are what its gate (cap) read at every response token (``schemas.interventions.InterventionTrace``,
raw ``h . v / ||v||``), and per token whether the gate fired (the cap bound) and whether the answer
was steered (capped) there. The last response token was never read by the model (a ``generate``
stops after producing it), so it has no value and no mark. The unsteered answer and both judge
scores come with each prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from trait_interp.core.errors import UserInputError
from trait_interp.dashboard.jsonable import num, nums
from trait_interp.dashboard.monitoring import Series, prompt_index


def _series(trace: pd.DataFrame) -> list[tuple[str, Series]]:
    """(read, series) of every read: the gate first, then the caps by layer."""
    keys = trace[["read", "trait", "layer", "method", "site"]].drop_duplicates()
    found = [(str(r.read), Series(str(r.trait), int(r.layer), str(r.method), str(r.site))) for r in keys.itertuples()]
    return sorted(found, key=lambda item: (item[0] != "gate", item[1].layer))


def intervention_pages(
    key: str, responses: pd.DataFrame, trace: pd.DataFrame, record: Mapping[str, Any],
    midpoints: Mapping[tuple[str, str, str, int], float], where: str,
) -> dict[str, Any]:
    """The picker index (``<key>/prompts``) and one token file per prompt (``<key>/p<row>``).

    ``responses``: ``schemas.interventions.InterventionResponses``; ``record``: the intervention as run
    (``intervention.json``, as a dict).
    """
    intervened = responses[responses["condition"] == "intervened"].reset_index(drop=True)
    baseline = {str(r.prompt_id): r for r in responses[responses["condition"] == "baseline"].itertuples()}
    reads = _series(trace)
    thresholds = _thresholds(record)
    table = pd.DataFrame({
        "prompt_id": intervened["prompt_id"].astype(str), "prompt": intervened["prompt"], "system_prompt": None,
        "response": intervened["response"], "response_tokens": intervened["response_tokens"],
        "note": intervened["note"], "extra": intervened["extra"],
    })
    labels = {
        "group": dict(zip(table["prompt_id"], intervened["group"].astype(str))),
        "fired": dict(zip(table["prompt_id"], ["yes" if bool(f) else "no" for f in intervened["fired"]])),
    }
    index = prompt_index(table, labels, [s for _, s in reads], midpoints, {"table": "none", "available": [], "dims": {}},
                         key)
    for item in index["filters"]:
        if item["name"] in labels:
            item["kind"] = "intervention"  # not a judge verdict: which group, whether the gate fired
    for item, read in zip(index["series"], reads):
        item.update(read=read[0], **thresholds.get((read[0], read[1].layer), {}))
    for prompt, row in zip(index["prompts"], intervened.itertuples()):
        base = baseline.get(str(row.prompt_id))
        prompt["compare"] = {
            "baseline": None if base is None else str(base.response),
            "trait": [None if base is None else num(base.trait_score), num(row.trait_score)],
            "coherence": [None if base is None else num(base.coherence), num(row.coherence)],
            "kl": num(row.kl), "gate_score": num(row.gate_score),
        }
    pages: dict[str, Any] = {f"{key}/prompts": {"model": record.get("model"), "intervention": dict(record), **index}}
    by_prompt = {str(pid): group for pid, group in trace.groupby("prompt_id", sort=False)}
    for row_index, row in enumerate(intervened.itertuples()):
        pages[f"{key}/p{row_index}"] = _token_file(row, by_prompt.get(str(row.prompt_id)), reads, where)
    return pages


def _thresholds(record: Mapping[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """(read, layer) -> the lines the chart draws: the gate's threshold, each cap's low and high."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    gate = record.get("gate")
    if gate:
        out[("gate", int(gate["layer"]))] = {"threshold": num(gate["threshold"]), "when": gate["when"],
                                              "mode": gate["mode"]}
    for cap in record.get("caps") or []:
        out[("cap", int(cap["layer"]))] = {"low": num(cap.get("low")), "high": num(cap.get("high"))}
    return out


def _token_file(row: Any, trace: pd.DataFrame | None, reads: list[tuple[str, Series]], where: str) -> dict[str, Any]:
    """One prompt's response tokens; per read, its values and 0/1 fired and steered marks (last token: null)."""
    tokens = list(row.response_tokens)
    n_prompt = len(row.prompt_ids)
    values, fired, steered, prompt_fired = [], [], [], []
    for read, series in reads:
        part = None if trace is None else trace[(trace["read"] == read) & (trace["layer"] == series.layer)]
        if part is None or part.empty:
            raise UserInputError(f"{where}: prompt {row.prompt_id} has no {read} record at layer {series.layer}; "
                                 "re-run the intervention stage")
        part = part.sort_values("token_index")
        if len(part) not in (n_prompt + len(tokens) - 1, n_prompt + len(tokens)) or int(part["token_index"].iloc[0]) != 0:
            raise UserInputError(f"{where}: prompt {row.prompt_id} has {len(part)} {read} positions for {n_prompt} prompt "
                                 f"and {len(tokens)} response tokens; the record comes from other answers: re-run the stage")
        response = part[part["token_index"] >= n_prompt]
        pad = len(tokens) - len(response)  # the last token, never read
        values.append(nums(list(response["projection"]) + [float("nan")] * pad))
        fired.append([int(bool(x)) for x in response["fired"]] + [None] * pad)
        steered.append([int(bool(x)) for x in response["steered"]] + [None] * pad)
        prompt_part = part[part["token_index"] < n_prompt]
        prompt_fired.append({
            "fired": [int(t) for t in prompt_part.loc[prompt_part["fired"], "token_index"]],
            "steered": int(prompt_part["steered"].sum()),
            "tokens": len(prompt_part),
        })
    return {"id": str(row.prompt_id), "tokens": tokens, "values": values, "massive": {}, "fired": fired,
            "steered": steered, "prompt": prompt_fired, "prompt_tokens": list(row.prompt_tokens)}


def intervention_label(record: Mapping[str, Any]) -> str:
    """A short description for the set picker, e.g. ``refusal_gate (gated)``."""
    return f"{record.get('name')} ({record.get('kind')})"
