"""The one forward loop: stops after the deepest hooked block, keeps rows in place, retries OOM batches in halves."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_model
from trait_interp.core.forward import (
    TokenSequence,
    forward_batches,
    pad_token_id,
    stop_hooks,
    token_sequences,
)
from trait_interp.core.hooks import output_hooks
from trait_interp.core.positions import parse_position
from trait_interp.core.sites import decoder_layers, resolve_site
from trait_interp.extraction.capture import capture_pooled

SEQUENCES = [TokenSequence(tuple(range(1, 3 + 2 * i)), tuple(range(40, 40 + i))) for i in (3, 0, 2, 1)]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")  # 3 blocks


def _residual_recorder(model, layer):
    def attach(batch):
        seen = {}
        return [(resolve_site(model, "residual", layer).module, lambda h: seen.setdefault("h", h.clone()))], seen

    return attach


def test_hooked_outputs_equal_hidden_states_and_rows_come_back_in_place(model):
    for by_length in (False, True):
        got = {}
        for batch, seen in forward_batches(model, SEQUENCES, _residual_recorder(model, 1), 1, batch_size=3,
                                           by_length=by_length):
            for row, index in enumerate(batch.rows):
                got[index] = seen["h"][row, batch.padding(row):]
        assert sorted(got) == list(range(len(SEQUENCES)))
        for index, seq in enumerate(SEQUENCES):
            with torch.no_grad():
                truth = model(torch.tensor([seq.ids]), output_hidden_states=True).hidden_states[2][0]
            torch.testing.assert_close(got[index], truth, rtol=1e-4, atol=1e-5)


def test_by_length_batches_similar_lengths_together(model):
    order = [batch.rows for batch, _ in forward_batches(model, SEQUENCES, _residual_recorder(model, 0), 0,
                                                        batch_size=2, by_length=True)]
    lengths = [len(SEQUENCES[i].ids) for rows in order for i in rows]
    assert lengths == sorted(lengths) and [len(rows) for rows in order] == [2, 2]


def test_the_pass_stops_after_the_deepest_hooked_block(model):
    before = {name: len(m._forward_hooks) for name, m in model.named_modules()}  # transformers keeps some of its own
    _, blocks = decoder_layers(model)
    ran: list[int] = []
    counters = [(block, lambda h, i=i: ran.append(i)) for i, block in enumerate(blocks)]
    with output_hooks(counters):
        list(forward_batches(model, SEQUENCES[:1], _residual_recorder(model, 0), 0))
    assert ran == [0]  # blocks 1 and 2, the final norm and the head never ran
    ran.clear()
    with output_hooks(counters):
        list(forward_batches(model, SEQUENCES[:1], _residual_recorder(model, 2), 2))
    assert ran == [0, 1, 2] and stop_hooks(model, 2) == []  # the last block: nothing to stop
    assert {name: len(m._forward_hooks) for name, m in model.named_modules()} == before  # the stop hook went too


def test_hooks_are_attached_per_batch_and_removed_after(model):
    calls = []

    def attach(batch):
        calls.append(len(batch.sequences))
        return [], None

    assert len(list(forward_batches(model, SEQUENCES, attach, 0, batch_size=3))) == 2
    assert calls == [3, 1] and list(forward_batches(model, [], attach, 0)) == []


def test_token_sequences_and_pad_id(model):
    seqs = token_sequences([[1, 2], [3]], [[4], []])
    assert seqs == [TokenSequence((1, 2), (4,)), TokenSequence((3,), ())] and seqs[0].ids == (1, 2, 4)
    model.config.pad_token_id = None
    assert pad_token_id(model) == 0
    model.config.pad_token_id = 7
    assert pad_token_id(model) == 7


def test_forward_loop_retries_an_oom_batch_in_halves_with_the_same_results(model, monkeypatch) -> None:
    """The one forward loop: a batch that runs out of memory is captured again in halves, nothing doubled."""
    sequences = [TokenSequence(tuple(range(1, 4 + i)), (5, 6)) for i in range(6)]
    position = parse_position("all[:]")
    expected = capture_pooled(model, sequences, position, ["residual"], [0, 2], pad_id=0, batch_size=1)
    real_forward = type(model).forward
    sizes: list[int] = []

    def forward(self, *args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", forward)
    got = capture_pooled(model, sequences, position, ["residual"], [0, 2], pad_id=0, batch_size=6)
    assert sizes == [6, 3, 2, 1, 3, 2, 1]
    assert torch.allclose(got.acts["residual"], expected.acts["residual"], atol=1e-6)
    assert torch.equal(got.n_selected, expected.n_selected)
