"""Evaluating a gated or capped intervention like plain steering: judge, coherence, side effect, gate record.

An intervention (``interventions.<name>`` in params) is run on the prompts of one prompt set split by
a label (``trigger`` prompts should fire the gate, ``non_trigger`` prompts should not). Every prompt is
answered twice in one batched generation, unsteered and intervened; the judge scores both answers
(trait and coherence, through the stage's cache); the side effect is the KL of the intervened vs the
unsteered next-token distribution on the unsteered answers
(:func:`trait_interp.steering.intervention_kl.next_token_kl`). Per group: how often the gate fired
(the cap bound), and the change in trait score, coherence and KL. Every position the gate (cap) read
is kept: its projection, whether it fired there and whether the row was steered there.

Thresholds are in the monitor's own units (``h . v / ||v||``, as the projection tables): a number, the
vector's train-set ``midpoint`` (``evaluation.csv``), or a ``percentile`` of a calibration prompt
set's unsteered monitoring responses (``calibration_values``: per token for token gates and caps,
per sequence for latch gates (the max above, the min below) and prompt gates (the prompt's mean)).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from trait_interp.core.batching import BatchSize
from trait_interp.core.config import from_mapping
from trait_interp.core.datasets import PromptSet
from trait_interp.core.errors import UserInputError
from trait_interp.core.forward import TokenSequence
from trait_interp.core.layers import normalize_layer, parse_layer_choice, parse_layers
from trait_interp.core.sites import check_site, num_layers
from trait_interp.extraction.vectors import VectorSet
from trait_interp.monitoring.projection import TraitVector, project_sequences
from trait_interp.steering.best import BestSteering
from trait_interp.steering.evaluate import Decoder, ScoreFn, mean_or_none
from trait_interp.steering.gating import (
    CapTerm,
    Gate,
    GateMode,
    GateWhen,
    ReadTrace,
    RowIntervention,
    chunk_context,
    generate_intervened,
)
from trait_interp.steering.intervention_kl import next_token_kl
from trait_interp.steering.intervention_record import (
    CapRecord,
    GateRecord,
    InterventionRecord,
)
from trait_interp.steering.interventions import SteeringPositions, SteeringTerm

GROUPS = ("trigger", "non_trigger")
CONDITIONS = ("baseline", "intervened")


@dataclass(frozen=True)
class Percentile:
    """A threshold from a calibration set: the ``percentile``-th percentile (0-100) of its projections."""

    percentile: float
    prompt_set: str  # one of prompt_sets: its unsteered monitoring responses on the application model


Threshold = float | Percentile | Literal["midpoint"]


@dataclass(frozen=True)
class GateSettings:
    """``gate:`` of a gated intervention: which monitor vector, where, and when it opens."""

    trait: str  # a trait of this experiment: its vector is the monitor
    layer: int | None = None  # None: the first steered layer (a gate reads at or before every steered layer)
    threshold: Threshold = "midpoint"
    when: GateWhen = "above"
    mode: GateMode = "prompt"
    method: str | None = None  # None: the steered vector's method and site
    site: str | None = None
    skip_first_token: bool = True


@dataclass(frozen=True)
class InterventionSettings:
    """``interventions.<name>`` in params."""

    kind: Literal["gated", "capped"]
    trait: str  # the trait whose vector is added (gated) or capped
    prompt_set: str  # datasets/inference/<prompt_set>.json
    trigger: str  # label value of the prompts that should fire the gate
    non_trigger: str  # ... and of those that should not
    label: str = "note"  # the prompt field holding the label (note or any extra key)
    layers: int | str | tuple[int, ...] = "best"  # best = best.json's layers; an int, a list, best+N
    coefficient: float | Literal["best"] = "best"  # gated: best = best.json's coefficient
    method: str | None = None  # None: best.json's (steering.method)
    site: str | None = None  # None: best.json's (steering.site)
    positions: SteeringPositions | None = None  # None: best.json's (steering.positions)
    gate: GateSettings | None = None  # gated only
    low: Threshold | None = None  # capped only: clamp h . v / ||v|| to at least low ...
    high: Threshold | None = None  # ... and at most high (either may be left out)


def check_settings(settings: InterventionSettings, where: str) -> InterventionSettings:
    """What the dataclass cannot say: each kind's own keys, percentiles in range; one line each."""
    if settings.kind == "gated":
        if settings.gate is None:
            raise UserInputError(f"{where}.gate: a gated intervention needs a gate (trait, layer, threshold, when, mode)")
        for side in ("low", "high"):
            if getattr(settings, side) is not None:
                raise UserInputError(f"{where}.{side}: only capped interventions have a range; remove it or use kind: capped")
        thresholds = {"gate.threshold": settings.gate.threshold}
    else:
        if settings.gate is not None:
            raise UserInputError(f"{where}.gate: a capped intervention has no gate; remove it or use kind: gated")
        if settings.low is None and settings.high is None:
            raise UserInputError(f"{where}: a capped intervention needs low, high or both (a number, midpoint or "
                                 "{percentile, prompt_set})")
        if settings.coefficient != "best":
            raise UserInputError(f"{where}.coefficient: a capped intervention adds nothing; remove the coefficient")
        thresholds = {"low": settings.low, "high": settings.high}
    for key, value in thresholds.items():
        if isinstance(value, Percentile) and not 0 <= value.percentile <= 100:
            raise UserInputError(f"{where}.{key}.percentile: {value.percentile} is not in 0..100")
        if isinstance(value, float) and math.isnan(value):
            raise UserInputError(f"{where}.{key}: NaN is not a threshold")
    if settings.trigger == settings.non_trigger:
        raise UserInputError(f"{where}: trigger and non_trigger are both '{settings.trigger}'; give two label values")
    return settings


