"""Steering and ablation against independent truths: HF hidden_states, plain hooks, one-at-a-time runs."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_model
from trait_interp.core.errors import UserInputError
from trait_interp.core.forward import TokenSequence
from trait_interp.core.generation import generate_greedy
from trait_interp.core.sites import resolve_site
from trait_interp.steering.interventions import (
    SteeringTerm,
    ablation,
    batched_steering,
    generate_steered,
    mean_activation_norm,
    steering,
)

PROMPT = [5, 17, 23, 9, 41, 8]
PAD, EOS = 0, [95]


def _unit(width: int, seed: int) -> torch.Tensor:
    v = torch.randn(width, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def _hidden(model, ids) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(torch.tensor(ids), output_hidden_states=True).hidden_states


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor(ids)).logits


def _record(model, site: str, layer: int):
    """A plain forward hook written here (appended, not ours) that keeps each forward's module output."""
    seen: list[torch.Tensor] = []

    def hook(_m, _i, out):
        seen.append((out[0] if isinstance(out, tuple) else out).detach().clone())

    return seen, resolve_site(model, site, layer).module.register_forward_hook(hook)


def _hook_snapshot(model) -> dict[str, list[int]]:
    return {name: list(m._forward_hooks) + list(m._forward_pre_hooks) for name, m in model.named_modules()}


# ---------------------------------------------------------------------------------------------


def test_zero_coefficient_changes_nothing(any_model):
    v = _unit(any_model.config.hidden_size, 0)
    before = _logits(any_model, [PROMPT])
    with steering(any_model, "residual", [SteeringTerm(1, v, 0.0), SteeringTerm(0, v, 0.0)]):
        during = _logits(any_model, [PROMPT])
    assert torch.equal(before, during)


def test_residual_steering_moves_hidden_state_by_coef_v(any_model):
    """hidden_states[L+1] = block L output moves by exactly coef*v; earlier entries do not move.

    The unsteered hidden states are read first, so transformers' own recording hooks are already
    installed when the steering hook is added: this is the order in which an appended hook
    would not show up in ``hidden_states``.
    """
    v, coef = _unit(any_model.config.hidden_size, 1), 2.5
    ids = [PROMPT, PROMPT[::-1]]
    plain = _hidden(any_model, ids)
    for layer in (1, -2):  # -2 is block 1 of 3
        with steering(any_model, "residual", [SteeringTerm(layer, v, coef)]):
            steered = _hidden(any_model, ids)
        for i in range(2):
            assert torch.equal(steered[i], plain[i])
        torch.testing.assert_close(steered[2] - plain[2], (coef * v).expand_as(plain[2]), rtol=0, atol=1e-5)
        assert not torch.allclose(steered[3], plain[3])  # and the change propagates


@pytest.mark.parametrize("site", ["attn_out", "mlp_out", "attn_contribution", "mlp_contribution", "k_proj", "v_proj"])
def test_other_sites_move_module_output_by_coef_v(any_model, site):
    width = resolve_site(any_model, site, 1).module.weight.shape[0]
    v, coef = _unit(width, 2), -1.5
    seen, handle = _record(any_model, site, 1)
    try:
        _logits(any_model, [PROMPT])
        with steering(any_model, site, [SteeringTerm(1, v, coef)]):
            _logits(any_model, [PROMPT])
    finally:
        handle.remove()
    plain, steered = seen
    torch.testing.assert_close(steered - plain, (coef * v).expand_as(plain), rtol=0, atol=1e-5)


