"""Held-out scoring of vectors, per layer: accuracy, signed Cohen's d, polarity, p-value."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import torch

from trait_interp.core.metrics import score_direction
from trait_interp.extraction.activation_store import ActivationsMeta
from trait_interp.extraction.extract import ClassSets


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
