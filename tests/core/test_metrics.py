"""Tests for trait_interp.core.metrics against independent numpy/scipy computations and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from trait_interp.core import metrics


def _reference_cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook pooled-sd Cohen's d, written out independently of the module."""
    n1, n2 = len(a), len(b)
    s1 = np.sum((a - a.mean()) ** 2) / (n1 - 1)
    s2 = np.sum((b - b.mean()) ** 2) / (n2 - 1)
    pooled = np.sqrt(((n1 - 1) * s1 + (n2 - 1) * s2) / (n1 + n2 - 2))
    return float((a.mean() - b.mean()) / pooled)


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


# --------------------------------------------------------------------------- cohens_d


@pytest.mark.parametrize(("n_pos", "n_neg"), [(30, 30), (12, 41)])
def test_cohens_d_matches_numpy(rng: np.random.Generator, n_pos: int, n_neg: int) -> None:
    pos = rng.normal(1.3, 2.0, size=n_pos)
    neg = rng.normal(0.2, 0.7, size=n_neg)
    expected = _reference_cohens_d(pos, neg)
    assert metrics.cohens_d(pos, neg) == pytest.approx(expected, rel=1e-12)
    assert metrics.cohens_d(torch.from_numpy(pos), torch.from_numpy(neg)) == pytest.approx(expected, rel=1e-12)
    assert metrics.cohens_d(neg, pos) == pytest.approx(-expected, rel=1e-12)


def test_cohens_d_constant_groups_is_zero() -> None:
    result = metrics.cohens_d(np.array([2.0, 2.0, 2.0]), np.array([1.0, 1.0]))
    assert result == 0.0
    assert isinstance(result, float)


def test_cohens_d_needs_two_per_group() -> None:
    with pytest.raises(ValueError):
        metrics.cohens_d(np.array([1.0]), np.array([0.0, 1.0]))


# --------------------------------------------------------------------------- welch_p_value


@pytest.mark.parametrize(("n_pos", "n_neg"), [(25, 25), (9, 40)])
def test_welch_p_value_matches_scipy(rng: np.random.Generator, n_pos: int, n_neg: int) -> None:
    pos = rng.normal(0.5, 1.0, size=n_pos)
    neg = rng.normal(0.0, 3.0, size=n_neg)
    expected = stats.ttest_ind(pos, neg, equal_var=False).pvalue
    assert metrics.welch_p_value(pos, neg) == pytest.approx(float(expected), rel=1e-12)


def test_welch_p_value_is_one_for_constant_groups() -> None:
    assert metrics.welch_p_value(np.array([1.0, 1.0, 1.0]), np.array([3.0, 3.0])) == 1.0


# --------------------------------------------------------------------------- threshold / accuracy


def test_midpoint_threshold() -> None:
    assert metrics.midpoint_threshold(np.array([2.0, 4.0]), np.array([-1.0, 0.0, 1.0])) == pytest.approx(1.5)


def test_balanced_accuracy_hand_computed() -> None:
    pos = np.array([1.0, 2.0, 3.0])  # > 1.5: 2 of 3
    neg = np.array([0.0, 1.0, 5.0, 6.0])  # <= 1.5: 2 of 4
    assert metrics.balanced_accuracy(pos, neg, 1.5) == pytest.approx((2 / 3 + 2 / 4) / 2)


def test_balanced_accuracy_ties_count_as_negative() -> None:
    pos = torch.tensor([1.0, 2.0])  # 1.0 is not > 1.0 -> 1 of 2 correct
    neg = torch.tensor([1.0, 0.0])  # both <= 1.0 -> 2 of 2 correct
    assert metrics.balanced_accuracy(pos, neg, 1.0) == pytest.approx(0.75)


def test_balanced_accuracy_weights_classes_equally() -> None:
    # 1 pos (correct) vs 9 negs (all wrong): plain accuracy would be 0.1, balanced is 0.5.
    assert metrics.balanced_accuracy(np.array([5.0]), np.full(9, 5.0 + 1.0), 0.0) == pytest.approx(0.5)


# --------------------------------------------------------------------------- scalar_projection


def test_scalar_projection_matches_formula(rng: np.random.Generator) -> None:
    acts = torch.from_numpy(rng.normal(size=(6, 5)))
    vector = torch.from_numpy(rng.normal(size=5) * 3.0)  # deliberately not unit norm
    expected = acts.numpy() @ vector.numpy() / np.linalg.norm(vector.numpy())
    result = metrics.scalar_projection(acts, vector)
    assert result.dtype == torch.float32
    assert result.shape == (6,)
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_scalar_projection_hidden_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        metrics.scalar_projection(torch.zeros(4, 5), torch.ones(6))


# --------------------------------------------------------------------------- score_direction


def test_score_direction_thresholds_at_train_midpoint() -> None:
    """Train midpoint is 0; val midpoint would be 2.125 and give 0.75 instead of 0.5."""
    vector = torch.tensor([2.0, 0.0])  # projection = first coordinate
    train_pos = torch.tensor([[1.0, 9.0], [1.0, -3.0]])
    train_neg = torch.tensor([[-1.0, 4.0], [-1.0, 0.0]])
    val_pos = torch.tensor([[0.5, 0.0], [5.0, 1.0]])
    val_neg = torch.tensor([[1.0, 0.0], [2.0, 7.0]])

    val_pos_s = np.array([0.5, 5.0])
    val_neg_s = np.array([1.0, 2.0])
    val_midpoint = (val_pos_s.mean() + val_neg_s.mean()) / 2
    # The construction only discriminates if the two thresholds disagree.
    assert metrics.balanced_accuracy(val_pos_s, val_neg_s, val_midpoint) == pytest.approx(0.75)

    scores = metrics.score_direction(train_pos, train_neg, val_pos, val_neg, vector)
    assert scores.threshold == pytest.approx(0.0)
    assert scores.val_accuracy == pytest.approx(0.5)  # pos: 2/2 above 0; neg: 0/2 at or below 0
    assert scores.train_accuracy == pytest.approx(1.0)
    assert scores.polarity_correct is True
    assert scores.cohens_d == pytest.approx(_reference_cohens_d(val_pos_s, val_neg_s), rel=1e-6)
    expected_p = stats.ttest_ind(val_pos_s, val_neg_s, equal_var=False).pvalue
    assert scores.p_value == pytest.approx(float(expected_p), rel=1e-6)


def test_score_direction_detects_reversed_polarity(rng: np.random.Generator) -> None:
    train_pos = torch.from_numpy(rng.normal(1.0, 1.0, size=(40, 3)))
    train_neg = torch.from_numpy(rng.normal(-1.0, 1.0, size=(40, 3)))
    val_pos = torch.from_numpy(rng.normal(1.0, 1.0, size=(30, 3)))
    val_neg = torch.from_numpy(rng.normal(-1.0, 1.0, size=(30, 3)))
    forward = metrics.score_direction(train_pos, train_neg, val_pos, val_neg, torch.ones(3))
    backward = metrics.score_direction(train_pos, train_neg, val_pos, val_neg, -torch.ones(3))
    assert forward.polarity_correct is True and forward.cohens_d > 0 and forward.val_accuracy > 0.9
    assert backward.polarity_correct is False and backward.cohens_d < 0 and backward.val_accuracy < 0.1
    assert backward.cohens_d == pytest.approx(-forward.cohens_d, rel=1e-5)
    assert isinstance(forward.p_value, float) and isinstance(forward.threshold, float)
