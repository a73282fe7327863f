"""Steering sweeps: every (method, layer or window, ratio) of a grid in per-row batched generate calls.

A sweep steers one trait's questions under N configurations. A configuration is a method's vector,
one layer or a window of layers steered together (``[6, 10]`` = layers 6..10, one coefficient at
all of them, as ``layer: [..]`` does in the steering evaluation), and a perturbation ratio

    ratio = coefficient * ||v|| / mean ||h_L||

(either sign), with ``mean ||h_L||`` the steered model's activation norm on its own unsteered
answers at the positions steering touches (``interventions.mean_activation_norm``; for a window,
the mean of its layers' norms and vector norms). Generation is per-row batched: row ``i`` of a
``generate`` call carries its own configuration, so N configurations x Q questions take
``ceil(N * Q / batch_size)`` calls (plus one for the unsteered baseline), whatever the mix.

This module plans the grid and generates; ``side_effects`` measures the KL on neutral prompts and
``sweep_results`` turns judged answers into the long table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from trait_interp.core.batching import BatchSize, resolve_batch_size
from trait_interp.core.errors import UserInputError
from trait_interp.core.forward import TokenSequence
from trait_interp.core.generation import generate_greedy
from trait_interp.core.layers import normalize_layer, parse_layers
from trait_interp.steering.interventions import (
    SteeringPositions,
    SteeringTerm,
    generate_steered,
    mean_activation_norm,
)


@dataclass(frozen=True)
class SweepSettings:
    """``sweep:`` in params (one sweep per experiment; a stage per trait)."""

    layers: str | int | tuple[int, ...] = "all"  # single-layer configurations: all | an int | a list | a:b
    windows: tuple[tuple[int, ...], ...] = ()  # [lo, hi]: layers lo..hi steered together, one config each
    methods: tuple[str, ...] = ("probe", "random_baseline")
    site: str = "residual"
    ratios: tuple[float, ...] = (-1.0, -0.5, 0.5, 1.0)  # 0 is the baseline (always run once)
    positions: Literal["all", "response_only"] = "all"
    subset: int | None = 4  # first N questions of steering.json; None = all
    max_new_tokens: int = 24
    batch_size: BatchSize = 16
    side_effect_prompt_set: str = "everyday_questions"  # datasets/inference/<name>.json: neutral prompts
    side_effect_prompts: int = 8  # its first N prompts


@dataclass(frozen=True)
class SweepConfig:
    """One cell of the grid."""

    method: str
    layers: tuple[int, ...]  # one layer, or a window (steered together)
    ratio: float

    @property
    def is_window(self) -> bool:
        return len(self.layers) > 1

    @property
    def label(self) -> str:
        """``2``, or ``1-3`` for a window (the row label of the heatmaps)."""
        return str(self.layers[0]) if not self.is_window else f"{self.layers[0]}-{self.layers[-1]}"


@dataclass(frozen=True)
class SweepPlan:
    site: str
    positions: SteeringPositions
    configs: tuple[SweepConfig, ...]

    @property
    def layers(self) -> tuple[int, ...]:
        """Every layer some configuration steers (their norms are measured)."""
        return tuple(sorted({layer for c in self.configs for layer in c.layers}))

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.method for c in self.configs))


def parse_windows(windows: Sequence[Sequence[int]], n_layers: int, param: str) -> list[tuple[int, ...]]:
    """``[[6, 10], ...]`` -> ``[(6, 7, 8, 9, 10), ...]``; each window once, at least two layers."""
    out: list[tuple[int, ...]] = []
    for i, window in enumerate(windows):
        if len(window) != 2 or any(isinstance(x, bool) or not isinstance(x, int) for x in window):
            raise UserInputError(f"{param}[{i}]: a window is [first, last] (e.g. [6, 10]), got {list(window)}")
        lo, hi = (normalize_layer(int(x), n_layers, param) for x in window)
        if hi <= lo:
            raise UserInputError(f"{param}[{i}]: [{window[0]}, {window[1]}] needs last > first; "
                                 "a single layer goes in sweep.layers")
        layers = tuple(range(lo, hi + 1))
        if layers not in out:
            out.append(layers)
    return out


def plan_sweep(settings: SweepSettings, n_layers: int, where: str = "sweep") -> SweepPlan:
    """The grid: for each method, every single layer then every window, each at every ratio (ascending).

    ``where`` prefixes the param names in errors (e.g. ``params.yaml:sweep``).
    """
    if not settings.methods:
        raise UserInputError(f"{where}.methods: name at least one method (e.g. [probe, random_baseline])")
    ratios = sorted({float(r) for r in settings.ratios if r != 0})
    if not ratios:
        raise UserInputError(f"{where}.ratios: give at least one non-zero ratio (e.g. [-1, -0.5, 0.5, 1]); "
                             "ratio 0 is the baseline, always run")
    if any(not math.isfinite(r) for r in ratios):
        raise UserInputError(f"{where}.ratios: every ratio must be a finite number, got {list(settings.ratios)}")
    if settings.subset is not None and settings.subset < 1:
        raise UserInputError(f"{where}.subset: must be >= 1 or null (all questions), got {settings.subset}")
    if settings.max_new_tokens < 1:
        raise UserInputError(f"{where}.max_new_tokens: must be >= 1, got {settings.max_new_tokens}")
    if settings.side_effect_prompts < 1:
        raise UserInputError(f"{where}.side_effect_prompts: must be >= 1, got {settings.side_effect_prompts}")
    layers = settings.layers
    singles = [(layer,) for layer in parse_layers(list(layers) if isinstance(layers, tuple) else layers,
                                                  n_layers, f"{where}.layers")]
    groups = singles + parse_windows(settings.windows, n_layers, f"{where}.windows")
    configs = tuple(
        SweepConfig(method, group, ratio)
        for method in dict.fromkeys(settings.methods)
        for group in groups
        for ratio in ratios
    )
    return SweepPlan(settings.site, settings.positions, configs)


def config_coefficient(config: SweepConfig, norms: Mapping[int, float],
                       vectors: Mapping[tuple[str, int], torch.Tensor]) -> float:
    """``ratio * mean ||h_l|| / mean ||v_l||`` over the configuration's layers (one coefficient for all)."""
    h = sum(norms[layer] for layer in config.layers) / len(config.layers)
    v = sum(float(vectors[(config.method, layer)].norm()) for layer in config.layers) / len(config.layers)
    if not v > 0:
        raise UserInputError(f"the {config.method} vector at layer(s) {config.label} has norm 0; re-extract it")
    return config.ratio * h / v


