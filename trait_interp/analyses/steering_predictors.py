"""What predicts steering: extraction metrics across layers against the sweep's best coherent effect.

For one trait and method (at the sweep's site), every single layer the sweep steered has an
extraction row (``evaluation.csv``: signed Cohen's d and held-out accuracy of that layer's vector)
and a steering outcome: the best coherent effect of the sweep at that layer
(``sweep_results.best_by_layer``: the trait delta in the steering direction of the strongest
configuration whose coherence reached ``min_coherence``). Layers where no configuration was
coherent have no outcome and are left out. Across the remaining layers the Pearson correlation of
each extraction metric with the effect says how well that metric predicts steering; with fewer than
``MIN_LAYERS`` layers (or a constant column) it is None. Beside it: the best steering layer and the
best extraction layer (top held-out accuracy, ties to the larger |d|, then the lower layer:
``extraction.evaluation.best_index``), which need not coincide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from trait_interp.core.errors import UserInputError
from trait_interp.extraction.evaluation import best_index
from trait_interp.steering.sweep_results import best_by_layer, best_layer

MIN_LAYERS = 3  # a correlation over two points is always +-1


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson r of two equal-length columns; None below ``MIN_LAYERS`` points or when either is constant."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < MIN_LAYERS or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.clip(np.corrcoef(a, b)[0, 1], -1.0, 1.0))


def layer_table(evaluation: pd.DataFrame, results: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per layer of the sweep: ``cohens_d``, ``val_accuracy`` (extraction) and the sweep's best ``effect`` (NaN: none coherent)."""
    site = str(results["site"].iloc[0])
    rows = evaluation[(evaluation["site"] == site) & (evaluation["method"] == method)]
    if rows.empty:
        raise UserInputError(f"no evaluation rows for site '{site}' method '{method}': every sweep method needs "
                             "its vectors evaluated (vectors.methods, extraction.sites)")
    by_layer = best_by_layer(results, method)
    return by_layer.merge(rows[["layer", "cohens_d", "val_accuracy"]], on="layer", how="inner")


def predictor_rows(trait: str, evaluation: pd.DataFrame, results: pd.DataFrame) -> list[dict[str, Any]]:
    """``schemas.sweep.SteeringPredictors`` rows of one trait: one per sweep method."""
    site = str(results["site"].iloc[0])
    out = []
    for method in dict.fromkeys(str(m) for m in results["method"]):
        table = layer_table(evaluation, results, method)
        usable = table[table["effect"].notna()]
        rows = evaluation[(evaluation["site"] == site) & (evaluation["method"] == method)]
        extraction = rows.loc[best_index(rows)]
        steering = best_layer(table)
        out.append({
            "trait": trait,
            "method": method,
            "site": site,
            "n_layers": int(len(usable)),
            "r_cohens_d": pearson(usable["cohens_d"], usable["effect"]),
            "r_val_accuracy": pearson(usable["val_accuracy"], usable["effect"]),
            "best_steering_layer": None if steering is None else int(steering["layer"]),
            "best_steering_effect": None if steering is None else float(steering["effect"]),
            "best_steering_ratio": None if steering is None else float(steering["ratio"]),
            "best_extraction_layer": int(extraction["layer"]),
            "best_extraction_val_accuracy": float(extraction["val_accuracy"]),
            "best_extraction_cohens_d": float(extraction["cohens_d"]),
            "same_layer": steering is not None and int(steering["layer"]) == int(extraction["layer"]),
        })
    return out


def pooled(evaluations: Mapping[str, pd.DataFrame], results: Mapping[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """Per method, the correlations over every (trait, layer) point of all traits together."""
    points: dict[str, list[pd.DataFrame]] = {}
    for trait, table in results.items():
        for method in dict.fromkeys(str(m) for m in table["method"]):
            layers = layer_table(evaluations[trait], table, method)
            points.setdefault(method, []).append(layers[layers["effect"].notna()])
    out = {}
    for method, frames in points.items():
        joined = pd.concat(frames, ignore_index=True)
        out[method] = {
            "n_points": int(len(joined)),
            "r_cohens_d": pearson(joined["cohens_d"], joined["effect"]),
            "r_val_accuracy": pearson(joined["val_accuracy"], joined["effect"]),
        }
    return out

