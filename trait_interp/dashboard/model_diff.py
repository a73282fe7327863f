"""Model diff view data: effect size and cosine per trait and layer, and the clauses that moved most."""

from __future__ import annotations

from typing import Any

import pandas as pd

from trait_interp.dashboard.jsonable import num

N_CLAUSES = 12


def model_diff_data(
    variant_a: str, variant_b: str, paired: pd.DataFrame, cosines: pd.DataFrame, clauses: pd.DataFrame,
    n_clauses: int = N_CLAUSES,
) -> dict[str, Any]:
    """B minus A, from ``schemas.analyses`` ModelDiff, DiffCosine and ClauseDiff tables.

    Per (trait, layer) the ``n_clauses`` clauses with the largest and the smallest mean per-token delta.
    """
    top: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    for (trait, layer), rows in clauses.groupby(["trait", "layer"], sort=True):
        ordered = rows.sort_values(["mean_delta", "prompt_id", "clause_rank"], ascending=[False, True, True], kind="stable")

        def brief(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return [{"prompt_id": str(r.prompt_id), "text": str(r.text), "mean_delta": num(r.mean_delta),
                     "max_delta": num(r.max_delta), "n_tokens": int(r.n_tokens)} for r in frame.itertuples()]

        top.setdefault(str(trait), {})[str(int(layer))] = {
            "increase": brief(ordered[ordered["mean_delta"] > 0].head(n_clauses)),
            "decrease": brief(ordered[ordered["mean_delta"] < 0].iloc[::-1].head(n_clauses)),
        }
    return {
        "a": variant_a,
        "b": variant_b,
        "paired": [
            {"trait": str(r.trait), "layer": int(r.layer), "method": str(r.method), "site": str(r.site),
             "n_prompts": int(r.n_prompts), "mean_a": num(r.mean_a), "mean_b": num(r.mean_b),
             "mean_diff": num(r.mean_diff), "paired_d": num(r.paired_d), "cohens_d": num(r.cohens_d),
             "p_value": num(r.p_value, 6)}
            for r in paired.sort_values(["trait", "layer"]).itertuples()
        ],
        "cosines": [
            {"trait": str(r.trait), "layer": int(r.layer), "cosine": num(r.cosine)}
            for r in cosines.sort_values(["trait", "layer"]).itertuples()
        ],
        "clauses": top,
    }