def parse_settings(data: Any, where: str) -> InterventionSettings:
    return check_settings(from_mapping(InterventionSettings, data, where), where)


def steered_layers(settings: InterventionSettings, best_layers: Sequence[int], n_layers: int, where: str) -> tuple[int, ...]:
    """``layers``: best (best.json's layers), best+N, an int, a list or ``a:b`` (a band)."""
    choice = settings.layers
    if choice == "best":
        return tuple(int(layer) for layer in best_layers)
    value = list(choice) if isinstance(choice, tuple) else choice
    if isinstance(value, str) and ":" in value:
        return parse_layers(value, n_layers, f"{where}.layers")
    return parse_layer_choice(value, n_layers, lambda: int(best_layers[0]), f"{where}.layers", allow_all=False)


# ---------------------------------------------------------------------------------------------
# prompts


@dataclass(frozen=True)
class EvaluationPrompt:
    prompt_id: str
    group: Literal["trigger", "non_trigger"]
    text: str
    note: str | None
    extra: Mapping[str, Any]


def select_prompts(prompt_set: PromptSet, settings: InterventionSettings, where: str) -> list[EvaluationPrompt]:
    """The prompts labelled ``trigger`` or ``non_trigger`` (others are left out), each group non-empty."""
    chosen = []
    for prompt in prompt_set.prompts:
        value = prompt.note if settings.label == "note" else prompt.extra.get(settings.label)
        text = None if value is None else str(value)
        if text in (settings.trigger, settings.non_trigger):
            group = "trigger" if text == settings.trigger else "non_trigger"
            chosen.append(EvaluationPrompt(str(prompt.id), group, prompt.text, prompt.note, dict(prompt.extra)))
    for group, value in (("trigger", settings.trigger), ("non_trigger", settings.non_trigger)):
        if not any(p.group == group for p in chosen):
            raise UserInputError(f"{where}.{group}: no prompt of '{prompt_set.name}' has {settings.label} = '{value}'; "
                                 "fix the label value or the prompt set")
    return chosen


# ---------------------------------------------------------------------------------------------
# thresholds


def calibration_values(
    projections: Sequence[torch.Tensor], prompt_lengths: Sequence[int], statistic: Literal["token", "latch", "prompt"],
    when: GateWhen = "above", skip_first_token: bool = True, response_only: bool = False,
) -> np.ndarray:
    """The values a percentile is taken over, from each calibration sequence's per-token projections.

    ``token``: every token read (the first left out with ``skip_first_token``; ``response_only``: the
    response tokens); ``latch``: per sequence, the max (``above``) or min (``below``) over the tokens read;
    ``prompt``: per sequence, the mean over its prompt tokens.
    """
    values: list[np.ndarray] = []
    for projection, n_prompt in zip(projections, prompt_lengths):
        x = projection.detach().double().cpu().numpy()
        start = 1 if skip_first_token else 0
        if statistic == "prompt":
            part = x[start:n_prompt]
            if len(part):
                values.append(np.array([part.mean()]))
            continue
        part = x[max(start, n_prompt) if response_only else start:]
        if not len(part):
            continue
        if statistic == "token":
            values.append(part)
        else:
            values.append(np.array([part.max() if when == "above" else part.min()]))
    return np.concatenate(values) if values else np.empty(0)


