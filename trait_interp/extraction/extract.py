"""From captured activations and their split index to per-layer vectors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from trait_interp.core.errors import UserInputError
from trait_interp.extraction.batched_methods import extract_all_layers
from trait_interp.extraction.methods import METHODS, MethodSettings, get_method


@dataclass(frozen=True)
class VectorSettings:
    """``vectors:`` in params: which methods to run and their settings."""

    methods: tuple[str, ...] = tuple(METHODS)
    settings: MethodSettings = field(default_factory=MethodSettings)

    def __post_init__(self) -> None:
        for name in self.methods:
            try:
                get_method(name)  # unknown method -> clear error now, before any work
            except ValueError as err:
                raise UserInputError(f"vectors.methods: {err}") from None


PAIRED_METHODS: tuple[str, ...] = ("pca",)
"""Methods that need row i of each class to be the two sides of one pair."""


def check_methods_fit_pairing(methods: tuple[str, ...], paired: bool, where: str) -> None:
    """Unpaired data with a method that needs pairs is an error naming the two ways out."""
    needing = [m for m in methods if m in PAIRED_METHODS]
    if needing and not paired:
        raise UserInputError(
            f"{where}: {', '.join(needing)} needs paired data (the difference of each pair's two sides) but the "
            "activations were captured unpaired (extraction.paired: false); drop it from vectors.methods, "
            "or pair the data (extraction.paired: true, line i of positive with line i of negative)"
        )


@dataclass(frozen=True)
class ClassSets:
    """Activations of one split for one site: ``[n, n_layers, width]`` per class.

    When paired, row i of ``positive`` and row i of ``negative`` are the two sides of one pair.
    """

    positive: torch.Tensor
    negative: torch.Tensor


def class_sets(acts: torch.Tensor, examples: pd.DataFrame, split: str, paired: bool) -> ClassSets:
    """Rows of ``split`` with a non-empty selection; when paired, only complete pairs, in pair order."""
    rows = examples[(examples["split"] == split) & (examples["n_tokens"] > 0)]
    pos = rows[rows["polarity"] == "positive"].set_index("pair_index")["row"]
    neg = rows[rows["polarity"] == "negative"].set_index("pair_index")["row"]
    if paired:
        common = sorted(set(pos.index) & set(neg.index))
        pos, neg = pos.loc[common], neg.loc[common]
    else:
        pos, neg = pos.sort_index(), neg.sort_index()
    if len(pos) == 0 or len(neg) == 0:
        raise UserInputError(
            f"no usable {split} examples for one polarity (after dropping empty selections); "
            "add scenarios or change extraction.position"
        )
    return ClassSets(positive=acts[torch.tensor(pos.to_numpy())], negative=acts[torch.tensor(neg.to_numpy())])


def extract_layers(
    train: ClassSets, method: str, settings: MethodSettings, layers: tuple[int, ...]
) -> tuple[torch.Tensor, dict[str, dict[str, float]]]:
    """One unit vector per layer: ``[n_layers, width]`` and ``{str(layer): train info}``.

    All layers in one batched call (``batched_methods``) on the device the activations are on;
    the per-layer functions in ``methods`` stay as the definition the batched ones are tested against.
    """
    try:
        return extract_all_layers(
            train.positive.transpose(0, 1), train.negative.transpose(0, 1), method, settings, layers
        )  # [n, n_layers, width] -> [n_layers, n, width] views
    except ValueError as err:
        raise UserInputError(f"method '{method}' failed: {err}") from None


def mean_norms(sets: ClassSets, layers: tuple[int, ...]) -> dict[str, float]:
    """Mean ||h|| per layer over both classes (for coefficient scaling)."""
    both = torch.cat([sets.positive, sets.negative])  # [n, n_layers, width]
    norms = both.norm(dim=-1).mean(dim=0)  # [n_layers]
    return {str(layer): float(norms[i]) for i, layer in enumerate(layers)}
