"""Steering evaluation: baseline plus a coefficient search (or a fixed grid) for one trait.

Generation, norm measurement and judging are wired together here; the search logic itself lives
in :mod:`trait_interp.steering.coefficient_search` and the hooks in :mod:`trait_interp.steering.interventions`.
Coefficients are in activation-norm units of the *steered* model, measured on the baseline
answers at the positions that steering touches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from trait_interp.core.batching import BatchSize
from trait_interp.core.forward import TokenSequence
from trait_interp.steering.coefficient_search import (
    Direction,
    SearchSettings,
    StepResult,
    best_step,
    run_searches,
    sign_of,
)
from trait_interp.steering.interventions import (
    SteeringTerm,
    generate_steered,
    mean_activation_norm,
)

# (questions, answers) -> one (trait score, coherence) per answer; None = not scored
ScoreFn = Callable[[Sequence[str], Sequence[str]], Sequence[tuple[float | None, float | None]]]


@dataclass(frozen=True)
class SteeringSettings:
    """``steering:`` in params."""

    method: str = "probe"
    site: str = "residual"
    positions: Literal["all", "response_only"] = "all"
    subset: int | None = None  # first N questions of steering.json; None = all
    max_new_tokens: int = 64
    batch_size: BatchSize = 16
    start_ratio: float = 0.7
    up_mult: float = 1.3
    down_mult: float = 0.85
    search_steps: int = 5
    min_coherence: float = 70.0
    coefficients: tuple[float, ...] | None = None  # a fixed grid instead of the search
    # extra steps at ratio * ||h_L|| (either sign) beside the search or grid: the curve on both sides
    # of zero, reported in the metrics; never chosen as the best step
    sweep_ratios: tuple[float, ...] | None = None
    # what `layer: best` stands for: the extraction evaluation's best layer, or the steering sweep's
    # best coherent single layer for this method (steering_sweep's best_layers.json)
    best_from: Literal["extraction", "sweep"] = "extraction"

    def search(self) -> SearchSettings:
        return SearchSettings(self.start_ratio, self.up_mult, self.down_mult, self.search_steps, self.min_coherence)


@dataclass(frozen=True)
class Decoder:
    """What generation needs from the tokenizer."""

    pad_id: int
    eos_ids: tuple[int, ...]
    decode: Callable[[Sequence[int]], str]


@dataclass(frozen=True)
class SteeringOutcome:
    responses: list[dict[str, Any]]  # one row per (configuration, question)
    steps: list[dict[str, Any]]  # one row per configuration, baseline first
    best: dict[str, Any]
    activation_norm: float
    sweep: list[dict[str, Any]]  # one per sweep ratio, ascending, with the baseline at ratio 0


def rises_with_coefficient(sweep: Sequence[dict[str, Any]]) -> bool | None:
    """Whether the mean trait score never falls as the coefficient grows across the sweep (None: unscored)."""
    means = [row["trait_mean"] for row in sweep]
    if len(means) < 2 or any(m is None for m in means):
        return None
    return all(a <= b for a, b in zip(means, means[1:]))


def mean_or_none(values: Sequence[float | None]) -> float | None:
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None


def evaluate_steering(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    questions: Sequence[str],
    vectors: dict[int, torch.Tensor],
    settings: SteeringSettings,
    direction: Direction,
    decoder: Decoder,
    score: ScoreFn,
    progress: bool = False,
) -> SteeringOutcome:
    """Baseline, then search (or grid) over one coefficient applied at every layer in ``vectors``."""
    layers = sorted(vectors)
    n = len(prompts)

    def generate(coefficients: Sequence[float | None]) -> list[list[int]]:
        """One batched generate: every coefficient (None = unsteered) x every question."""
        row_terms = [
            [] if c is None else [SteeringTerm(layer, vectors[layer], c) for layer in layers]
            for c in coefficients
            for _ in range(n)
        ]
        return generate_steered(
            model,
            [p for _ in coefficients for p in prompts],
            row_terms,
            settings.site,
            settings.max_new_tokens,
            decoder.pad_id,
            decoder.eos_ids,
            settings.batch_size,
            settings.positions,
            progress,
        )

    responses: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []

    def record(kind: str, step: int, coefficient: float, ratio: float, ids: Sequence[list[int]]) -> StepResult:
        answers = [decoder.decode(r) for r in ids]
        scores = list(score(questions, answers))
        for q_index, (question, answer, response_ids, (trait, coherence)) in enumerate(
            zip(questions, answers, ids, scores)
        ):
            responses.append(
                {"kind": kind, "step": step, "coefficient": coefficient, "ratio": ratio, "question_index": q_index,
                 "question": question, "response": answer, "response_ids": list(response_ids),
                 "trait_score": trait, "coherence": coherence}
            )
        result = StepResult(coefficient, mean_or_none([s[0] for s in scores]), mean_or_none([s[1] for s in scores]))
        steps.append(
            {"kind": kind, "step": step, "coefficient": coefficient, "ratio": ratio,
             "trait_mean": result.trait_mean, "coherence_mean": result.coherence_mean,
             "n_trait_scored": sum(s[0] is not None for s in scores),
             "n_coherence_scored": sum(s[1] is not None for s in scores), "n_questions": n}
        )
        return result

    baseline_ids = generate([None])
    baseline = record("baseline", 0, 0.0, 0.0, baseline_ids)
    sequences = [TokenSequence(tuple(p), tuple(r)) for p, r in zip(prompts, baseline_ids)]
    norms = mean_activation_norm(model, settings.site, layers, sequences, decoder.pad_id, settings.positions,
                                 settings.batch_size)
    norm = sum(norms[layer] for layer in layers) / len(layers)

    sweep: list[dict[str, Any]] = []
    if settings.sweep_ratios:
        ratios = sorted({r for r in settings.sweep_ratios if r != 0})  # ratio 0 is the baseline
        ids = generate([r * norm for r in ratios])
        results = [record("sweep", i, r * norm, r, ids[i * n : (i + 1) * n]) for i, r in enumerate(ratios)]
        sweep = sorted(
            [{"ratio": r, "coefficient": s.coefficient, "trait_mean": s.trait_mean, "coherence_mean": s.coherence_mean}
             for r, s in zip(ratios, results)]
            + [{"ratio": 0.0, "coefficient": 0.0, "trait_mean": baseline.trait_mean,
                "coherence_mean": baseline.coherence_mean}],
            key=lambda row: row["ratio"],
        )

    searched: list[StepResult] = []
    if settings.coefficients is not None:
        grid = list(settings.coefficients)
        ids = generate(grid)
        for i, c in enumerate(grid):
            searched.append(record("grid", i, c, c / norm, ids[i * n : (i + 1) * n]))
    else:
        search = settings.search()
        counter = iter(range(search.search_steps))

        def evaluate(coefficients: Sequence[float]) -> list[StepResult]:
            step = next(counter)
            ids = generate(coefficients)
            return [record("search", step, c, c / norm, ids[i * n : (i + 1) * n]) for i, c in enumerate(coefficients)]

        start = sign_of(direction) * search.start_ratio * norm
        searched = run_searches([start], search, evaluate)[0]

    index, valid = best_step(searched, direction, settings.min_coherence)
    chosen = searched[index]
    delta = None
    if chosen.trait_mean is not None and baseline.trait_mean is not None:
        delta = chosen.trait_mean - baseline.trait_mean
    best = {
        "layers": layers,
        "method": settings.method,
        "site": settings.site,
        "positions": settings.positions,
        "direction": direction,
        "coefficient": chosen.coefficient,
        "ratio": chosen.coefficient / norm,
        "trait_mean": chosen.trait_mean,
        "coherence_mean": chosen.coherence_mean,
        "baseline_trait_mean": baseline.trait_mean,
        "baseline_coherence_mean": baseline.coherence_mean,
        "delta": delta,
        "valid": valid,
        "min_coherence": settings.min_coherence,
        "activation_norm": norm,
    }
    return SteeringOutcome(responses, steps, best, norm, sweep)
