"""Steering view data: the judge curves per steered layer set, the chosen best, every answer."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from trait_interp.dashboard.jsonable import num


def _config_id(kind: str, step: int) -> str:
    return "baseline" if kind == "baseline" else f"{kind}-{step}"


def _is_best(row: Any, best: dict[str, Any]) -> bool:
    layers = ",".join(str(layer) for layer in best.get("layers", []))
    coefficient = best.get("coefficient")
    return (
        row.kind != "baseline"
        and coefficient is not None
        and str(row.layers) == layers
        and math.isclose(float(row.coefficient), float(coefficient), rel_tol=1e-9, abs_tol=1e-12)
    )


def steering_data(trait: str, responses: pd.DataFrame, best: dict[str, Any]) -> dict[str, Any]:
    """One trait's page from ``schemas.steering.SteeringResponses`` rows and its ``best.json``.

    Configurations are (kind, step); their means skip unscored answers, like the steering curve.
    The baseline (coefficient 0) is the same answers for every layer set, so it is one configuration.
    """
    configs = []
    grouped = responses.groupby(["kind", "step", "layers"], sort=False)
    for (kind, step, layers), rows in grouped:
        first = rows.iloc[0]
        configs.append({
            "id": _config_id(str(kind), int(step)),
            "kind": str(kind),
            "step": int(step),
            "layers": str(layers),
            "coefficient": num(first["coefficient"]),
            "ratio": num(first["ratio"]),
            "trait_mean": num(rows["trait_score"].astype(float).mean()),
            "coherence_mean": num(rows["coherence"].astype(float).mean()),
            "n_questions": int(len(rows)),
            "best": _is_best(first, best),
        })
    configs.sort(key=lambda c: (c["kind"] != "baseline", c["layers"], c["coefficient"] or 0.0))
    questions = (
        responses.drop_duplicates("question_index").sort_values("question_index")[["question_index", "question"]]
    )
    answers: dict[str, list[dict[str, Any]]] = {}
    for row in responses.sort_values("question_index", kind="stable").itertuples():
        answers.setdefault(_config_id(str(row.kind), int(row.step)), []).append({
            "q": int(row.question_index),
            "response": str(row.response),
            "trait": num(row.trait_score, 2),
            "coherence": num(row.coherence, 2),
        })
    keep = ("layers", "method", "site", "positions", "direction", "coefficient", "ratio", "trait_mean",
            "coherence_mean", "baseline_trait_mean", "baseline_coherence_mean", "delta", "valid", "min_coherence")
    return {
        "trait": trait,
        "best": {key: best.get(key) for key in keep},
        "min_coherence": best.get("min_coherence"),
        "configs": configs,
        "questions": {str(int(r.question_index)): str(r.question) for r in questions.itertuples()},
        "answers": answers,
    }
