"""Stream-through projection equals independent truth: HF hidden_states, plain hooks, cached generation."""

from __future__ import annotations

import pytest
import torch

from schemas.projections import Projections
from tests.conftest import tiny_model
from trait_interp.core.forward import TokenSequence
from trait_interp.monitoring.projection import (
    TraitVector,
    project_sequences,
    to_long_rows,
)

SEQUENCES = [
    TokenSequence(prompt_ids=(5, 17, 23, 9, 41, 8), response_ids=(12, 33, 7, 60)),
    TokenSequence(prompt_ids=(3, 4), response_ids=(50, 51, 52)),
    TokenSequence(prompt_ids=(9, 8, 7, 6, 5, 4, 3, 2, 1, 11, 12), response_ids=(13,)),
]
HIDDEN = 32


def _vectors(layers: list[int], traits: tuple[str, ...] = ("calm", "evil", "sycophancy"), site: str = "residual", width: int = HIDDEN):
    generator = torch.Generator().manual_seed(1)
    return [
        TraitVector(trait, "probe", site, layer, torch.randn(width, generator=generator) * (1.5 + i))  # non-unit
        for layer in layers
        for i, trait in enumerate(traits)
    ]


def _block_outputs(model, ids: list[int], module_of) -> dict[int, torch.Tensor]:
    """Output of ``module_of(layer)`` for every layer, read by plain forward hooks written here."""
    outputs, handles = {}, []
    for layer in range(model.config.num_hidden_layers):

        def hook(_m, _i, out, layer=layer):
            outputs[layer] = (out[0] if isinstance(out, tuple) else out)[0].detach().clone()

        handles.append(module_of(layer).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _truth(model, seq: TokenSequence) -> dict[int, torch.Tensor]:
    """Residual (block output) per layer: ``hidden_states[L+1]``, except the last layer, whose
    ``hidden_states`` entry has the final norm applied; it is read by a plain hook on the block."""
    with torch.no_grad():
        hidden = model(torch.tensor([seq.ids]), output_hidden_states=True).hidden_states
    n = model.config.num_hidden_layers
    states = {layer: hidden[layer + 1][0] for layer in range(n - 1)}
    states[n - 1] = _block_outputs(model, list(seq.ids), lambda layer: model.model.layers[layer])[n - 1]
    return states


def test_projection_equals_hidden_states_dot_v(any_model):
    n = any_model.config.num_hidden_layers
    vectors = _vectors([0, 1, -1])
    result = project_sequences(any_model, SEQUENCES, vectors, pad_id=0, batch_size=3)  # left-padded batch
    assert result.layers == (0, 0, 0, 1, 1, 1, n - 1, n - 1, n - 1)
    for seq, proj in zip(SEQUENCES, result.sequences):
        states = _truth(any_model, seq)
        assert proj.scores.shape == (len(seq.ids), len(vectors)) and proj.scores.dtype == torch.float32
        for column, vector in enumerate(vectors):
            h = states[result.layers[column]]  # [tokens, hidden]: prompt and response tokens
            expected = h @ vector.vector / vector.vector.norm()
            torch.testing.assert_close(proj.scores[:, column], expected, rtol=1e-4, atol=1e-4)
        for layer in (0, 1, n - 1):
            torch.testing.assert_close(proj.norms[("residual", layer)], states[layer].norm(dim=-1), rtol=1e-4, atol=1e-4)
        assert set(proj.norms) == {("residual", 0), ("residual", 1), ("residual", n - 1)}
    # the last layer's block output is NOT hidden_states[-1] (final norm): the test would notice
    with torch.no_grad():
        normed = any_model(torch.tensor([SEQUENCES[0].ids]), output_hidden_states=True).hidden_states[-1][0]
    assert not torch.allclose(result[0].scores[:, -1], normed @ vectors[-1].vector / vectors[-1].vector.norm(), atol=1e-3)


def test_batched_equals_unbatched_exactly_aligned(any_model):
    vectors = _vectors([0, 2])
    batched = project_sequences(any_model, SEQUENCES, vectors, pad_id=0, batch_size=8)
    for row, seq in enumerate(SEQUENCES):
        alone = project_sequences(any_model, [seq], vectors, pad_id=0, batch_size=1)[0]
        torch.testing.assert_close(batched[row].scores, alone.scores, rtol=1e-4, atol=1e-5)
        for key in alone.norms:
            torch.testing.assert_close(batched[row].norms[key], alone.norms[key], rtol=1e-4, atol=1e-5)
    # batch sizes that split the list differently give the same thing
    split = project_sequences(any_model, SEQUENCES, vectors, pad_id=0, batch_size=2)
    for a, b in zip(batched.sequences, split.sequences):
        torch.testing.assert_close(a.scores, b.scores, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_attn_out_site_equals_module_output(arch):
    model = tiny_model(arch)
    vectors = _vectors([0, 1, 2], traits=("a", "b"), site="attn_out") + _vectors([1], traits=("r",))
    result = project_sequences(model, SEQUENCES[:2], vectors, pad_id=0, batch_size=2)
    for seq, proj in zip(SEQUENCES[:2], result.sequences):
        truth = _block_outputs(model, list(seq.ids), lambda layer: model.model.layers[layer].self_attn.o_proj)
        for column, vector in enumerate(vectors[:6]):
            h = truth[vector.layer]
            torch.testing.assert_close(proj.scores[:, column], h @ vector.vector / vector.vector.norm(), rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(proj.norms[("attn_out", vector.layer)], h.norm(dim=-1), rtol=1e-4, atol=1e-4)
        assert ("residual", 1) in proj.norms and len(proj.norms) == 4


def test_one_pass_states_equal_cached_generation_states(any_model):
    """Activations of a generated response come from one forward pass over prompt+response ids:
    equal to what the model saw at each KV-cached decode step (left-padded batch, mixed lengths)."""
    prompts = [[5, 17, 23, 9, 41, 8], [3, 4, 60]]
    width, new = max(map(len, prompts)), 6
    input_ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, p in enumerate(prompts):
        input_ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    with torch.no_grad():
        out = any_model.generate(
            input_ids=input_ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
            pad_token_id=0, output_hidden_states=True, return_dict_in_generate=True,
        )  # fmt: skip
    generated = out.sequences[:, width:]
    n = any_model.config.num_hidden_layers
    sequences = [TokenSequence(tuple(p), tuple(generated[row].tolist())) for row, p in enumerate(prompts)]
    vectors = _vectors(list(range(n - 1)))  # the cached states' last entry is final-normed: non-last layers
    result = project_sequences(any_model, sequences, vectors, pad_id=0, batch_size=2)
    for row, seq in enumerate(sequences):
        with torch.no_grad():
            one_pass = any_model(torch.tensor([seq.ids]), output_hidden_states=True).hidden_states
        pad = width - len(prompts[row])
        # step 0 = prefill over the prompt; step k >= 1 = the token at prompt position len(prompt) + k - 1
        # (the last generated token is never fed back, so it has no cached state)
        for step in range(new):
            positions = range(len(prompts[row])) if step == 0 else [len(prompts[row]) + step - 1]
            for layer in range(n + 1):
                cached = out.hidden_states[step][layer][row]
                cached = cached[pad:] if step == 0 else cached
                torch.testing.assert_close(cached, one_pass[layer][0, list(positions)], rtol=1e-4, atol=1e-4)
            for column, vector in enumerate(vectors):
                cached = out.hidden_states[step][vector.layer + 1][row]
                cached = cached[pad:] if step == 0 else cached
                expected = cached @ vector.vector / vector.vector.norm()
                torch.testing.assert_close(result[row].scores[list(positions), column], expected, rtol=1e-4, atol=1e-4)


def test_cleaning_removes_exactly_the_massive_components(any_model):
    vectors = _vectors([0, 1])
    dims = {0: [3, 17], 1: [5]}
    raw = project_sequences(any_model, SEQUENCES, vectors, pad_id=0)
    clean = project_sequences(any_model, SEQUENCES, vectors, pad_id=0, clean_dims=dims)
    for seq, r, c in zip(SEQUENCES, raw.sequences, clean.sequences):
        with torch.no_grad():
            hidden = any_model(torch.tensor([seq.ids]), output_hidden_states=True).hidden_states
        for column, vector in enumerate(vectors):
            h, d, v = hidden[vector.layer + 1][0], dims[vector.layer], vector.vector
            removed = (h[:, d] * v[d]).sum(dim=-1) / v.norm()  # ||v|| of the original vector
            torch.testing.assert_close(r.scores[:, column] - c.scores[:, column], removed, rtol=1e-4, atol=1e-4)
            assert removed.abs().max() > 1e-2  # the check is not vacuous
        for layer in (0, 1):
            h = hidden[layer + 1][0]
            expected = torch.sqrt(h.norm(dim=-1) ** 2 - (h[:, dims[layer]] ** 2).sum(dim=-1))
            torch.testing.assert_close(c.norms[("residual", layer)], expected, rtol=1e-4, atol=1e-4)
            assert (c.norms[("residual", layer)] < r.norms[("residual", layer)]).all()
    # a layer without an entry is left alone
    only_zero = project_sequences(any_model, SEQUENCES, vectors, pad_id=0, clean_dims={0: [3]})
    torch.testing.assert_close(only_zero[0].scores[:, 3:], raw[0].scores[:, 3:])


def test_massive_components_switch_cleaning_on_and_off(any_model):
    """raw - massive[set] = projection cleaned of that set; cleaned + massive[set] = raw (batched, padded)."""
    vectors = _vectors([0, 1])
    sets = {"recommended": {0: [3, 17], 1: [3, 17]}, "top_k": {0: [5], 1: []}}
    raw = project_sequences(any_model, SEQUENCES, vectors, pad_id=0, batch_size=2, massive_sets=sets)
    for name, dims in sets.items():
        clean = project_sequences(any_model, SEQUENCES, vectors, pad_id=0, batch_size=2, clean_dims=dims,
                                  massive_sets=sets)
        for r, c in zip(raw.sequences, clean.sequences):
            torch.testing.assert_close(r.scores - r.massive[name], c.scores, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(c.scores + c.massive[name], r.scores, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(c.massive[name], r.massive[name])  # always from the raw h and v
    assert raw[0].massive["recommended"].abs().max() > 1e-2  # not vacuous
    assert (raw[0].massive["top_k"][:, 3:] == 0).all()  # layer 1 has no top_k dims: nothing to remove
    tokens = [[f"t{i}" for i in range(len(seq.ids))] for seq in SEQUENCES]
    table = to_long_rows(raw, ["p0", "p1", "p2"], SEQUENCES, tokens, vectors)
    assert list(table.columns) == list(Projections.to_schema().columns)
    Projections.validate(table)
    row = table[(table.prompt_id == "p1") & (table.token_index == 3) & (table.trait == "evil") & (table.layer == 0)]
    assert row.massive_recommended.item() == pytest.approx(float(raw[1].massive["recommended"][3, 1]))


def test_width_mismatch_is_a_clear_error():
    model = tiny_model("llama")
    bad = TraitVector("evil", "probe", "residual", 1, torch.ones(HIDDEN + 1))
    with pytest.raises(ValueError, match=r"trait 'evil'.*width 33.*site 'residual' at layer 1 has width 32"):
        project_sequences(model, SEQUENCES, _vectors([0]) + [bad], pad_id=0)
    k_width = model.model.layers[0].self_attn.k_proj.out_features  # 16: narrower than the residual
    with pytest.raises(ValueError, match=rf"trait 'k'.*width 32.*site 'k_proj' at layer 0 has width {k_width}"):
        project_sequences(model, SEQUENCES, [TraitVector("k", "probe", "k_proj", 0, torch.ones(HIDDEN))], pad_id=0)
    ok = project_sequences(model, SEQUENCES[:1], [TraitVector("k", "probe", "k_proj", 0, torch.ones(k_width))], pad_id=0)
    assert ok[0].scores.shape == (len(SEQUENCES[0].ids), 1)
    with pytest.raises(ValueError, match="out of range"):
        project_sequences(model, SEQUENCES, _vectors([0]), pad_id=0, clean_dims={0: [HIDDEN]})
    assert all(not m._forward_hooks for m in model.modules())


def test_long_rows_follow_the_schema(any_model):
    vectors = _vectors([0, 1], traits=("calm", "evil"))
    result = project_sequences(any_model, SEQUENCES, vectors, pad_id=0)
    tokens = [[f"t{i}" for i in range(len(seq.ids))] for seq in SEQUENCES]
    table = to_long_rows(result, ["p0", "p1", "p2"], SEQUENCES, tokens, vectors)
    optional = [name for name in Projections.to_schema().columns if name.startswith("massive_")]
    assert list(table.columns) + optional == list(Projections.to_schema().columns)  # no massive sets asked for
    Projections.validate(table)
    assert len(table) == sum(len(s.ids) for s in SEQUENCES) * len(vectors)
    p1 = table[table.prompt_id == "p1"]
    assert (p1[p1.token_index < 2].frame == "prompt").all() and (p1[p1.token_index >= 2].frame == "response").all()
    row = table[(table.prompt_id == "p0") & (table.token_index == 7) & (table.trait == "evil") & (table.layer == 1)]
    assert len(row) == 1
    assert row.token.item() == "t7"
    assert row.projection.item() == pytest.approx(float(result[0].scores[7, 3]))
    assert row.token_norm.item() == pytest.approx(float(result[0].norms[("residual", 1)][7]))
    with pytest.raises(ValueError, match="lengths differ"):
        to_long_rows(result, ["p0"], SEQUENCES, tokens, vectors)


@pytest.mark.parametrize("layers", [[0, 1, 2], [0], [1]])
def test_hooks_leave_no_trace(any_model, layers):
    ids = torch.tensor([SEQUENCES[0].ids])
    with torch.no_grad():
        before = any_model(ids, output_hidden_states=True)  # transformers installs its own recorder hooks here
    hooks_before = {name: dict(m._forward_hooks) for name, m in any_model.named_modules()}
    project_sequences(any_model, SEQUENCES, _vectors(layers), pad_id=0, clean_dims={layers[0]: [0]})
    assert {name: dict(m._forward_hooks) for name, m in any_model.named_modules()} == hooks_before
    with torch.no_grad():
        after = any_model(ids, output_hidden_states=True)
    assert torch.equal(before.logits, after.logits)
    assert all(torch.equal(a, b) for a, b in zip(before.hidden_states, after.hidden_states, strict=True))


def test_forward_stops_after_the_deepest_needed_block():
    model = tiny_model("llama")
    calls = {layer: 0 for layer in range(3)}
    handles = [
        model.model.layers[layer].register_forward_hook(lambda *_a, layer=layer: calls.__setitem__(layer, calls[layer] + 1))
        for layer in range(3)
    ]
    norm_calls = []
    handles.append(model.model.norm.register_forward_hook(lambda *_a: norm_calls.append(1)))
    try:
        result = project_sequences(model, SEQUENCES, _vectors([0]) + _vectors([1], site="attn_out"), pad_id=0, batch_size=2)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == {0: 2, 1: 2, 2: 0} and not norm_calls  # 2 batches; block 2 and the final norm never ran
    assert all(not m._forward_hooks for m in model.modules())
    truth = _block_outputs(model, list(SEQUENCES[0].ids), lambda layer: model.model.layers[layer].self_attn.o_proj)
    v = _vectors([1], site="attn_out")[0].vector
    torch.testing.assert_close(result[0].scores[:, 3], truth[1] @ v / v.norm(), rtol=1e-4, atol=1e-4)
