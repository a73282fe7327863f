"""Model diff: variant B read on variant A's own tokens (replay), compared with A, per vector.

Both projection tables must cover the same tokens: the stage checks the token ids match (the
replay); here the tables are checked to hold the same (prompt_id, token_index, token) rows for
every vector, so a diff is never taken between different text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from trait_interp.analyses.group_comparison import VECTOR_KEYS, response_means
from trait_interp.core.metrics import cohens_d

CLAUSE_DELIMITERS = (",", ".", ";", "—", "\n", "!", "?", ":")
_ROW_KEYS = ["prompt_id", "frame", "token_index", *VECTOR_KEYS]
NAN = float("nan")


def aligned_deltas(proj_a: pd.DataFrame, proj_b: pd.DataFrame) -> pd.DataFrame:
    """Rows of both tables joined on (prompt_id, frame, token_index, vector): projection_a/_b, delta = B - A.

    Raises ValueError naming the prompts where the two tables do not hold the same token rows
    (a missing prompt, token, trait or layer on one side), or where the token strings differ.
    """
    merged = proj_a.merge(proj_b, on=_ROW_KEYS, how="outer", suffixes=("_a", "_b"), indicator=True)
    unmatched = merged[merged["_merge"] != "both"]
    if not unmatched.empty:
        ids = sorted(unmatched["prompt_id"].astype(str).unique())
        raise ValueError(
            f"variants A and B do not cover the same tokens for {len(ids)} prompt(s): {', '.join(ids[:10])}"
            f"{' ...' if len(ids) > 10 else ''}; replay A's responses through B"
        )
    if "token_a" in merged and (merged["token_a"] != merged["token_b"]).any():
        ids = sorted(merged.loc[merged["token_a"] != merged["token_b"], "prompt_id"].astype(str).unique())
        raise ValueError(f"token strings differ between variants for prompt(s): {', '.join(ids[:10])}")
    out = merged[_ROW_KEYS].copy()
    if "token_b" in merged:
        out["token"] = merged["token_b"]
    out["projection_a"] = merged["projection_a"].astype(float)
    out["projection_b"] = merged["projection_b"].astype(float)
    out["delta"] = out["projection_b"] - out["projection_a"]
    return out


def _paired_row(a: np.ndarray, b: np.ndarray) -> dict[str, float | int]:
    """Statistics of B vs A for one vector; a and b are per-prompt means in the same prompt order."""
    diff = b - a
    n = int(diff.size)
    row: dict[str, float | int] = {
        "n_prompts": n,
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "std_a": float(a.std(ddof=1)) if n >= 2 else NAN,
        "std_b": float(b.std(ddof=1)) if n >= 2 else NAN,
        "mean_diff": float(diff.mean()),
        "paired_d": NAN,
        "cohens_d": NAN,
        "p_value": NAN,
    }
    if n < 2:
        return row
    sd = float(diff.std(ddof=1))
    row["cohens_d"] = cohens_d(b, a)
    if sd == 0.0 and not diff.any():  # identical readings: no effect, by definition
        row["paired_d"], row["p_value"] = 0.0, 1.0
    elif sd == 0.0:  # a constant non-zero shift: d is unbounded; the t-test says p = 0
        row["p_value"] = float(stats.ttest_rel(b, a).pvalue)
    else:
        row["paired_d"] = float(diff.mean() / sd)
        row["p_value"] = float(stats.ttest_rel(b, a).pvalue)
    return row


def paired_diff(proj_a: pd.DataFrame, proj_b: pd.DataFrame, frame: str = "response") -> pd.DataFrame:
    """Per (trait, method, site, layer): B against A over per-response mean projections.

    Columns: trait, method, site, layer, n_prompts, mean_a, mean_b, std_a, std_b (ddof=1),
    mean_diff (mean over prompts of B_i - A_i), paired_d = mean(diff) / std(diff, ddof=1)
    (the reference used the population std; ddof=1 matches the paired t-test), cohens_d
    (unpaired, signed, B minus A, pooled sd), p_value (paired t-test, ``scipy.stats.ttest_rel``).

    Defined edge cases: a variant against itself gives mean_diff 0, paired_d 0.0, cohens_d 0.0 and
    p_value 1.0. A constant non-zero shift gives paired_d NaN (unbounded). Fewer than 2 prompts:
    paired_d, cohens_d, p_value and the stds are NaN.
    """
    aligned_deltas(proj_a, proj_b)  # alignment check only
    means_a = response_means(proj_a, frame).rename(columns={"mean_projection": "a"})
    means_b = response_means(proj_b, frame).rename(columns={"mean_projection": "b"})
    both = means_a.merge(means_b[["prompt_id", *VECTOR_KEYS, "b"]], on=["prompt_id", *VECTOR_KEYS])
    records = []
    for key, rows in both.groupby(VECTOR_KEYS, sort=True):
        rows = rows.sort_values("prompt_id")
        stats_row = _paired_row(rows["a"].to_numpy(float), rows["b"].to_numpy(float))
        records.append({**dict(zip(VECTOR_KEYS, key)), **stats_row})
    columns = [*VECTOR_KEYS, "n_prompts", "mean_a", "mean_b", "std_a", "std_b", "mean_diff",
               "paired_d", "cohens_d", "p_value"]
    return pd.DataFrame.from_records(records, columns=columns)


def diff_vector_cosines(
    mean_act_a: torch.Tensor,
    mean_act_b: torch.Tensor,
    vectors: Mapping[str, torch.Tensor],
    layers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Cosine between the mean activation shift (B - A) and each trait's vector, per layer.

    ``mean_act_*``: ``[n_layers, hidden]`` (the mean over prompts of each response's mean token
    activation); ``vectors``: trait -> ``[n_layers, hidden]`` with the same rows; ``layers``: the
    layer index of each row (default 0..n_layers-1). The cosine is NaN where the shift (or the
    vector) is zero. Columns: trait, layer, cosine.
    """
    a = torch.as_tensor(mean_act_a).detach().to("cpu", torch.float64)
    b = torch.as_tensor(mean_act_b).detach().to("cpu", torch.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"mean activations must both be [n_layers, hidden]; got {tuple(a.shape)} and {tuple(b.shape)}")
    layer_ids = list(range(a.shape[0])) if layers is None else [int(x) for x in layers]
    if len(layer_ids) != a.shape[0]:
        raise ValueError(f"{len(layer_ids)} layer ids for {a.shape[0]} rows of activations")
    diff = b - a  # [n_layers, hidden]
    diff_norm = torch.linalg.vector_norm(diff, dim=-1)  # [n_layers]
    records = []
    for trait, vec in vectors.items():
        v = torch.as_tensor(vec).detach().to("cpu", torch.float64)
        if v.shape != diff.shape:
            raise ValueError(f"vectors for {trait!r} are {tuple(v.shape)}; activations are {tuple(diff.shape)}")
        denom = diff_norm * torch.linalg.vector_norm(v, dim=-1)  # [n_layers]
        cos = (diff * v).sum(dim=-1) / denom
        for row, layer in enumerate(layer_ids):
            value = float(cos[row]) if float(denom[row]) > 0.0 else NAN
            records.append({"trait": trait, "layer": layer, "cosine": value})
    return pd.DataFrame.from_records(records, columns=["trait", "layer", "cosine"])