def percentile_of(values: np.ndarray, spec: Percentile, where: str) -> float:
    if not len(values):
        raise UserInputError(f"{where}: the calibration set '{spec.prompt_set}' gives no projection to take a percentile "
                             "of (empty responses?); pick another prompt set")
    return float(np.percentile(values, spec.percentile))


def describe(spec: Threshold | None) -> str | None:
    """How a threshold was set, for the record: ``value``, ``midpoint`` or ``p90 of everyday_questions``."""
    if spec is None:
        return None
    if isinstance(spec, Percentile):
        return f"p{spec.percentile:g} of {spec.prompt_set}"
    return "midpoint" if spec == "midpoint" else "value"


# ---------------------------------------------------------------------------------------------
# building the intervention from the experiment's artifacts


@dataclass(frozen=True)
class Sources:
    """What an intervention is built from; the stage reads the files (each trait's by its pattern)."""

    vectors: Callable[[str, str, str], VectorSet]  # (trait, site, method) -> the trait's vectors
    evaluation: Callable[[str], pd.DataFrame]  # trait -> its evaluation.csv (train midpoints)
    calibration: Callable[[str], Sequence[TokenSequence]]  # prompt set -> the application model's monitored sequences


def midpoint_of(evaluation: pd.DataFrame, trait: str, site: str, method: str, layer: int, where: str) -> float:
    """The vector's train-set midpoint (its decision threshold), from the trait's evaluation table."""
    rows = evaluation[(evaluation["site"] == site) & (evaluation["method"] == method) & (evaluation["layer"] == layer)]
    if rows.empty:
        raise UserInputError(f"{where}: midpoint: {trait} has no evaluation row for {method} at {site} layer {layer}; "
                             "give a number or a percentile")
    return float(rows["threshold"].iloc[0])


@dataclass(frozen=True)
class _Resolver:
    model: nn.Module
    sources: Sources
    pad_id: int
    batch_size: BatchSize
    response_only: bool
    where: str

    def thresholds(self, value: Threshold | None, key: str, trait: str, site: str, method: str, layers: Sequence[int],
                   statistic: Literal["token", "latch", "prompt"], when: GateWhen = "above",
                   skip: bool = True) -> list[float | None]:
        """One threshold per layer: a number, the layer's train midpoint, or a percentile of the calibration set."""
        if value is None:
            return [None] * len(layers)
        if isinstance(value, Percentile):
            vector_set = self.sources.vectors(trait, site, method)
            at = [TraitVector(trait, method, site, layer, vector_set.layer(layer)) for layer in layers]
            sequences = self.sources.calibration(value.prompt_set)
            result = project_sequences(self.model, sequences, at, self.pad_id, self.batch_size)
            lengths = [len(s.prompt_ids) for s in sequences]
            return [
                percentile_of(calibration_values([s.scores[:, j] for s in result.sequences], lengths, statistic, when,
                                                 skip, self.response_only), value, f"{self.where}.{key}")
                for j in range(len(at))
            ]
        if value == "midpoint":
            table = self.sources.evaluation(trait)
            return [midpoint_of(table, trait, site, method, layer, f"{self.where}.{key}") for layer in layers]
        return [float(value)] * len(layers)


