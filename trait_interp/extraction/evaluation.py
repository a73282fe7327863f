"""Held-out scoring of vectors, per layer: accuracy, signed Cohen's d, polarity, p-value."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import torch

from trait_interp.core.errors import UserInputError
from trait_interp.core.metrics import score_direction
from trait_interp.extraction.activation_store import ActivationsMeta
from trait_interp.extraction.extract import ClassSets

MIN_VAL_PAIRS = 5
"""Fewer held-out pairs (per side, unpaired) than this: the metrics flag it and the stage warns.

With n per side, balanced accuracy moves in steps of 1/(2n) (0.17 for the 3 pairs a 15-pair trait
keeps at val_fraction 0.2) and Cohen's d is very uncertain.
"""


def check_held_out(val: ClassSets, where: str, val_fraction: float) -> None:
    """Cohen's d and the p-value need two held-out examples per side; fewer is an error naming the fix."""
    n_pos, n_neg = int(val.positive.shape[0]), int(val.negative.shape[0])
    if min(n_pos, n_neg) < 2:
        raise UserInputError(
            f"{where}: only {n_pos} positive and {n_neg} negative held-out examples; Cohen's d and the p-value "
            f"need at least 2 per side: raise extraction.val_fraction (now {val_fraction}) or add scenarios"
        )


def held_out_counts(df: pd.DataFrame) -> dict[str, int | bool]:
    """Held-out examples per side (the fewest over the table's rows), against ``MIN_VAL_PAIRS``."""
    positive, negative = int(df["n_val_positive"].min()), int(df["n_val_negative"].min())
    return {"positive": positive, "negative": negative, "min_recommended": MIN_VAL_PAIRS,
            "too_few": min(positive, negative) < MIN_VAL_PAIRS}


def evaluate_layers(
    train: ClassSets, val: ClassSets, vectors: torch.Tensor, layers: tuple[int, ...]
) -> list[dict[str, float | int | bool]]:
    """One record per layer; the decision threshold comes from train projections only."""
    records = []
    for row, layer in enumerate(layers):
        scores = score_direction(
            train.positive[:, row], train.negative[:, row], val.positive[:, row], val.negative[:, row], vectors[row]
        )
        records.append(
            {
                "layer": layer,
                **asdict(scores),
                "n_val_positive": int(val.positive.shape[0]),
                "n_val_negative": int(val.negative.shape[0]),
            }
        )
    return records


def summarize(df: pd.DataFrame, meta: ActivationsMeta, plot_site: str) -> dict:
    """Small metrics for `dvc metrics show`: the best vector overall, and per method at one site."""

    def brief(row: pd.Series) -> dict:
        return {"layer": int(row["layer"]), "val_accuracy": round(float(row["val_accuracy"]), 4),
                "cohens_d": round(float(row["cohens_d"]), 4)}

    overall = best_vector(df)
    per_method = {
        method: brief(group.loc[best_index(group)]) for method, group in df[df["site"] == plot_site].groupby("method")
    }
    return {
        "trait": meta.trait,
        "position": meta.position,
        "held_out": held_out_counts(df),
        "best": {"site": overall["site"], "method": overall["method"], **brief(overall)},
        plot_site: per_method,
    }


def best_vector(df: pd.DataFrame) -> pd.Series:
    """The row of the best vector overall: a random baseline is never "the best vector"."""
    real = df[df["method"] != "random_baseline"]
    return df.loc[best_index(real if len(real) else df)]


def best_index(df: pd.DataFrame) -> int:
    """Row with the highest val accuracy; ties go to the larger |d|, then the lower layer."""
    key = df.assign(abs_d=df["cohens_d"].abs(), neg_layer=-df["layer"])
    return key.sort_values(["val_accuracy", "abs_d", "neg_layer"], ascending=False).index[0]
