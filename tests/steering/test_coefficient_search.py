"""Coefficient search logic on synthetic responses whose answers are known in closed form."""

from __future__ import annotations

import pytest

from trait_interp.steering.coefficient_search import (
    SearchSettings,
    StepResult,
    best_step,
    next_coefficient,
    run_searches,
)

SETTINGS = SearchSettings(start_ratio=0.5, up_mult=1.3, down_mult=0.85, search_steps=6, min_coherence=70)


def synthetic(coefficients):
    """Trait rises with the coefficient; coherence falls with |coefficient| (100 at 0, 70 at |c| = 3)."""
    return [StepResult(c, trait_mean=50 + 10 * c, coherence_mean=100 - 10 * abs(c)) for c in coefficients]


def test_next_coefficient_grows_when_coherent_and_shrinks_otherwise():
    assert next_coefficient(2.0, 70.0, SETTINGS) == pytest.approx(2.6)  # exactly at the threshold: coherent
    assert next_coefficient(2.0, 69.9, SETTINGS) == pytest.approx(1.7)
    assert next_coefficient(-2.0, None, SETTINGS) == pytest.approx(-1.7)  # unscored counts as incoherent


def test_search_walks_up_then_oscillates_around_the_coherence_boundary():
    history = run_searches([1.0, -1.0], SETTINGS, synthetic)
    up = [s.coefficient for s in history[0]]
    assert up[:4] == pytest.approx([1.0, 1.3, 1.69, 2.197])  # coherent: x1.3 each step
    assert up[4] == pytest.approx(2.8561) and up[5] == pytest.approx(2.8561 * 1.3)  # 2.8561 -> coh 71.4 -> up
    assert [s.coefficient for s in history[1]][:2] == pytest.approx([-1.0, -1.3])  # sign is kept


def test_search_uses_min_coherence_to_steer():
    strict = SearchSettings(start_ratio=0.5, search_steps=2, min_coherence=95)
    history = run_searches([1.0], strict, synthetic)[0]
    assert history[1].coefficient == pytest.approx(0.85)  # coherence 90 < 95 -> shrink


def test_best_step_prefers_the_strongest_coherent_effect():
    steps = synthetic([1.0, 2.0, 3.0, 4.0])  # coherence 90, 80, 70, 60
    assert best_step(steps, "positive", 70) == (2, True)
    assert best_step(steps, "positive", 85) == (0, True)


def test_best_step_for_negative_traits_minimises():
    steps = synthetic([-1.0, -2.0, -5.0])  # trait 40, 30, 0; coherence 90, 80, 50
    assert best_step(steps, "negative", 70) == (1, True)


def test_best_step_without_a_coherent_step_is_the_most_coherent_and_flagged():
    steps = [StepResult(3.0, 90, 40), StepResult(2.0, 80, 55), StepResult(4.0, 95, None)]
    assert best_step(steps, "positive", 70) == (1, False)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        SearchSettings(up_mult=0.9)
    with pytest.raises(ValueError):
        SearchSettings(search_steps=0)