def build_intervention(
    model: nn.Module, model_key: str, name: str, settings: InterventionSettings, best: BestSteering, sources: Sources,
    pad_id: int, batch_size: BatchSize, where: str,
) -> tuple[InterventionRecord, RowIntervention]:
    """The intervention as run (every threshold a number) and its row: vectors, layers, coefficient from the experiment.

    Unset method, site, positions, layers and coefficient come from the trait's ``best.json``; a gate
    without a layer reads the first steered layer.
    """
    method = settings.method or best.method
    site = check_site(settings.site or best.site, f"{where}.site")
    positions = settings.positions or best.positions
    n_layers = num_layers(model)
    layers = steered_layers(settings, best.layers, n_layers, where)
    steered = sources.vectors(settings.trait, site, method)
    resolver = _Resolver(model, sources, pad_id, batch_size, positions == "response_only", where)
    gate_record, caps, coefficient = None, (), None
    if settings.kind == "gated":
        assert settings.gate is not None
        gate = settings.gate
        gate_method, gate_site = gate.method or method, check_site(gate.site or site, f"{where}.gate.site")
        first = min(layers)
        gate_layer = first if gate.layer is None else normalize_layer(gate.layer, n_layers, f"{where}.gate.layer")
        if gate_layer > first or (gate_layer == first and gate_site != site):
            raise UserInputError(
                f"{where}.gate.layer: the gate reads {gate_site} at layer {gate_layer}, after the first steered layer "
                f"{first} ({site}); a gate must read at or before every steered layer: lower it (or leave it out)"
            )
        (threshold,) = resolver.thresholds(gate.threshold, "gate.threshold", gate.trait, gate_site, gate_method,
                                           [gate_layer], gate.mode, gate.when, gate.skip_first_token)
        assert threshold is not None
        coefficient = best.coefficient if settings.coefficient == "best" else float(settings.coefficient)
        gate_record = GateRecord(gate.trait, gate_layer, gate_method, gate_site, threshold, describe(gate.threshold) or "",
                                 gate.when, gate.mode, gate.skip_first_token)
        monitor = sources.vectors(gate.trait, gate_site, gate_method).layer(gate_layer)
        terms = tuple(SteeringTerm(layer, steered.layer(layer), coefficient) for layer in layers)
        row = RowIntervention(terms, Gate(gate_layer, monitor, threshold, gate_site, gate.when, gate.mode,
                                          gate.skip_first_token))
    else:
        lows = resolver.thresholds(settings.low, "low", settings.trait, site, method, layers, "token")
        highs = resolver.thresholds(settings.high, "high", settings.trait, site, method, layers, "token")
        for layer, low, high in zip(layers, lows, highs):
            if low is not None and high is not None and low > high:
                raise UserInputError(f"{where}: at layer {layer} low ({low:.4g}) is above high ({high:.4g}); the range "
                                     "is empty: lower low or raise high")
        caps = tuple(CapRecord(layer, low, high) for layer, low, high in zip(layers, lows, highs))
        row = RowIntervention(caps=tuple(CapTerm(c.layer, steered.layer(c.layer), c.low, c.high) for c in caps))
    record = InterventionRecord(
        name=name, kind=settings.kind, trait=settings.trait, model=model_key, method=method, site=site,
        positions=positions, layers=tuple(layers), coefficient=coefficient, gate=gate_record, caps=caps,
        low_from=describe(settings.low), high_from=describe(settings.high), prompt_set=settings.prompt_set,
        label=settings.label, trigger=settings.trigger, non_trigger=settings.non_trigger,
    )
    return record, row


# ---------------------------------------------------------------------------------------------
# evaluation


@dataclass(frozen=True)
class InterventionOutcome:
    responses: list[dict[str, Any]]  # one per (prompt, condition), baseline first
    traces: list[tuple[int, list[ReadTrace]]]  # (prompt index, its intervened reads)
    summary: dict[str, dict[str, Any]]  # per group


def gate_score(trace: ReadTrace, n_prompt: int, gate: GateRecord) -> float | None:
    """What the gate decided on: the prompt's mean (prompt mode), else the max (above) / min (below) read."""
    values = trace.projection.double()
    start = 1 if gate.skip_first_token else 0
    part = values[start:n_prompt] if gate.mode == "prompt" else values[start:]
    if not len(part):
        return None
    if gate.mode == "prompt":
        return float(part.mean())
    return float(part.max() if gate.when == "above" else part.min())


