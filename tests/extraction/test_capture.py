"""Capture equals independent truth: HF hidden_states and plain forward hooks on the modules."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_model
from trait_interp.core.forward import TokenSequence
from trait_interp.core.positions import parse_position
from trait_interp.core.sites import SITES, resolve_site
from trait_interp.extraction.capture import capture_pooled, selection_weights

SEQ = TokenSequence(prompt_ids=(5, 17, 23, 9, 41, 8), response_ids=(12, 33, 7, 60))


def test_residual_equals_hidden_states_exactly(any_model):
    ids = torch.tensor([SEQ.ids])
    with torch.no_grad():
        hidden = any_model(ids, output_hidden_states=True).hidden_states  # n_layers+1 x [1, seq, hidden]
    n_layers = any_model.config.num_hidden_layers
    for token in range(len(SEQ.ids)):
        pooled = capture_pooled(any_model, [SEQ], parse_position(f"all[{token}]"), ["residual"], list(range(n_layers)), 0)
        acts = pooled.acts["residual"][0]  # [n_layers, hidden]
        for layer in range(n_layers - 1):
            assert torch.equal(acts[layer], hidden[layer + 1][0, token]), (layer, token)
        # the last hidden_states entry has the final norm applied; the block output does not
        normed = any_model.model.norm(acts[n_layers - 1][None, None])[0, 0]
        assert torch.equal(normed, hidden[n_layers][0, token])


def _module_outputs(model, ids):
    """Every site's output at every layer, read by forward hooks written here (not ours)."""
    outputs, handles = {}, []
    for site in SITES:
        for layer in range(model.config.num_hidden_layers):
            module = resolve_site(model, site, layer).module

            def hook(_m, _i, out, key=(site, layer)):
                outputs[key] = (out[0] if isinstance(out, tuple) else out).detach().clone()

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.tensor([SEQ.ids]))
    finally:
        for h in handles:
            h.remove()
    return outputs


def test_every_site_equals_module_output(any_model):
    n_layers = any_model.config.num_hidden_layers
    truth = _module_outputs(any_model, SEQ.ids)
    pooled = capture_pooled(any_model, [SEQ], parse_position("all[3]"), list(SITES), list(range(n_layers)), 0)
    for site in SITES:
        for layer in range(n_layers):
            assert torch.equal(pooled.acts[site][0, layer], truth[(site, layer)][0, 3]), (site, layer)



def test_response_mean_pooling_matches_manual_mean():
    model = tiny_model("llama")
    with torch.no_grad():
        hidden = model(torch.tensor([SEQ.ids]), output_hidden_states=True).hidden_states
    pooled = capture_pooled(model, [SEQ], parse_position("response[:3]"), ["residual"], [0, 1], 0)
    start = len(SEQ.prompt_ids)
    for layer in (0, 1):
        expected = hidden[layer + 1][0, start : start + 3].mean(dim=0)
        torch.testing.assert_close(pooled.acts["residual"][0, layer], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("position", ["response[:5]", "prompt[-1]", "response[-1]", "all[2:-2]", "response[:]"])
def test_left_padded_batch_equals_each_alone(any_model, position):
    sequences = [
        SEQ,
        TokenSequence((3, 4), (50, 51, 52)),
        TokenSequence((9, 8, 7, 6, 5, 4, 3, 2, 1, 11, 12), (13,)),
    ]
    pos = parse_position(position)
    layers = list(range(any_model.config.num_hidden_layers))
    batch = capture_pooled(any_model, sequences, pos, ["residual", "attn_out", "v_proj"], layers, pad_id=0, batch_size=3)
    for row, seq in enumerate(sequences):
        alone = capture_pooled(any_model, [seq], pos, ["residual", "attn_out", "v_proj"], layers, pad_id=0)
        for site in batch.acts:
            torch.testing.assert_close(batch.acts[site][row], alone.acts[site][0], rtol=1e-4, atol=1e-5)
        assert batch.n_selected[row] == alone.n_selected[0]


def test_empty_selection_is_counted_not_dropped():
    seqs = [TokenSequence((1, 2, 3), ()), TokenSequence((1, 2), (4, 5))]
    weights, counts = selection_weights(seqs, parse_position("response[:5]"), 4)
    assert counts.tolist() == [0, 2]
    assert weights[0].sum() == 0 and weights[1, 2:].tolist() == [0.5, 0.5]


def test_hooks_leave_no_trace(any_model):
    ids = torch.tensor([SEQ.ids])
    with torch.no_grad():
        before = any_model(ids).logits
    capture_pooled(any_model, [SEQ], parse_position("all[:]"), list(SITES), [0, 1, 2], 0)
    with torch.no_grad():
        after = any_model(ids).logits
    assert torch.equal(before, after)
    assert all(not m._forward_hooks for m in any_model.modules())


def test_hooks_removed_when_forward_raises():
    model = tiny_model("llama")
    bad = TokenSequence((1, 2, 10_000), (3,))  # out-of-vocab id -> embedding raises
    with pytest.raises(IndexError):
        capture_pooled(model, [bad], parse_position("all[:]"), ["residual", "k_proj"], [0, 1], 0)
    assert all(not m._forward_hooks for m in model.modules())


