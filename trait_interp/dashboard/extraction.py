"""Extraction view data: every (site, method, layer) of one trait's held-out evaluation, and the best vectors."""

from __future__ import annotations

from typing import Any

import pandas as pd

from trait_interp.dashboard.jsonable import num

BASELINE = "random_baseline"  # never "the best vector" (as in evaluate_vectors' metrics)
N_BEST = 10


def rank_vectors(evaluation: pd.DataFrame) -> pd.DataFrame:
    """Vectors best first: highest val accuracy, ties to the larger |d|, then the lower layer.

    The order ``evaluate_vectors`` uses for its "best" metric, so the first row here is that vector.
    """
    key = evaluation.assign(abs_d=evaluation["cohens_d"].abs(), neg_layer=-evaluation["layer"])
    ranked = key.sort_values(["val_accuracy", "abs_d", "neg_layer"], ascending=False, kind="stable")
    return evaluation.loc[ranked.index]


def _row(row: pd.Series) -> dict[str, Any]:
    return {
        "site": str(row["site"]),
        "method": str(row["method"]),
        "layer": int(row["layer"]),
        "val_accuracy": num(row["val_accuracy"]),
        "train_accuracy": num(row["train_accuracy"]),
        "cohens_d": num(row["cohens_d"]),
        "polarity_correct": bool(row["polarity_correct"]),
        "p_value": num(row["p_value"], 6),
        "midpoint": num(row["threshold"]),
        "n_val": int(row["n_val_positive"]) + int(row["n_val_negative"]),
    }


def extraction_data(trait: str, evaluation: pd.DataFrame, n_best: int = N_BEST) -> dict[str, Any]:
    """One trait's page: the full table (compact rows) for the heatmaps, the top vectors, best per method.

    ``evaluation`` is a ``schemas.evaluation.VectorEvaluation`` table.
    """
    columns = ["site", "method", "layer", "val_accuracy", "cohens_d", "polarity_correct"]
    table = evaluation.sort_values(["site", "method", "layer"], kind="stable")
    real = evaluation[evaluation["method"] != BASELINE]
    best = rank_vectors(real if len(real) else evaluation).head(n_best)
    best_by_method = {
        f"{site}/{method}": _row(rank_vectors(group).iloc[0])
        for (site, method), group in evaluation.groupby(["site", "method"], sort=True)
    }
    return {
        "trait": trait,
        "sites": sorted(evaluation["site"].unique().tolist()),
        "methods": sorted(evaluation["method"].unique().tolist()),
        "layers": sorted(int(x) for x in evaluation["layer"].unique()),
        "columns": columns,
        "rows": [
            [str(r.site), str(r.method), int(r.layer), num(r.val_accuracy), num(r.cohens_d), bool(r.polarity_correct)]
            for r in table.itertuples()
        ],
        "best": [_row(row) for _, row in best.iterrows()],
        "best_by_method": best_by_method,
    }


def midpoints(evaluation: pd.DataFrame) -> dict[tuple[str, str, int], float]:
    """(site, method, layer) -> the vector's train-set midpoint (its decision threshold)."""
    return {
        (str(r.site), str(r.method), int(r.layer)): float(r.threshold) for r in evaluation.itertuples()
    }
