"""The train/val split: seeded, pair-preserving, with at least one val and two train groups."""

from __future__ import annotations

import pytest

from trait_interp.core.errors import UserInputError
from trait_interp.extraction.split import assign_split


def test_pairs_stay_together_and_the_split_is_seeded():
    groups = [i // 2 for i in range(40)]  # both sides of pair i share group i
    split = assign_split(groups, 0.2, seed=3)
    assert set(split) == set(range(20)) and sum(v == "val" for v in split.values()) == 4
    assert split == assign_split(list(reversed(groups)), 0.2, seed=3)  # order of rows does not matter
    assert split != assign_split(groups, 0.2, seed=4)


def test_too_few_pairs_and_a_bad_fraction_name_the_param():
    with pytest.raises(UserInputError, match="extraction.val_fraction"):
        assign_split(list(range(10)), 1.0, 0)
    with pytest.raises(UserInputError, match="only 2 pairs"):
        assign_split([0, 1], 0.2, 0)