def test_terms_at_several_layers_all_apply():
    """Block 1's output under layer-0 + layer-1 terms = (its output under the layer-0 term) + the layer-1 terms."""
    model = tiny_model("llama")
    width = model.config.hidden_size
    v0, v1, v2 = _unit(width, 3), _unit(width, 4), _unit(width, 5)
    only_first = [SteeringTerm(0, v0, 2.0)]
    both = [*only_first, SteeringTerm(1, v1, -1.0), SteeringTerm(1, v2, 0.5)]  # two terms at layer 1 sum
    plain = _hidden(model, [PROMPT])
    with steering(model, "residual", only_first):
        first = _hidden(model, [PROMPT])
    with steering(model, "residual", both):
        steered = _hidden(model, [PROMPT])
    torch.testing.assert_close(steered[1] - plain[1], (2.0 * v0).expand_as(plain[1]), rtol=0, atol=1e-5)
    expected = first[2] + (-1.0 * v1 + 0.5 * v2)
    torch.testing.assert_close(steered[2], expected, rtol=0, atol=1e-5)


def test_float32_product_then_cast_for_low_precision_models():
    model = tiny_model("llama").to(torch.bfloat16)
    v = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(6)).to(torch.bfloat16)
    coef = 1 / 3
    seen, handle = _record(model, "attn_out", 0)
    try:
        _logits(model, [PROMPT])
        with steering(model, "attn_out", [SteeringTerm(0, v, coef)]):
            _logits(model, [PROMPT])
    finally:
        handle.remove()
    plain, steered = seen
    assert steered.dtype == torch.bfloat16
    assert torch.equal(steered, plain + (coef * v.float()).to(torch.bfloat16))


# ---------------------------------------------------------------------------------------------
# per-row batched steering


CONFIG_SEEDS = (10, 11, 12)


def _configs(width: int) -> list[list[SteeringTerm]]:
    v0, v1, v2 = (_unit(width, s) for s in CONFIG_SEEDS)
    return [
        [],  # unsteered row
        [SteeringTerm(0, v0, 4.0)],
        [SteeringTerm(1, v1, -4.0)],
        [SteeringTerm(-3, v0, -3.0), SteeringTerm(2, v2, 3.0)],
    ]


@pytest.mark.parametrize("positions", ["all", "response_only"])
def test_batched_rows_equal_each_configuration_alone(any_model, positions):
    model = any_model
    prompts = [PROMPT, [13, 14, 15]]  # different lengths: the short one is left-padded
    configs = _configs(model.config.hidden_size)
    rows = [(p, c) for p in prompts for c in configs]
    batched = generate_steered(
        model, [p for p, _ in rows], [c for _, c in rows], "residual", 8, PAD, EOS, batch_size=5, positions=positions
    )
    alone = []
    for prompt, terms in rows:
        with steering(model, "residual", terms, positions=positions, prompt_length=len(prompt)):
            alone.extend(generate_greedy(model, [prompt], 8, PAD, EOS, batch_size=1))
    assert batched == alone
    unsteered = {tuple(p): out for (p, c), out in zip(rows, alone) if not c}
    assert any(out != unsteered[tuple(p)] for (p, c), out in zip(rows, alone) if c)  # steering does something


def test_batched_steering_row_deltas_are_exact():
    model = tiny_model("qwen2")
    configs = _configs(model.config.hidden_size)
    ids = [PROMPT] * len(configs)
    plain = _hidden(model, ids)
    with batched_steering(model, "residual", configs):
        steered = _hidden(model, ids)
    assert torch.equal(steered[1][0], plain[1][0]) and torch.equal(steered[3][0], plain[3][0])  # unsteered row
    torch.testing.assert_close(steered[1][1] - plain[1][1], (4.0 * configs[1][0].vector).expand(len(PROMPT), -1))
    assert torch.equal(steered[1][2], plain[1][2])  # row 2 is steered at layer 1 only
    torch.testing.assert_close(steered[2][2] - plain[2][2], (-4.0 * configs[2][0].vector).expand(len(PROMPT), -1))


# ---------------------------------------------------------------------------------------------
# ablation


