"""Steering sweeps against independent truths: each configuration run alone, hand-computed KL and scores."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from tests.conftest import tiny_model
from trait_interp.core.errors import UserInputError
from trait_interp.core.forward import TokenSequence
from trait_interp.core.generation import generate_greedy
from trait_interp.judge.judge import SteeringJudgement
from trait_interp.steering.interventions import mean_activation_norm, steering
from trait_interp.steering.side_effects import next_token_kl
from trait_interp.steering.sweep import (
    SweepSettings,
    config_terms,
    generate_sweep,
    plan_sweep,
    planned_generate_calls,
)
from trait_interp.steering.sweep_results import (
    best_by_layer,
    best_layers_of,
    best_per_method,
    composite_score,
    result_rows,
)

PROMPTS = [[5, 17, 23, 9, 41, 8], [13, 14, 15], [30, 31, 32, 33]]  # different lengths: left padding
PAD, EOS = 0, [95]
NEW = 6


def _vectors(width: int, methods=("probe", "random_baseline"), layers=range(3)) -> dict:
    g = torch.Generator().manual_seed(7)
    out = {}
    for method in methods:
        for layer in layers:
            v = torch.randn(width, generator=g)
            out[(method, layer)] = v / v.norm() * (1.0 if method == "probe" else 2.0)  # a non-unit vector too
    return out


def _plan(positions="all"):
    settings = SweepSettings(layers="all", windows=((0, 2),), methods=("probe", "random_baseline"),
                             ratios=(-1.0, 0.0, 1.5), positions=positions, max_new_tokens=NEW)
    return plan_sweep(settings, 3)


# --------------------------------------------------------------------------- the grid


def test_plan_is_methods_x_layers_then_windows_x_ratios():
    plan = _plan()
    assert len(plan.configs) == 2 * (3 + 1) * 2  # ratio 0 is the baseline, never a configuration
    assert [c.label for c in plan.configs[:8]] == ["0", "0", "1", "1", "2", "2", "0-2", "0-2"]
    assert [c.ratio for c in plan.configs[:2]] == [-1.0, 1.5] and plan.configs[6].layers == (0, 1, 2)
    assert plan.layers == (0, 1, 2) and plan.methods == ("probe", "random_baseline")
    assert plan.configs[6].is_window and not plan.configs[0].is_window
    negative = plan_sweep(SweepSettings(layers=[-1], windows=((-3, -2),), methods=("probe",), ratios=(1.0,)), 3)
    assert [c.layers for c in negative.configs] == [(2,), (0, 1)]


@pytest.mark.parametrize(("override", "message"), [
    ({"windows": ((1,),)}, "sweep.windows[0]: a window is [first, last]"),
    ({"windows": ((2, 1),)}, "sweep.windows[0]: [2, 1] needs last > first"),
    ({"windows": ((0, 5),)}, "layer 5 is out of range"),
    ({"layers": "5:9"}, "sweep.layers: layers spec .5:9. selects no layer"),
    ({"ratios": (0.0,)}, "sweep.ratios: give at least one non-zero ratio"),
    ({"methods": ()}, "sweep.methods: name at least one method"),
    ({"subset": 0}, "sweep.subset: must be >= 1"),
])
def test_bad_grids_are_one_line_errors_naming_the_param(override, message):
    with pytest.raises(UserInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        plan_sweep(SweepSettings(**override), 3)


# --------------------------------------------------------------------------- batched == alone


@pytest.mark.parametrize("positions", ["all", "response_only"])
def test_batched_sweep_equals_each_configuration_alone(any_model, positions):
    """Every (configuration, question) row of the batched sweep gives the tokens of that configuration run alone."""
    model = any_model
    plan = _plan(positions)
    vectors = _vectors(model.config.hidden_size)
    sweep = generate_sweep(model, PROMPTS, plan, vectors, NEW, PAD, EOS, batch_size=5)  # chunks mix configurations
    baseline = [generate_greedy(model, [p], NEW, PAD, EOS, batch_size=1)[0] for p in PROMPTS]
    assert sweep.baseline_ids == baseline
    norms = mean_activation_norm(model, "residual", [0, 1, 2],
                                 [TokenSequence(tuple(p), tuple(r)) for p, r in zip(PROMPTS, baseline)], PAD, positions)
    changed = 0
    for config, coefficient, ids in zip(plan.configs, sweep.coefficients, sweep.ids):
        # ratio = coef * ||v|| / mean ||h||, with window means taken over its layers
        h = sum(norms[layer] for layer in config.layers) / len(config.layers)
        v = sum(float(vectors[(config.method, layer)].norm()) for layer in config.layers) / len(config.layers)
        assert coefficient == pytest.approx(config.ratio * h / v, rel=1e-9)
        terms = config_terms(config, coefficient, vectors)
        with steering(model, "residual", terms, positions=positions, prompt_length=max(map(len, PROMPTS))):
            alone = generate_greedy(model, PROMPTS, NEW, PAD, EOS, batch_size=len(PROMPTS))  # this config only
        assert ids == alone, config
        changed += sum(a != b for a, b in zip(ids, baseline))
    assert changed > len(plan.configs)  # both signs, layers and windows do steer


def test_a_sweep_is_about_ceil_rows_over_batch_generate_calls():
    model = tiny_model("llama")
    plan = _plan()
    calls = []
    original = model.generate

    def counted(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    model.generate = counted
    generate_sweep(model, PROMPTS, plan, _vectors(model.config.hidden_size), NEW, PAD, EOS, batch_size=10)
    rows = len(plan.configs) * len(PROMPTS)
    assert calls[0] == len(PROMPTS)  # the unsteered baseline, then the grid
    assert len(calls) - 1 == math.ceil(rows / 10) == planned_generate_calls(model, rows, 10, 20)
    assert sum(calls[1:]) == rows


# --------------------------------------------------------------------------- side effects


def _kl_by_hand(model, sequence: TokenSequence, terms, positions) -> float:
    """KL(unsteered || steered) at the positions predicting the answer, one unpadded sequence, plain hooks."""
    ids = torch.tensor([list(sequence.ids)])
    with torch.no_grad():
        plain = model(ids).logits[0].log_softmax(-1)
        with steering(model, "residual", terms, positions=positions, prompt_length=len(sequence.prompt_ids)):
            steered = model(ids).logits[0].log_softmax(-1)
    start, n = len(sequence.prompt_ids) - 1, len(sequence.response_ids)
    p, q = plain[start : start + n], steered[start : start + n]
    return float(torch.nn.functional.kl_div(q, p, log_target=True, reduction="none").sum(-1).mean())


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
@pytest.mark.parametrize("positions", ["all", "response_only"])
def test_side_effect_is_the_mean_kl_of_each_configuration_alone(arch, positions):
    model = tiny_model(arch)
    plan = _plan(positions)
    vectors = _vectors(model.config.hidden_size)
    answers = generate_greedy(model, PROMPTS, NEW, PAD, EOS)
    sequences = [TokenSequence(tuple(p), tuple(a)) for p, a in zip(PROMPTS, answers)]
    coefficients = [c.ratio * 10.0 for c in plan.configs]
    terms = [config_terms(c, k, vectors) for c, k in zip(plan.configs, coefficients)]
    batched = next_token_kl(model, "residual", sequences, [[], *terms], PAD, positions, batch_size=4)
    assert batched[0] == pytest.approx(0.0, abs=1e-6)  # no steering, no divergence
    for got, config_terms_ in zip(batched[1:], terms):
        expected = sum(_kl_by_hand(model, s, config_terms_, positions) for s in sequences) / len(sequences)
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert got > 0
    # a larger perturbation of one direction moves the model further
    probe = [[config_terms(plan.configs[2], k, vectors)] for k in (2.0, 8.0, 32.0)]
    kls = next_token_kl(model, "residual", sequences, [t[0] for t in probe], PAD, positions)
    assert kls[0] < kls[1] < kls[2]


# --------------------------------------------------------------------------- scores and tables


def test_composite_is_the_harmonic_mean_of_scaled_scores():
    assert composite_score(80, 60, None, "positive") == pytest.approx(2 / (1 / 0.8 + 1 / 0.6))
    assert composite_score(20, 60, 90, "negative") == pytest.approx(3 / (1 / 0.8 + 1 / 0.6 + 1 / 0.9))
    assert composite_score(0, 90, None, "positive") == 0.0 and composite_score(100, 90, None, "negative") == 0.0
    assert composite_score(70, 80, 0, "positive") == 0.0
    assert composite_score(None, 80, None, "positive") is None and composite_score(70, None, 50, "positive") is None


def _judged(trait_by_config, coherence_by_config, n=2):
    return [[SteeringJudgement(t, c, None)] * n for t, c in zip(trait_by_config, coherence_by_config)]


def test_results_table_best_per_method_and_best_layers():
    settings = SweepSettings(layers=[0, 1], windows=((0, 1),), methods=("probe", "random_baseline"), ratios=(-1.0, 1.0))
    plan = plan_sweep(settings, 2)
    # configs: probe 0(-1,+1) 1(-1,+1) 0-1(-1,+1), random 0(-1,+1) 1(-1,+1) 0-1(-1,+1); the baseline first
    traits = [50, 40, 70, 30, 60, 20, 90, 50, 52, 49, 51, 50, 50]
    coherence = [80, 75, 72, 78, 65, 70, 90, 80, 80, 79, 80, 80, 80]
    rows = result_rows("t/x", plan, [float(i) for i in range(12)], _judged(traits, coherence), [0.1] * 12,
                       "positive", 70.0)
    table = pd.DataFrame(rows)
    assert table["delta"].tolist() == [t - 50 for t in traits[1:]]
    assert table["coherent"].tolist() == [c >= 70 for c in coherence[1:]]
    best = best_per_method(table)
    # probe: coherent +20 at layer 0 ratio +1 and +40 at window 0-1 ratio +1 (layer 1 +10 is incoherent)
    assert best["probe"]["layers"] == "0-1" and best["probe"]["effect"] == 40
    assert best["random_baseline"]["layers"] == "0" and best["random_baseline"]["effect"] == 2
    by_layer = best_by_layer(table, "probe")
    assert by_layer["layer"].tolist() == [0, 1] and by_layer["effect"].tolist() == [20.0, -20.0]
    record = best_layers_of("t/x", table, "residual", 70.0, ["probe", "random_baseline"])
    assert {m.method: m.layer for m in record.methods} == {"probe": 0, "random_baseline": 0}
    assert record.layer_for("probe", "residual", "w") == 0
    with pytest.raises(UserInputError, match="not 'attn_out'"):
        record.layer_for("probe", "attn_out", "w")
    # a negative trait: the effect is -delta, so the lowest coherent score wins
    negative = pd.DataFrame(result_rows("t/x", plan, [0.0] * 12, _judged(traits, coherence), [0.1] * 12,
                                        "negative", 70.0))
    assert best_per_method(negative)["probe"]["layers"] == "0-1" and best_per_method(negative)["probe"]["effect"] == 30
    assert best_layers_of("t/x", negative, "residual", 70.0, ["probe"]).methods[0].layer == 1  # -20 at layer 1
    nothing = pd.DataFrame(result_rows("t/x", plan, [0.0] * 12, _judged(traits, [50] * 13), [0.1] * 12,
                                       "positive", 70.0))
    empty = best_layers_of("t/x", nothing, "residual", 70.0, ["probe"])
    assert best_per_method(nothing)["probe"] is None and empty.methods[0].layer is None
    with pytest.raises(UserInputError, match="reached min_coherence 70"):
        empty.layer_for("probe", "residual", "params.yaml:steering.best_from")
