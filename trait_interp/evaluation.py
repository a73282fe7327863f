"""Held-out scoring of vectors, per layer: accuracy, signed Cohen's d, polarity, p-value."""

from __future__ import annotations

from dataclasses import asdict

import torch

from trait_interp.extraction import ClassSets
from trait_interp.metrics import score_direction


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


def best_layer(records: list[dict]) -> dict:
    """The layer with the highest val accuracy (ties: larger |d|, then lower layer)."""
    return max(records, key=lambda r: (r["val_accuracy"], abs(r["cohens_d"]), -r["layer"]))