def evaluate_intervention(
    model: nn.Module,
    prompts: Sequence[EvaluationPrompt],
    prompt_ids: Sequence[Sequence[int]],
    row: RowIntervention,
    record: InterventionRecord,
    max_new_tokens: int,
    batch_size: BatchSize,
    decoder: Decoder,
    score: ScoreFn,
    progress: bool = False,
) -> InterventionOutcome:
    """Each prompt unsteered and intervened (one batched generation), judged, and the KL on the unsteered answers."""
    n = len(prompts)
    generated = generate_intervened(
        model, [*prompt_ids, *prompt_ids], [RowIntervention()] * n + [row] * n, record.site, max_new_tokens,
        decoder.pad_id, decoder.eos_ids, batch_size, record.positions, progress,
    )
    answers = [decoder.decode(ids) for ids in generated.responses]
    questions = [p.text for p in prompts]
    scores = list(score([*questions, *questions], answers))
    baseline = [TokenSequence(tuple(p), tuple(r)) for p, r in zip(prompt_ids, generated.responses[:n])]
    context = chunk_context(model, record.site, [row] * n, [s.prompt_ids for s in baseline], record.positions)
    kl = next_token_kl(model, baseline, context, decoder.pad_id, batch_size)
    responses, traces = [], []
    for k in range(2 * n):
        i, intervened = k % n, k >= n
        reads = generated.traces[k] if intervened else []
        fired = any(bool(t.fired.any()) for t in reads) if intervened else None
        steered = any(bool(t.steered.any()) for t in reads) if intervened else None
        gate_reads = [t for t in reads if t.kind == "gate"]
        first_fired = None
        for t in reads:
            hits = t.fired.nonzero().flatten()
            if len(hits):
                first_fired = int(hits[0]) if first_fired is None else min(first_fired, int(hits[0]))
        responses.append({
            "prompt_id": prompts[i].prompt_id, "group": prompts[i].group,
            "condition": "intervened" if intervened else "baseline",
            "prompt": prompts[i].text, "response": answers[k], "prompt_ids": list(prompt_ids[i]),
            "response_ids": list(generated.responses[k]), "trait_score": scores[k][0], "coherence": scores[k][1],
            "fired": fired, "steered": steered, "first_fired": first_fired,
            "gate_score": gate_score(gate_reads[0], len(prompt_ids[i]), record.gate)
            if gate_reads and record.gate is not None else None,
            "n_steered": int(sum(int(t.steered.sum()) for t in reads)) if intervened else None,
            "changed": list(generated.responses[k]) != list(generated.responses[i]) if intervened else None,
            "kl": kl[i] if intervened else None,
        })
        if intervened:
            traces.append((i, reads))
    return InterventionOutcome(responses, traces, summarize(responses))


def summarize(responses: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per group: prompts, fire rate, the change in trait and coherence (intervened minus unsteered), the KL."""
    out: dict[str, dict[str, Any]] = {}
    for group in GROUPS:
        rows = [r for r in responses if r["group"] == group]
        base = {r["prompt_id"]: r for r in rows if r["condition"] == "baseline"}
        steered = [r for r in rows if r["condition"] == "intervened"]
        deltas = [r["trait_score"] - base[r["prompt_id"]]["trait_score"] for r in steered
                  if r["trait_score"] is not None and base[r["prompt_id"]]["trait_score"] is not None]
        coherence = [r["coherence"] - base[r["prompt_id"]]["coherence"] for r in steered
                     if r["coherence"] is not None and base[r["prompt_id"]]["coherence"] is not None]
        out[group] = {
            "n": len(steered),
            "fire_rate": mean_or_none([float(bool(r["fired"])) for r in steered]),
            "steered_rate": mean_or_none([float(bool(r["steered"])) for r in steered]),
            "changed_rate": mean_or_none([float(bool(r["changed"])) for r in steered]),
            "baseline_trait": mean_or_none([r["trait_score"] for r in base.values()]),
            "trait": mean_or_none([r["trait_score"] for r in steered]),
            "delta": mean_or_none(deltas),
            "max_abs_delta": max((abs(d) for d in deltas), default=None),
            "baseline_coherence": mean_or_none([r["coherence"] for r in base.values()]),
            "coherence": mean_or_none([r["coherence"] for r in steered]),
            "coherence_delta": mean_or_none(coherence),
            "kl": mean_or_none([r["kl"] for r in steered]),
        }
    return out


def trace_rows(
    outcome: InterventionOutcome, prompts: Sequence[EvaluationPrompt], prompt_ids: Sequence[Sequence[int]],
    token_strings: Callable[[Sequence[int]], list[str]], record: InterventionRecord,
) -> list[dict[str, Any]]:
    """The long trace table: one row per (prompt, read, position the model read) of the intervened runs."""
    n = len(prompts)
    rows = []
    for i, reads in outcome.traces:
        ids = list(prompt_ids[i]) + list(outcome.responses[n + i]["response_ids"])
        tokens = token_strings(ids)
        for trace in reads:
            gate = trace.kind == "gate" and record.gate is not None
            trait = record.gate.trait if gate and record.gate else record.trait
            method = record.gate.method if gate and record.gate else record.method
            site = record.gate.site if gate and record.gate else record.site
            projection, fired, steered = trace.projection.tolist(), trace.fired.tolist(), trace.steered.tolist()
            for t in range(len(projection)):
                rows.append({
                    "prompt_id": prompts[i].prompt_id, "group": prompts[i].group, "read": trace.kind,
                    "frame": "prompt" if t < len(prompt_ids[i]) else "response", "token_index": t, "token": tokens[t],
                    "layer": trace.layer, "trait": trait, "method": method, "site": site,
                    "projection": projection[t], "fired": bool(fired[t]), "steered": bool(steered[t]),
                })
    return rows
