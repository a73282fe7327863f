"""Held-out scoring primitives for a trait direction.

Score arguments (``pos_scores``/``neg_scores``) are 1-D torch tensors or numpy arrays;
all functions return plain Python floats/bools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

Scores = Union[torch.Tensor, np.ndarray]


def _as_array(scores: Scores, name: str) -> np.ndarray:
    """Convert 1-D scores (torch or numpy, any float dtype incl. bf16) to float64 numpy."""
    if isinstance(scores, torch.Tensor):
        array = scores.detach().to("cpu", torch.float64).numpy()
    else:
        array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    return array


def scalar_projection(acts: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Scalar projection of each row onto ``vector``: ``acts @ v / ||v||`` -> [n] float32."""
    acts_t = torch.as_tensor(acts).detach().to("cpu", torch.float32)  # [n, hidden]
    vector_t = torch.as_tensor(vector).detach().to("cpu", torch.float32)  # [hidden]
    if acts_t.ndim != 2 or vector_t.ndim != 1:
        raise ValueError(f"expected acts [n, hidden] and vector [hidden]; got {tuple(acts_t.shape)} and {tuple(vector_t.shape)}")
    if acts_t.shape[1] != vector_t.shape[0]:
        raise ValueError(f"hidden size mismatch: acts has {acts_t.shape[1]}, vector has {vector_t.shape[0]}")
    norm = torch.linalg.vector_norm(vector_t)
    if norm.item() == 0.0:
        raise ValueError("cannot project onto a zero vector")
    return acts_t @ vector_t / norm  # [n]


def midpoint_threshold(pos_scores: Scores, neg_scores: Scores) -> float:
    """Decision threshold halfway between the two class means."""
    pos = _as_array(pos_scores, "pos_scores")
    neg = _as_array(neg_scores, "neg_scores")
    return float((pos.mean() + neg.mean()) / 2.0)


def balanced_accuracy(pos_scores: Scores, neg_scores: Scores, threshold: float) -> float:
    """Mean of the per-class accuracies: pos is correct when > threshold, neg when <= threshold."""
    pos = _as_array(pos_scores, "pos_scores")
    neg = _as_array(neg_scores, "neg_scores")
    return float(((pos > threshold).mean() + (neg <= threshold).mean()) / 2.0)


def _check_group_sizes(pos: np.ndarray, neg: np.ndarray, what: str) -> None:
    if pos.size < 2 or neg.size < 2:
        raise ValueError(f"{what} needs at least 2 scores per group; got {pos.size} and {neg.size}")


def cohens_d(pos_scores: Scores, neg_scores: Scores) -> float:
    """Signed effect size (mean_pos - mean_neg) / pooled sd (ddof=1); 0.0 when pooled sd is 0."""
    pos = _as_array(pos_scores, "pos_scores")
    neg = _as_array(neg_scores, "neg_scores")
    _check_group_sizes(pos, neg, "cohens_d")
    n1, n2 = pos.size, neg.size
    pooled_var = ((n1 - 1) * pos.var(ddof=1) + (n2 - 1) * neg.var(ddof=1)) / (n1 + n2 - 2)
    pooled_sd = float(np.sqrt(pooled_var))
    if pooled_sd == 0.0:
        return 0.0
    return float((pos.mean() - neg.mean()) / pooled_sd)


def welch_p_value(pos_scores: Scores, neg_scores: Scores) -> float:
    """Two-sided Welch t-test p-value; 1.0 when both groups are constant (t undefined)."""
    pos = _as_array(pos_scores, "pos_scores")
    neg = _as_array(neg_scores, "neg_scores")
    _check_group_sizes(pos, neg, "welch_p_value")
    if np.ptp(pos) == 0.0 and np.ptp(neg) == 0.0:
        return 1.0
    from scipy import stats  # 0.8 s to import: only the p-value needs it

    return float(stats.ttest_ind(pos, neg, equal_var=False).pvalue)


@dataclass(frozen=True)
class SeparationScores:
    train_accuracy: float
    val_accuracy: float
    cohens_d: float
    polarity_correct: bool
    p_value: float
    threshold: float


def score_direction(
    train_pos: torch.Tensor,
    train_neg: torch.Tensor,
    val_pos: torch.Tensor,
    val_neg: torch.Tensor,
    vector: torch.Tensor,
) -> SeparationScores:
    """Score a direction: threshold at the TRAIN projection midpoint, evaluate on val.

    The threshold is never fitted on validation data, so val_accuracy is an honest
    held-out number. cohens_d, p_value and polarity are computed on the val projections.
    """
    train_pos_s = scalar_projection(train_pos, vector)  # [n_train_pos]
    train_neg_s = scalar_projection(train_neg, vector)  # [n_train_neg]
    val_pos_s = scalar_projection(val_pos, vector)  # [n_val_pos]
    val_neg_s = scalar_projection(val_neg, vector)  # [n_val_neg]

    threshold = midpoint_threshold(train_pos_s, train_neg_s)
    return SeparationScores(
        train_accuracy=balanced_accuracy(train_pos_s, train_neg_s, threshold),
        val_accuracy=balanced_accuracy(val_pos_s, val_neg_s, threshold),
        cohens_d=cohens_d(val_pos_s, val_neg_s),
        polarity_correct=bool(val_pos_s.double().mean() > val_neg_s.double().mean()),
        p_value=welch_p_value(val_pos_s, val_neg_s),
        threshold=threshold,
    )