def test_ablation_removes_the_direction(any_model):
    direction = 3.0 * _unit(any_model.config.hidden_size, 20)
    r = direction / direction.norm()
    plain = _hidden(any_model, [PROMPT])
    with ablation(any_model, "residual", direction, [0, 1]):
        ablated = _hidden(any_model, [PROMPT])
    for layer in (0, 1):
        assert (ablated[layer + 1] @ r).abs().max() < 1e-4
        assert (plain[layer + 1] @ r).abs().max() > 1e-2  # there was something to remove
    with ablation(any_model, "residual", direction, [-2]):
        single = _hidden(any_model, [PROMPT])
    h = plain[2]
    torch.testing.assert_close(single[2], h - (h @ r)[..., None] * r, rtol=0, atol=1e-5)
    assert torch.equal(single[1], plain[1])


# ---------------------------------------------------------------------------------------------
# response_only


def test_response_only_leaves_the_prompt_and_steers_the_response(any_model):
    model, layer, coef = any_model, 1, 3.0
    v = _unit(model.config.hidden_size, 30)
    runs = []
    for terms in ([], [SteeringTerm(layer, v, coef)]):
        seen, handle = _record(model, "residual", layer)
        try:
            with steering(model, "residual", terms, positions="response_only", prompt_length=len(PROMPT)):
                tokens = generate_greedy(model, [PROMPT], 4, PAD, [])
        finally:
            handle.remove()
        runs.append((tokens, seen))
    (plain_tokens, plain), (steered_tokens, steered) = runs
    assert [t.shape[1] for t in steered] == [len(PROMPT), 1, 1, 1]  # prefill, then one token per step
    assert torch.equal(steered[0], plain[0])  # prompt positions untouched
    # the first response token comes from the (untouched) prompt, so step 1 sees the same input:
    # its block output differs by exactly coef * v
    assert steered_tokens[0][0] == plain_tokens[0][0]
    torch.testing.assert_close(steered[1] - plain[1], (coef * v).expand_as(plain[1]), rtol=0, atol=1e-5)


def test_response_only_in_one_forward_steers_positions_after_the_prompt():
    model = tiny_model("gemma2")
    v, coef, ids = _unit(model.config.hidden_size, 31), 2.0, [PROMPT + [12, 33, 7]]
    plain = _hidden(model, ids)
    with steering(model, "residual", [SteeringTerm(0, v, coef)], positions="response_only", prompt_length=len(PROMPT)):
        steered = _hidden(model, ids)
    n = len(PROMPT)
    assert torch.equal(steered[1][:, :n], plain[1][:, :n])
    assert torch.equal(steered[3][:, :n], plain[3][:, :n])  # causal: later layers' prompt positions too
    torch.testing.assert_close(steered[1][:, n:] - plain[1][:, n:], (coef * v).expand(1, 3, -1), rtol=0, atol=1e-5)


def test_response_only_without_kv_cache_is_an_error():
    model = tiny_model("llama")
    v = _unit(model.config.hidden_size, 32)
    with steering(model, "residual", [SteeringTerm(0, v, 1.0)], positions="response_only", prompt_length=len(PROMPT)):
        with pytest.raises(RuntimeError, match="KV-cached"):
            model.generate(torch.tensor([PROMPT]), max_new_tokens=3, do_sample=False, use_cache=False, pad_token_id=PAD)


# ---------------------------------------------------------------------------------------------
# errors and cleanup


def test_invalid_inputs_are_clear_errors():
    model = tiny_model("llama")
    width = model.config.hidden_size
    v = _unit(width, 40)
    with pytest.raises(ValueError, match="1-D"):
        with steering(model, "residual", [SteeringTerm(0, v[None], 1.0)]):
            pass
    with pytest.raises(ValueError, match="width 16 but the site output has width 32"):
        with steering(model, "residual", [SteeringTerm(0, v[:16], 1.0)]):
            pass
    with pytest.raises(ValueError, match="width 32 but the site output has width 16"):
        with steering(model, "k_proj", [SteeringTerm(0, v, 1.0)]):
            pass
    with pytest.raises(ValueError, match="needs prompt_length"):
        with steering(model, "residual", [SteeringTerm(0, v, 1.0)], positions="response_only"):
            pass
    with pytest.raises(ValueError, match="unknown steering positions"):
        with steering(model, "residual", [], positions="prompt"):  # type: ignore[arg-type]
            pass
    with pytest.raises(UserInputError, match="out of range"):
        with steering(model, "residual", [SteeringTerm(3, v, 1.0)]):
            pass
    with pytest.raises(ValueError, match="norm"):
        with ablation(model, "residual", torch.zeros(width), [0]):
            pass
    with pytest.raises(ValueError, match="1-D"):
        with ablation(model, "residual", torch.ones(2, width), [0]):
            pass
    with pytest.raises(ValueError, match="2 prompts but 1 rows"):
        generate_steered(model, [PROMPT, PROMPT], [[]], "residual", 2, PAD, EOS)
    assert all(not m._forward_hooks for m in model.modules())


