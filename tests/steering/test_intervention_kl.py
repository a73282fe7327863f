"""The KL side effect against a hand computation: each sequence alone, unpadded, logits from plain forward passes."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import tiny_model
from trait_interp.core.forward import TokenSequence
from trait_interp.steering.gating import Gate, RowIntervention, chunk_context
from trait_interp.steering.intervention_kl import next_token_kl, prompt_aligned
from trait_interp.steering.interventions import SteeringTerm, steering

SEQUENCES = [
    TokenSequence((5, 17, 23, 9, 41, 8), (12, 33, 7, 60)),
    TokenSequence((3, 4), (50, 51, 52)),
    TokenSequence((9, 8, 7, 6, 5, 4, 3, 2), (13,)),
    TokenSequence((70, 71), ()),
]
PAD = 0


def _unit(width: int, seed: int) -> torch.Tensor:
    v = torch.randn(width, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def _by_hand(model, seq: TokenSequence, terms) -> float | None:
    """Mean over response tokens of sum_x p_s(x) log(p_s(x) / p_u(x)), one unpadded sequence at a time."""
    if not seq.response_ids:
        return None
    ids = torch.tensor([list(seq.ids)])
    with torch.no_grad():
        plain = torch.log_softmax(model(ids).logits[0].double(), -1)
        with steering(model, "residual", terms):
            steered = torch.log_softmax(model(ids).logits[0].double(), -1)
    n = len(seq.prompt_ids)
    rows = range(n - 1, n - 1 + len(seq.response_ids))  # the positions that predict the response tokens
    return float(sum((plain[r].exp() * (plain[r] - steered[r])).sum() for r in rows) / len(seq.response_ids))


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_kl_equals_the_hand_computation_and_batches_change_nothing(arch):
    model = tiny_model(arch)
    terms = [SteeringTerm(1, _unit(model.config.hidden_size, 1), 3.0)]
    rows = [RowIntervention(tuple(terms))] * len(SEQUENCES)
    context = chunk_context(model, "residual", rows, [s.prompt_ids for s in SEQUENCES])
    for batch_size in (4, 1):
        got = next_token_kl(model, SEQUENCES, context, PAD, batch_size)
        for seq, value in zip(SEQUENCES, got):
            expected = _by_hand(model, seq, terms)
            if expected is None:
                assert value is None
            else:
                assert value == pytest.approx(expected, rel=1e-4, abs=1e-6) and value > 1e-4


def test_a_gate_that_never_fires_has_no_side_effect():
    model = tiny_model("qwen2")
    width = model.config.hidden_size
    closed = RowIntervention((SteeringTerm(1, _unit(width, 2), 5.0),), Gate(0, _unit(width, 3), math.inf))
    context = chunk_context(model, "residual", [closed] * len(SEQUENCES), [s.prompt_ids for s in SEQUENCES])
    assert next_token_kl(model, SEQUENCES, context, PAD, 3) == [0.0, 0.0, 0.0, None]


def test_prompt_aligned_layout_puts_every_prompt_end_at_one_column():
    ids, mask, positions, width = prompt_aligned(SEQUENCES[:2], PAD)
    assert width == 6 and ids.shape == (2, 10)
    assert ids[1, 4:6].tolist() == [3, 4] and ids[1, 6:9].tolist() == [50, 51, 52] and mask[1].tolist() == [0] * 4 + [1] * 5 + [0]
    assert positions[1, 4:9].tolist() == [0, 1, 2, 3, 4]