def config_terms(config: SweepConfig, coefficient: float,
                 vectors: Mapping[tuple[str, int], torch.Tensor]) -> list[SteeringTerm]:
    return [SteeringTerm(layer, vectors[(config.method, layer)], coefficient) for layer in config.layers]


def planned_generate_calls(model: nn.Module, n_rows: int, batch_size: BatchSize, seq_len: int) -> int:
    """``ceil(n_rows / batch)`` at the batch size generation resolves (auto: from free memory)."""
    if n_rows == 0:
        return 0
    return math.ceil(n_rows / resolve_batch_size(model, batch_size, seq_len))


@dataclass(frozen=True)
class SweepGeneration:
    """What generation produced: the baseline, the norms and coefficients, and every steered answer."""

    baseline_ids: list[list[int]]  # one per question
    norms: dict[int, float]  # mean ||h_l|| per steered layer, on the baseline answers
    coefficients: list[float]  # one per configuration
    ids: list[list[list[int]]]  # [configuration][question] -> generated ids


def generate_sweep(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    plan: SweepPlan,
    vectors: Mapping[tuple[str, int], torch.Tensor],
    max_new_tokens: int,
    pad_id: int,
    eos_ids: Sequence[int],
    batch_size: BatchSize = 16,
    progress: bool = False,
) -> SweepGeneration:
    """The baseline answers, the activation norms on them, then every configuration x question.

    The steered rows go to ``generate_steered`` as one list (configuration-major), so each chunk of
    ``batch_size`` rows is one ``generate`` call whatever configurations it mixes.
    """
    baseline = generate_greedy(model, prompts, max_new_tokens, pad_id, eos_ids, batch_size, progress)
    sequences = [TokenSequence(tuple(p), tuple(r)) for p, r in zip(prompts, baseline)]
    norms = mean_activation_norm(model, plan.site, list(plan.layers), sequences, pad_id, plan.positions, batch_size)
    coefficients = [config_coefficient(c, norms, vectors) for c in plan.configs]
    terms = [config_terms(c, k, vectors) for c, k in zip(plan.configs, coefficients)]
    n = len(prompts)
    rows = [terms[c] for c in range(len(plan.configs)) for _ in range(n)]
    flat = generate_steered(model, [p for _ in plan.configs for p in prompts], rows, plan.site, max_new_tokens,
                            pad_id, eos_ids, batch_size, plan.positions, progress)
    ids = [flat[c * n : (c + 1) * n] for c in range(len(plan.configs))]
    return SweepGeneration(baseline, norms, coefficients, ids)
