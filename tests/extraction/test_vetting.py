"""Vetting verdicts: thresholds, missing scores, paired filtering, and the minimum-pairs error."""

from __future__ import annotations

import pytest

from trait_interp.core.errors import UserInputError
from trait_interp.extraction.vetting import VettingSettings, check_enough, verdicts

PAIRS = [0, 0, 1, 1, 2, 2]
SIDES = ["positive", "negative"] * 3


def test_thresholds_are_inclusive_and_none_fails():
    settings = VettingSettings(paired_filter=False)
    result = verdicts(PAIRS, SIDES, [60, 40, 59.9, 40.1, None, 0], settings)
    assert result.passed == [True, True, False, False, False, True]
    assert result.kept == result.passed
    assert result.n_kept_pairs == 1  # min(1 positive, 2 negatives)


def test_paired_filter_drops_both_sides_when_one_fails():
    result = verdicts(PAIRS, SIDES, [90, 10, 90, 80, 20, 5], VettingSettings())
    assert result.passed == [True, True, True, False, False, True]
    assert result.kept == [True, True, False, False, False, False]
    assert result.n_kept_pairs == 1


def test_a_pair_missing_one_side_is_not_kept_with_paired_filtering():
    result = verdicts([0, 0, 1], ["positive", "negative", "positive"], [90, 10, 90], VettingSettings())
    assert result.kept == [True, True, False]


def test_disabled_vetting_keeps_everything():
    result = verdicts(PAIRS, SIDES, [None] * 6, VettingSettings(enabled=False))
    assert all(result.kept) and result.n_kept_pairs == 3


def test_too_few_pairs_is_a_clear_error():
    result = verdicts(PAIRS, SIDES, [90, 10, 90, 80, 20, 5], VettingSettings())
    with pytest.raises(UserInputError, match=r"behavior/refusal: only 1 pairs pass vetting \(need >= 2\)"):
        check_enough(result, VettingSettings(min_pairs=2), "behavior/refusal", "params.yaml")
    check_enough(result, VettingSettings(min_pairs=1), "behavior/refusal", "params.yaml")
