"""Gated steering and capping against independent truths: unsteered and plain-steered generation, HF
hidden_states with the steering added by hand at the positions the gate fired, each row alone."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import tiny_model
from trait_interp.core.generation import generate_greedy
from trait_interp.core.sites import resolve_site
from trait_interp.steering.gating import (
    CapTerm,
    Gate,
    Recorder,
    RowIntervention,
    generate_intervened,
    intervening,
)
from trait_interp.steering.interventions import SteeringTerm, generate_steered

PROMPTS = [[5, 17, 23, 9, 41, 8], [13, 14, 15], [30, 31, 32, 33, 34, 35, 36, 37]]  # left-padded in one batch
PAD, EOS, NEW = 0, [95], 8


def _unit(width: int, seed: int) -> torch.Tensor:
    v = torch.randn(width, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def _hidden(model, ids) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(torch.tensor(ids), output_hidden_states=True).hidden_states


def _hook_snapshot(model) -> dict[str, list[int]]:
    return {name: list(m._forward_hooks) + list(m._forward_pre_hooks) for name, m in model.named_modules()}


def _observed(model, gate: Gate, prompts=PROMPTS) -> torch.Tensor:
    """Every projection an observing gate (no terms) reads during unsteered generation, response tokens included."""
    out = generate_intervened(model, prompts, [RowIntervention(gate=gate)] * len(prompts), "residual", NEW, PAD, EOS)
    return torch.cat([t.projection[1:] for row in out.traces for t in row])


def _between(values: torch.Tensor, fraction: float = 0.5) -> float:
    """A threshold halfway between two neighbouring values: about ``fraction`` of them below, none equal to it."""
    ordered = values.flatten().sort().values
    middle = min(max(1, round(len(ordered) * fraction)), len(ordered) - 1)
    return float(ordered[middle - 1] + ordered[middle]) / 2


def _median_gate(model, layer: int, seed: int, **kwargs) -> Gate:
    """A gate whose threshold splits what it reads in unsteered generation (prompt mode: the prompts' means)."""
    vector = _unit(model.config.hidden_size, seed)
    if kwargs.get("mode") != "prompt":
        return Gate(layer, vector, _between(_observed(model, Gate(layer, vector, 0.0, **kwargs))), **kwargs)
    prompts = PROMPTS[:2]  # the prompts the batched test runs: one mean above the threshold, one below
    out = generate_intervened(model, prompts, [RowIntervention(gate=Gate(layer, vector, 0.0))] * len(prompts), "residual",
                              1, PAD, EOS)
    means = torch.tensor([float(t.projection[1 : len(p)].mean()) for p, (t,) in zip(prompts, out.traces)])
    return Gate(layer, vector, _between(means), **kwargs)


# ---------------------------------------------------------------------------------------------
# gates that never fire or always fire


@pytest.mark.parametrize("mode", ["token", "latch", "prompt"])
@pytest.mark.parametrize("positions", ["all", "response_only"])
def test_a_gate_that_never_fires_is_unsteered_generation(any_model, mode, positions):
    v = _unit(any_model.config.hidden_size, 1)
    terms = (SteeringTerm(1, v, 8.0), SteeringTerm(2, v, -4.0))
    closed = [RowIntervention(terms, Gate(0, _unit(any_model.config.hidden_size, 2), math.inf, mode=mode))] * 3
    out = generate_intervened(any_model, PROMPTS, closed, "residual", NEW, PAD, EOS, batch_size=3, positions=positions)
    assert out.responses == generate_greedy(any_model, PROMPTS, NEW, PAD, EOS, batch_size=3)
    plain = generate_steered(any_model, PROMPTS, [list(terms)] * 3, "residual", NEW, PAD, EOS, 3, positions)
    assert plain != out.responses  # the terms do change the answers when applied
    for prompt, response, (trace,) in zip(PROMPTS, out.responses, out.traces):
        assert trace.projection.shape == (len(prompt) + len(response) - 1,)
        assert not trace.fired.any() and not trace.steered.any()


@pytest.mark.parametrize("mode", ["token", "latch", "prompt"])
def test_a_gate_that_always_fires_is_plain_steering(any_model, mode):
    width = any_model.config.hidden_size
    v0, v1 = _unit(width, 3), _unit(width, 4)
    terms = [SteeringTerm(1, v0, 6.0), SteeringTerm(2, v1, 3.0)]
    for positions, skip in (("all", False), ("response_only", True)):  # response_only never steers the first token
        gate = Gate(1, _unit(width, 5), -math.inf, mode=mode, skip_first_token=skip)
        out = generate_intervened(any_model, PROMPTS, [RowIntervention(tuple(terms), gate)] * 3, "residual", NEW,
                                  PAD, EOS, batch_size=3, positions=positions)
        plain = generate_steered(any_model, PROMPTS, [terms] * 3, "residual", NEW, PAD, EOS, 3, positions)
        assert out.responses == plain
        assert plain != generate_greedy(any_model, PROMPTS, NEW, PAD, EOS, batch_size=3)
        for prompt, (trace,) in zip(PROMPTS, out.traces):
            if mode == "prompt":  # decided once, marked at the last prompt token
                assert trace.fired.nonzero().flatten().tolist() == [len(prompt) - 1]
            else:
                assert bool(trace.fired[0]) is not skip and trace.fired[1:].all()
            assert trace.steered[len(prompt):].all() and trace.steered[: len(prompt)].all() == (positions == "all")


# ---------------------------------------------------------------------------------------------
# what a gate steers, against hidden_states


@pytest.mark.parametrize("mode", ["token", "latch"])
def test_steering_lands_exactly_on_the_positions_the_gate_opened(any_model, mode):
    """Gate on block 0's output, steer block 1's: block 1 moves by coef * v exactly where the gate is open."""
    model, width, coef = any_model, any_model.config.hidden_size, 2.5
    ids = [PROMPTS[2] + [12, 33, 7, 60]]
    plain = _hidden(model, ids)
    u = _unit(width, 6)
    read = plain[1][0] @ u  # the gate's reading of block 0, from HF hidden_states
    threshold = _between(read[1:])
    fired = read > threshold
    fired[0] = False  # skip_first_token
    expected = fired if mode == "token" else torch.cumsum(fired, 0) > 0
    assert 0 < int(expected.sum()) < len(read)  # some positions open, some closed
    v = _unit(width, 7)
    recorder = Recorder()
    with intervening(model, "residual", [RowIntervention((SteeringTerm(1, v, coef),), Gate(0, u, threshold, mode=mode))],
                     recorder=recorder):
        steered = _hidden(model, ids)
    assert torch.equal(steered[1], plain[1])
    torch.testing.assert_close(steered[2][0] - plain[2][0], expected[:, None] * (coef * v), rtol=0, atol=1e-5)
    (trace,) = recorder.traces()[0]
    torch.testing.assert_close(trace.projection, read, rtol=0, atol=1e-5)
    assert torch.equal(trace.fired, fired) and torch.equal(trace.steered, expected)


@pytest.mark.parametrize("margin", [-0.5, 0.5])
def test_a_prompt_gate_decides_from_the_prompt_mean_and_steers_the_whole_sequence(any_model, margin):
    model, width, coef = any_model, any_model.config.hidden_size, 2.5
    prompt = PROMPTS[2]
    ids = [prompt + [12, 33, 7, 60]]
    plain = _hidden(model, ids)
    u, v = _unit(width, 6), _unit(width, 7)
    mean = float((plain[1][0] @ u)[1 : len(prompt)].mean())  # the prompt without its first token
    gate = Gate(0, u, mean + margin, mode="prompt")  # just below the mean: fires; just above: never
    recorder = Recorder()
    with intervening(model, "residual", [RowIntervention((SteeringTerm(1, v, coef),), gate)], recorder=recorder,
                     prompt_ends=[len(prompt)]):
        steered = _hidden(model, ids)
    opened = margin < 0
    torch.testing.assert_close(steered[2][0] - plain[2][0], (coef * v).expand(len(ids[0]), -1) * opened, rtol=0, atol=1e-5)
    (trace,) = recorder.traces()[0]
    assert trace.steered.all() if opened else not trace.steered.any()
    assert trace.fired.nonzero().flatten().tolist() == ([len(prompt) - 1] if opened else [])


def test_a_below_gate_fires_under_its_threshold_and_padding_never_fires():
    model = tiny_model("llama")
    width = model.config.hidden_size
    u, v = _unit(width, 8), _unit(width, 9)
    ids = PROMPTS[0]
    read = _hidden(model, [ids])[1][0] @ u
    threshold = _between(read[1:])
    gate = Gate(0, u, threshold, when="below", mode="token")
    recorder = Recorder()
    padded = [[PAD] * 3 + ids]
    with intervening(model, "residual", [RowIntervention((SteeringTerm(1, v, 1.0),), gate)], padding=[3],
                     recorder=recorder):
        with torch.no_grad():
            model(torch.tensor(padded), attention_mask=torch.tensor([[0] * 3 + [1] * len(ids)]))
    (trace,) = recorder.traces()[0]
    assert trace.projection.shape == (len(ids),)  # the padding is not in the record
    expected = read < threshold
    expected[0] = False
    assert torch.equal(trace.fired, expected) and 0 < int(expected.sum()) < len(ids)


# ---------------------------------------------------------------------------------------------
# batched rows


def _rows(model) -> list[RowIntervention]:
    width = model.config.hidden_size
    v = [_unit(width, s) for s in (20, 21, 22)]
    token_gate = _median_gate(model, 0, 23, mode="token")
    latch_gate = _median_gate(model, 1, 24, mode="latch", when="below")
    prompt_gate = _median_gate(model, 1, 25, mode="prompt")  # some prompts' means above, some below
    band = _observed(model, Gate(1, v[2], 0.0))
    cap_low, cap_high = _between(band, 0.3), _between(band, 0.7)  # between observed values: no near-ties
    return [
        RowIntervention(),  # unsteered
        RowIntervention((SteeringTerm(1, v[0], 6.0),)),  # plain steering
        RowIntervention((SteeringTerm(1, v[0], 6.0), SteeringTerm(2, v[1], -3.0)), token_gate),
        RowIntervention((SteeringTerm(2, v[1], 5.0),), latch_gate),
        RowIntervention(gate=latch_gate),  # a gate that only observes
        RowIntervention(caps=(CapTerm(1, v[2], cap_low, cap_high), CapTerm(2, v[2], None, cap_low))),
        RowIntervention((SteeringTerm(2, v[0], 4.0),), Gate(2, v[1], math.inf)),  # never fires
        RowIntervention((SteeringTerm(1, v[1], -6.0),), prompt_gate),
    ]


@pytest.mark.parametrize("positions", ["all", "response_only"])
def test_batched_rows_with_different_gates_equal_each_alone(any_model, positions):
    model = any_model
    configs = _rows(model)
    pairs = [(p, c) for p in PROMPTS[:2] for c in configs]  # two prompt lengths: the short one is left-padded
    prompts, rows = [p for p, _ in pairs], [c for _, c in pairs]
    batched = generate_intervened(model, prompts, rows, "residual", NEW, PAD, EOS, batch_size=8, positions=positions)
    for i, (prompt, row) in enumerate(pairs):
        alone = generate_intervened(model, [prompt], [row], "residual", NEW, PAD, EOS, batch_size=1, positions=positions)
        assert batched.responses[i] == alone.responses[0], i
        assert len(batched.traces[i]) == len(alone.traces[0])
        for got, want in zip(batched.traces[i], alone.traces[0]):
            assert (got.kind, got.layer) == (want.kind, want.layer)
            torch.testing.assert_close(got.projection, want.projection, rtol=0, atol=1e-4)
            assert torch.equal(got.fired, want.fired) and torch.equal(got.steered, want.steered)
    by_config = {j: [batched.responses[i] for i, (_, c) in enumerate(pairs) if c is configs[j]] for j in range(len(configs))}
    assert by_config[6] == by_config[0] == by_config[4]  # never firing, observing only: unsteered
    assert by_config[2] != by_config[0] and by_config[2] != by_config[1]  # gated: neither unsteered nor plain
    prompt_gated = [any(t.steered.any() for t in batched.traces[i]) for i, (_, c) in enumerate(pairs) if c is configs[7]]
    assert any(prompt_gated) and not all(prompt_gated)  # the prompt gate opens for some prompts only
    gated = [t for i, (_, c) in enumerate(pairs) if c is configs[2] for t in batched.traces[i]]
    assert any(t.fired.any() for t in gated) and any((~t.fired[1:]).any() for t in gated)


@pytest.mark.parametrize("config", [3, 7])  # a latch gate, a prompt gate
def test_generation_records_what_a_full_replay_reads(any_model, config):
    """The KV-cached record (prefill, then one token per step) equals one forward pass over prompt + response."""
    model = any_model
    row = _rows(model)[config]
    out = generate_intervened(model, PROMPTS, [row] * 3, "residual", NEW, PAD, EOS, batch_size=3)
    for prompt, response, (trace,) in zip(PROMPTS, out.responses, out.traces):
        recorder = Recorder()
        with intervening(model, "residual", [row], recorder=recorder, prompt_ends=[len(prompt)]):
            _hidden(model, [prompt + response])
        (replay,) = recorder.traces()[0]
        n = len(trace.projection)
        torch.testing.assert_close(trace.projection, replay.projection[:n], rtol=0, atol=1e-4)
        assert torch.equal(trace.fired, replay.fired[:n]) and torch.equal(trace.steered, replay.steered[:n])
        steered = trace.steered.nonzero()
        if len(steered) and config == 3:  # latch: steered from the first firing token on
            assert trace.steered[int(steered[0]):].all() and int(steered[0]) == int(trace.fired.nonzero()[0])
        if config == 7:  # prompt: all or nothing
            assert trace.steered.all() or not trace.steered.any()


# ---------------------------------------------------------------------------------------------
# caps


def _around(model, module, fn):
    """Hooks before and after this block's hook: (what the cap saw, what it left), per forward."""
    before, after = [], []
    first = module.register_forward_hook(lambda _m, _i, o: before.append((o[0] if isinstance(o, tuple) else o).clone()),
                                         prepend=True)
    last = module.register_forward_hook(lambda _m, _i, o: after.append((o[0] if isinstance(o, tuple) else o).clone()))
    try:
        fn()
    finally:
        first.remove()
        last.remove()
    return torch.cat(before, dim=1), torch.cat(after, dim=1)


@pytest.mark.parametrize("positions", ["all", "response_only"])
def test_caps_clamp_the_projection_and_leave_the_orthogonal_part(any_model, positions):
    model, width = any_model, any_model.config.hidden_size
    u = _unit(width, 30)
    values = _observed(model, Gate(1, u, 0.0))
    low, high = float(values.quantile(0.4)), float(values.quantile(0.6))
    rows = [RowIntervention(caps=(CapTerm(0, 3.0 * u, low - 1.0, None), CapTerm(1, u, low, high))), RowIntervention()]
    prompts = [PROMPTS[0], PROMPTS[0]]
    for layer in (0, 1):
        module = resolve_site(model, "residual", layer).module
        seen, left = _around(model, module, lambda: _run_inside(model, rows, positions, prompts))
        lo, hi = (low - 1.0, math.inf) if layer == 0 else (low, high)
        p_seen, p_left = seen.double() @ u.double(), left.double() @ u.double()
        first = len(PROMPTS[0]) if positions == "response_only" else 0
        capped = p_left[0, first:]
        assert (capped >= lo - 1e-5).all() and (capped <= hi + 1e-5).all()
        outside = (p_seen[0, first:] < lo) | (p_seen[0, first:] > hi)
        if layer == 1:
            assert outside.any()  # the cap bound somewhere
        ortho = lambda h, p: h.double() - p[..., None] * u.double()  # noqa: E731
        torch.testing.assert_close(ortho(left, p_left), ortho(seen, p_seen), rtol=0, atol=1e-5)
        assert torch.equal(left[0, first:][~outside], seen[0, first:][~outside])  # inside the range: untouched
        assert torch.equal(left[1], seen[1])  # the row without caps
        if first:
            assert torch.equal(left[0, :first], seen[0, :first])  # response_only: the prompt is not capped


def _run_inside(model, rows, positions, prompts) -> None:
    with intervening(model, "residual", rows, positions, prompt_length=len(prompts[0])):
        model.generate(torch.tensor(prompts), max_new_tokens=NEW, do_sample=False, pad_token_id=PAD)


# ---------------------------------------------------------------------------------------------
# errors and cleanup


def test_invalid_setups_are_clear_errors():
    model = tiny_model("llama")
    width = model.config.hidden_size
    v = _unit(width, 40)
    term = SteeringTerm(1, v, 1.0)

    def enter(rows, **kwargs) -> None:
        with intervening(model, "residual", rows, **kwargs):
            pass

    with pytest.raises(ValueError, match="after the steered residual at layer 1"):
        enter([RowIntervention((term,), Gate(2, v, 0.0))])
    with pytest.raises(ValueError, match="the same layer only at the same site"):
        enter([RowIntervention((term,), Gate(1, torch.ones(width), 0.0, site="attn_out"))])
    with pytest.raises(ValueError, match="norm"):
        enter([RowIntervention((term,), Gate(0, torch.zeros(width), 0.0))])
    with pytest.raises(ValueError, match="width 16 but the site output has width 32"):
        enter([RowIntervention((term,), Gate(0, v[:16], 0.0))])
    with pytest.raises(ValueError, match="NaN"):
        enter([RowIntervention((term,), Gate(0, v, math.nan))])
    with pytest.raises(ValueError, match="unknown gate mode"):
        enter([RowIntervention((term,), Gate(0, v, 0.0, mode="sometimes"))])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        enter([RowIntervention(caps=(CapTerm(0, v, 2.0, 1.0),))])
    with pytest.raises(ValueError, match="two caps at layer 0"):
        enter([RowIntervention(caps=(CapTerm(0, v, 0.0, 1.0), CapTerm(-3, v, None, 1.0)))])
    with pytest.raises(ValueError, match="needs prompt_length"):
        enter([RowIntervention((term,))], positions="response_only")
    with pytest.raises(ValueError, match="2 prompts but 1 rows"):
        generate_intervened(model, PROMPTS[:2], [RowIntervention()], "residual", 2, PAD, EOS)
    with pytest.raises(RuntimeError, match="KV-cached"):
        with intervening(model, "residual", [RowIntervention((term,), Gate(0, v, 0.0))]):
            model.generate(torch.tensor([PROMPTS[0]]), max_new_tokens=3, do_sample=False, use_cache=False,
                           pad_token_id=PAD)
    assert all(not m._forward_hooks for m in model.modules())


def test_nothing_stays_attached(any_model):
    model = any_model
    _hidden(model, [PROMPTS[0]])  # transformers' own recording hooks are part of the snapshot
    snapshot = _hook_snapshot(model)
    rows = _rows(model)[2:3]
    with intervening(model, "residual", rows):
        assert _hook_snapshot(model) != snapshot
    assert _hook_snapshot(model) == snapshot
    with pytest.raises(ValueError, match="set up for 2 rows but the forward pass has batch size 1"):
        with intervening(model, "residual", rows * 2):
            _hidden(model, [PROMPTS[0]])
    assert _hook_snapshot(model) == snapshot
