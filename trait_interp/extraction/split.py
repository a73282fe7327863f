"""Seeded, shuffled train/val split that keeps the two sides of a pair together."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from trait_interp.core.errors import UserInputError


def assign_split(groups: Sequence[Hashable], val_fraction: float, seed: int) -> dict[Hashable, str]:
    """Map each distinct group (a pair index, or (polarity, index) when unpaired) to train/val.

    Groups are shuffled with ``seed``; ``round(n * val_fraction)`` of them (at least 1) go to val,
    and at least 2 stay in train.
    """
    unique = sorted(set(groups), key=repr)
    if not 0.0 < val_fraction < 1.0:
        raise UserInputError(f"extraction.val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, round(len(unique) * val_fraction))
    if len(unique) - n_val < 2:
        raise UserInputError(
            f"only {len(unique)} pairs: too few for a train/val split with val_fraction={val_fraction}; "
            "add scenarios or lower extraction.val_fraction"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    val = {unique[i] for i in order[:n_val]}
    return {g: ("val" if g in val else "train") for g in unique}
