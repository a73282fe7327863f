"""Coefficient search for steering: find the strongest trait effect that keeps the model coherent.

Coefficients are in activation-norm units of the steered model: ``coef = ratio * mean ||h_L||``.
The search starts at ``start_ratio`` (with the sign of the trait's direction), then each step
multiplies the coefficient by ``up_mult`` when the step's mean coherence reached
``min_coherence`` and by ``down_mult`` otherwise. The same ``min_coherence`` picks the best step
(the reference system used 80 to steer and 77 to pick; here it is one value).

The search is pure logic over an ``evaluate`` callback, so several searches can share one batched
generation per step (see :func:`run_searches`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

Direction = Literal["positive", "negative"]


@dataclass(frozen=True)
class SearchSettings:
    start_ratio: float = 0.7
    up_mult: float = 1.3
    down_mult: float = 0.85
    search_steps: int = 5
    min_coherence: float = 70.0

    def __post_init__(self) -> None:
        if self.search_steps < 1:
            raise ValueError("search_steps must be >= 1")
        if not (self.up_mult > 1 and 0 < self.down_mult < 1 and self.start_ratio > 0):
            raise ValueError("need start_ratio > 0, up_mult > 1 and 0 < down_mult < 1")


@dataclass(frozen=True)
class StepResult:
    """Mean judge scores of one coefficient over all questions (None = no question scored)."""

    coefficient: float
    trait_mean: float | None
    coherence_mean: float | None


def sign_of(direction: Direction) -> float:
    return -1.0 if direction == "negative" else 1.0


def next_coefficient(coefficient: float, coherence_mean: float | None, settings: SearchSettings) -> float:
    """Grow while coherent, shrink otherwise (an unscored step counts as incoherent)."""
    coherent = coherence_mean is not None and coherence_mean >= settings.min_coherence
    return coefficient * (settings.up_mult if coherent else settings.down_mult)


def is_valid(step: StepResult, min_coherence: float) -> bool:
    return step.coherence_mean is not None and step.coherence_mean >= min_coherence and step.trait_mean is not None


def best_step(steps: Sequence[StepResult], direction: Direction, min_coherence: float) -> tuple[int, bool]:
    """Index of the best step and whether it is valid (coherence >= min_coherence).

    Among valid steps the strongest effect in the trait's direction wins; if none is valid, the
    most coherent step is returned, flagged invalid. Ties go to the smaller |coefficient|.
    """
    if not steps:
        raise ValueError("no steps to choose from")
    sign = sign_of(direction)
    valid = [i for i, s in enumerate(steps) if is_valid(s, min_coherence)]
    if valid:
        return max(valid, key=lambda i: (sign * steps[i].trait_mean, -abs(steps[i].coefficient))), True  # type: ignore[operator]
    def coherence_key(i: int) -> tuple[float, float]:
        c = steps[i].coherence_mean
        return (-math.inf if c is None else c, -abs(steps[i].coefficient))
    return max(range(len(steps)), key=coherence_key), False


Evaluate = Callable[[Sequence[float]], Sequence[StepResult]]


def run_searches(
    start_coefficients: Sequence[float], settings: SearchSettings, evaluate: Evaluate
) -> list[list[StepResult]]:
    """Run one search per start coefficient in lock-step: each step evaluates all of them at once.

    ``evaluate(coefficients)`` returns one StepResult per coefficient, in order; batching them
    into one generate call is the caller's business.
    """
    current = list(start_coefficients)
    history: list[list[StepResult]] = [[] for _ in current]
    for _ in range(settings.search_steps):
        results = list(evaluate(current))
        if len(results) != len(current):
            raise ValueError(f"evaluate returned {len(results)} results for {len(current)} coefficients")
        for i, result in enumerate(results):
            history[i].append(result)
            current[i] = next_coefficient(current[i], result.coherence_mean, settings)
    return history
