"""Per-response mean projections, compared between two labelled groups of prompts.

The rebuilt "jailbreak success vs refusal" analysis: label each prompt (from a field of the
prompt set, or from a judge verdict), then, per (trait, method, site, layer), compare the mean
response projection of group a against group b with a signed Cohen's d (a minus b), a bootstrap
interval and Welch's p-value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from trait_interp.analyses.stats import group_stats
from trait_interp.core.errors import UserInputError

VECTOR_KEYS = ["trait", "method", "site", "layer"]  # one vector = one row of every analysis table
MEANS_COLUMNS = ["prompt_id", *VECTOR_KEYS, "mean_projection", "n_tokens"]


def response_means(projections_df: pd.DataFrame, frame: str = "response") -> pd.DataFrame:
    """Mean projection over the tokens of ``frame``, per (prompt_id, trait, method, site, layer).

    Columns: prompt_id, trait, method, site, layer, mean_projection, n_tokens (schema ResponseMeans).
    Prompts with no token in ``frame`` (an empty response) have no row.
    """
    if frame not in ("prompt", "response"):
        raise ValueError(f"frame must be 'prompt' or 'response'; got {frame!r}")
    rows = projections_df[projections_df["frame"] == frame]
    grouped = rows.groupby(["prompt_id", *VECTOR_KEYS], sort=True)["projection"]
    out = grouped.agg(mean_projection="mean", n_tokens="size").reset_index()
    out["prompt_id"] = out["prompt_id"].astype(str)
    return out[MEANS_COLUMNS]


def compare_groups(
    means_df: pd.DataFrame,
    labels: Mapping[str, str],
    group_a: str,
    group_b: str,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    allow_empty: bool = False,
) -> pd.DataFrame:
    """One row per (trait, method, site, layer): group a vs group b of the per-response means.

    ``allow_empty`` keeps going when a group has no prompt (n = 0, statistics NaN): right for
    labels that are outcomes (a judge verdict may be "no" for every response), wrong for labels
    typed by hand, where an empty group is usually a typo.

    ``labels`` maps prompt_id -> label; prompts without a label, or with a label other than the two
    groups, are left out. Raises ValueError when either group has no prompt at all in ``means_df``
    (a typo in a group name, usually). Every row uses the same bootstrap ``seed``, so a row's
    interval does not depend on which other rows are in the table.
    """
    if group_a == group_b:
        raise ValueError(f"group_a and group_b must differ; both are {group_a!r}")
    label_of = {str(k): str(v) for k, v in labels.items()}
    labelled = means_df.assign(group=means_df["prompt_id"].astype(str).map(label_of))
    present = set(labelled["group"].dropna())
    for group in (group_a, group_b):
        if group not in present and not allow_empty:
            raise ValueError(f"no prompt labelled {group!r}; labels present: {sorted(present)}")
    records = []
    for key, rows in labelled.groupby(VECTOR_KEYS, sort=True):
        rows = rows[rows["group"].isin([group_a, group_b])]
        a = rows.loc[rows["group"] == group_a, "mean_projection"].to_numpy(dtype=float)
        b = rows.loc[rows["group"] == group_b, "mean_projection"].to_numpy(dtype=float)
        stats = group_stats(a, b, n_boot=n_boot, seed=seed, level=level)
        records.append({**dict(zip(VECTOR_KEYS, key)), "group_a": group_a, "group_b": group_b, **asdict(stats)})
    columns = [*VECTOR_KEYS, "group_a", "group_b", "n_a", "n_b", "mean_a", "mean_b",
               "cohens_d", "ci_low", "ci_high", "p_value"]
    return pd.DataFrame.from_records(records, columns=columns)


def _label_text(value: Any) -> str:
    """Labels are strings; JSON booleans read as 'true'/'false' (as written in the file)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def labels_from_field(prompts: Sequence[Mapping[str, Any]], field: str, id_key: str = "id") -> dict[str, str]:
    """prompt_id (as a string) -> the prompt's ``field`` value, as a string.

    Each prompt is a dict as in a prompt-set file (``{"id", "text", <field>, ...}``); the field is
    also looked up in a nested ``extra`` dict, so ``dataclasses.asdict(Prompt)`` works too. A null
    value counts as missing. Raises ValueError naming every prompt id that lacks the field.
    """
    labels: dict[str, str] = {}
    missing: list[str] = []
    for i, prompt in enumerate(prompts):
        pid = str(prompt.get(id_key, f"<prompts[{i}] has no {id_key!r}>"))
        value = prompt.get(field)
        if value is None and isinstance(prompt.get("extra"), Mapping):
            value = prompt["extra"].get(field)
        if value is None:
            missing.append(pid)
        else:
            labels[pid] = _label_text(value)
    if missing:
        raise ValueError(f"{len(missing)} prompt(s) have no {field!r} field: ids {', '.join(missing)}")
    return labels


def labels_from_verdicts(scores: Mapping[str, float | None], threshold: float) -> tuple[dict[str, str], int]:
    """Judge scores -> ("yes" if score >= threshold else "no"), and the number of None scores dropped.

    A None (or NaN) score (the judge gave no usable answer) gets no label, so that prompt is left out of the
    comparison; the count lets the stage report how many were lost.
    """
    labels: dict[str, str] = {}
    dropped = 0
    for pid, score in scores.items():
        if score is None or math.isnan(float(score)):
            dropped += 1
            continue
        labels[str(pid)] = "yes" if float(score) >= threshold else "no"
    return labels, dropped


def read_labels(labels_file: Path) -> dict[str, str]:
    """A labels file: CSV with columns prompt_id, label."""
    try:
        table = pd.read_csv(labels_file, dtype=str, encoding="utf-8-sig")
    except (OSError, pd.errors.ParserError) as err:
        raise UserInputError(f"{labels_file}: cannot read labels ({err}); expected CSV columns prompt_id,label") from None
    if not {"prompt_id", "label"} <= set(table.columns):
        raise UserInputError(f"{labels_file}: expected CSV columns prompt_id,label; found {list(table.columns)}")
    return dict(zip(table["prompt_id"], table["label"]))