def _ends_clause(token: str) -> bool:
    return any(d in token for d in CLAUSE_DELIMITERS)


def clause_table(tokens: Sequence[str], deltas: Sequence[float]) -> list[dict[str, object]]:
    """Split a response into clauses and rank them by mean delta, highest first.

    A clause ends at (and includes) a token containing any of ``, . ; — \\n ! ? :``; the tokens
    after the last such token form a final clause. A clause whose text is only whitespace (e.g.
    a "\\n\\n" token after a full stop) is merged into the clause before it (or, at the start of a
    response, into the one after), so no ranked clause is blank. ``start``/``end`` are positions in
    ``tokens`` (end exclusive); ``text`` is the joined tokens, stripped. Ties keep text order.
    Each dict: clause_rank (1-based), text, start, end, n_tokens, mean_delta, max_delta.
    """
    if len(tokens) != len(deltas):
        raise ValueError(f"{len(tokens)} tokens but {len(deltas)} deltas")
    spans: list[list[int]] = []
    start = 0
    for i, token in enumerate(tokens):
        if _ends_clause(token):
            spans.append([start, i + 1])
            start = i + 1
    if start < len(tokens):
        spans.append([start, len(tokens)])

    merged: list[list[int]] = []
    pending_start: int | None = None  # leading blank clauses wait for the next non-blank one
    for s, e in spans:
        blank = not "".join(tokens[s:e]).strip()
        if blank and merged:
            merged[-1][1] = e
        elif blank:
            pending_start = s if pending_start is None else pending_start
        else:
            merged.append([s if pending_start is None else pending_start, e])
            pending_start = None
    if pending_start is not None:  # the whole response is blank: keep it as one clause
        merged.append([pending_start, len(tokens)])

    values = np.asarray(deltas, dtype=np.float64)
    clauses = [
        {
            "text": "".join(tokens[s:e]).strip(),
            "start": s,
            "end": e,
            "n_tokens": e - s,
            "mean_delta": float(values[s:e].mean()),
            "max_delta": float(values[s:e].max()),
        }
        for s, e in merged
    ]
    clauses.sort(key=lambda c: -c["mean_delta"])  # stable: ties keep text order
    return [{"clause_rank": rank, **clause} for rank, clause in enumerate(clauses, start=1)]


def per_token_diff(
    proj_a: pd.DataFrame,
    proj_b: pd.DataFrame,
    tokens_by_prompt: Mapping[str, Sequence[str]] | None = None,
    frame: str = "response",
) -> pd.DataFrame:
    """Ranked clauses of each response by delta = projection_B - projection_A, per vector.

    ``tokens_by_prompt``: prompt_id -> the frame's token strings (e.g. ``response_tokens``); when
    None the tables' ``token`` column is used. Its length must equal the number of the frame's
    tokens in the tables. start/end are positions within the frame (0 = first response token),
    not token_index. Columns: prompt_id, trait, method, site, layer, clause_rank, text, start, end,
    n_tokens, mean_delta, max_delta.
    """
    aligned = aligned_deltas(proj_a, proj_b)
    aligned = aligned[aligned["frame"] == frame].sort_values(["prompt_id", *VECTOR_KEYS, "token_index"])
    records = []
    for (pid, *key), rows in aligned.groupby(["prompt_id", *VECTOR_KEYS], sort=True):
        if tokens_by_prompt is None:
            tokens = rows["token"].astype(str).tolist()
        else:
            if str(pid) not in tokens_by_prompt:
                raise ValueError(f"no tokens given for prompt {pid!r}")
            tokens = [str(t) for t in tokens_by_prompt[str(pid)]]
            if len(tokens) != len(rows):
                raise ValueError(f"prompt {pid!r}: {len(tokens)} tokens given but {len(rows)} {frame} tokens projected")
        for clause in clause_table(tokens, rows["delta"].tolist()):
            records.append({"prompt_id": str(pid), **dict(zip(VECTOR_KEYS, key)), **clause})
    columns = ["prompt_id", *VECTOR_KEYS, "clause_rank", "text", "start", "end", "n_tokens", "mean_delta", "max_delta"]
    return pd.DataFrame.from_records(records, columns=columns)