def test_nothing_stays_attached(any_model):
    model, v = any_model, _unit(any_model.config.hidden_size, 50)
    _hidden(model, [PROMPT])  # transformers' own recording hooks are part of the snapshot
    snapshot, logits = _hook_snapshot(model), _logits(model, [PROMPT])
    with steering(model, "residual", [SteeringTerm(0, v, 5.0), SteeringTerm(2, v, 1.0)]):
        assert _hook_snapshot(model) != snapshot
        _logits(model, [PROMPT])
    assert _hook_snapshot(model) == snapshot
    with pytest.raises(KeyError):  # the block body raises
        with ablation(model, "attn_out", v, [0, 1]):
            raise KeyError("boom")
    assert _hook_snapshot(model) == snapshot
    with pytest.raises(ValueError, match="set up for 3 rows but the forward pass has batch size 1"):  # forward raises
        with batched_steering(model, "residual", [[SteeringTerm(1, v, 1.0)], [], []]):
            _logits(model, [PROMPT])
    assert _hook_snapshot(model) == snapshot
    with pytest.raises(IndexError):  # out-of-vocab id: the embedding raises
        with steering(model, "mlp_out", [SteeringTerm(1, v, 1.0)], positions="response_only", prompt_length=2):
            _logits(model, [[1, 2, 10_000]])
    assert _hook_snapshot(model) == snapshot
    assert torch.equal(_logits(model, [PROMPT]), logits)


# ---------------------------------------------------------------------------------------------
# activation norms


SEQUENCES = [
    TokenSequence(tuple(PROMPT), (12, 33, 7, 60)),
    TokenSequence((3, 4), (50, 51, 52)),
    TokenSequence((9, 8, 7, 6, 5, 4, 3, 2, 1, 11, 12), (13,)),
    TokenSequence((70,), (71, 72)),  # response_only: the first token is the prompt, nothing else to drop
]


@pytest.mark.parametrize("positions", ["all", "response_only"])
def test_mean_activation_norm_equals_hidden_state_norms(any_model, positions):
    layers = [0, 1, -2]
    norms: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for seq in SEQUENCES:  # each alone, unpadded, from HF hidden_states
        hidden = _hidden(any_model, [list(seq.ids)])
        first = max(1, len(seq.prompt_ids)) if positions == "response_only" else 1
        for layer in layers:
            norms[layer].append(hidden[layer % 3 + 1][0, first:].norm(dim=-1))
    truth = {layer: float(torch.cat(parts).mean()) for layer, parts in norms.items()}
    for batch_size in (3, 1):
        got = mean_activation_norm(any_model, "residual", layers, SEQUENCES, PAD, positions, batch_size=batch_size)
        assert got.keys() == truth.keys()
        for layer in layers:
            assert got[layer] == pytest.approx(truth[layer], rel=1e-5), (layer, batch_size)
    assert truth[0] != pytest.approx(  # the first token is really left out
        float(torch.cat([_hidden(any_model, [list(s.ids)])[1][0].norm(dim=-1) for s in SEQUENCES]).mean()), rel=1e-3
    ) or positions == "response_only"


def test_mean_activation_norm_with_nothing_to_average_is_an_error():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="no token"):
        mean_activation_norm(model, "residual", [0], [TokenSequence((1, 2, 3), ())], PAD, "response_only")
