"""Sweep view data: per method, layer (and window) x ratio grids of trait delta, coherence and side effect.

One page per trait (the grids, the method comparison, the baseline answers) and one answers file per
method, loaded when a cell is clicked. Rows are the single layers ascending, then the windows; columns
the ratios ascending. A cell is the configuration's ``config`` id, so its answers are
``answers[config]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from trait_interp.dashboard.jsonable import num
from trait_interp.steering.sweep_results import BASELINE, best_per_method

GRIDS = ("delta", "coherence_mean", "side_effect", "composite", "trait_mean")


def _row_order(results: pd.DataFrame) -> list[str]:
    keyed = results.drop_duplicates("layers").assign(_window=results["kind"] == "window")
    ordered = keyed.sort_values(["_window", "first_layer", "last_layer"], kind="stable")
    return [str(label) for label in ordered["layers"]]


def _grid(rows: pd.DataFrame, labels: Sequence[str], ratios: Sequence[float], column: str) -> list[list[Any]]:
    at = {(str(r.layers), float(r.ratio)): getattr(r, column) for r in rows.itertuples()}
    out = []
    for label in labels:
        line = []
        for ratio in ratios:
            value = at.get((label, ratio))
            if value is None:
                line.append(None)
            elif column == "config":
                line.append(int(value))
            elif column == "coherent":
                line.append(bool(value))
            else:
                line.append(num(value, 6 if column == "side_effect" else 4))
        out.append(line)
    return out


def _answers(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"q": int(r.question_index), "response": str(r.response), "trait": num(r.trait_score, 2),
             "coherence": num(r.coherence, 2), "relevance": num(r.relevance, 2)}
            for r in rows.sort_values("question_index", kind="stable").itertuples()]


def sweep_data(trait: str, results: pd.DataFrame, responses: pd.DataFrame, min_coherence: float,
               predictors: Sequence[dict[str, Any]], answers_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(page, answers pages)`` of one trait from ``schemas.sweep`` tables.

    ``predictors`` are the trait's ``analyses.steering_predictors.predictor_rows`` (best layers, r);
    ``answers_key`` is the prefix of the per-method answer pages (``<answers_key>/<k>``).
    """
    labels = _row_order(results)
    ratios = sorted({float(r) for r in results["ratio"]})
    methods = list(dict.fromkeys(str(m) for m in results["method"]))
    best = best_per_method(results)
    by_method = {p["method"]: p for p in predictors}
    grids, comparison, pages = {}, [], {}
    for k, method in enumerate(methods):
        rows = results[results["method"] == method]
        grids[method] = {column: _grid(rows, labels, ratios, column) for column in (*GRIDS, "config", "coherent")}
        row = best[method]
        predictor = by_method.get(method, {})
        comparison.append({
            "method": method,
            "layers": None if row is None else str(row["layers"]),
            "ratio": None if row is None else num(row["ratio"]),
            "delta": None if row is None else num(row["delta"]),
            "coherence": None if row is None else num(row["coherence_mean"]),
            "side_effect": None if row is None else num(row["side_effect"], 6),
            "composite": None if row is None else num(row["composite"]),
            "config": None if row is None else int(row["config"]),
            "best_steering_layer": predictor.get("best_steering_layer"),
            "best_extraction_layer": predictor.get("best_extraction_layer"),
            "r_cohens_d": num(predictor.get("r_cohens_d")),
            "r_val_accuracy": num(predictor.get("r_val_accuracy")),
        })
        configs = set(int(c) for c in rows["config"])
        steered = responses[responses["config"].isin(configs)]
        pages[f"{answers_key}/{k}"] = {str(int(c)): _answers(group) for c, group in steered.groupby("config")}
    baseline = responses[responses["config"] == BASELINE]
    first = results.iloc[0]
    page = {
        "trait": trait,
        "site": str(first["site"]),
        "min_coherence": num(min_coherence),
        "methods": methods,
        "rows": labels,
        "ratios": ratios,
        "baseline": {"trait": num(first["baseline_trait_mean"]), "coherence": num(first["baseline_coherence_mean"])},
        "grids": grids,
        "comparison": comparison,
        "answers": [f"{answers_key}/{k}" for k in range(len(methods))],
        "questions": {str(int(r.question_index)): str(r.question) for r in baseline.itertuples()},
        "baseline_answers": _answers(baseline),
    }
    return page, pages
