"""Scoped forward hooks: a replacement takes effect, prepend runs first, nothing outlives the block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trait_interp.core.hooks import output_hooks, output_tensor


class Pair(nn.Module):
    """A module whose output is a tuple, as decoder blocks' outputs once were."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        return x * 2, "extra"


def test_a_returned_tensor_replaces_the_output_and_tuples_keep_their_tail():
    module = Pair()
    with output_hooks([(module, lambda h: h + 1)]):
        out = module(torch.ones(2))
    assert torch.equal(out[0], torch.full((2,), 3.0)) and out[1] == "extra"
    assert torch.equal(module(torch.ones(2))[0], torch.full((2,), 2.0))  # gone after the block


def test_prepend_runs_before_hooks_already_registered():
    module = nn.Identity()
    order: list[str] = []
    module.register_forward_hook(lambda m, i, o: order.append("existing"))
    with output_hooks([(module, lambda h: order.append("ours"))], prepend=True):
        module(torch.ones(1))
    assert order == ["ours", "existing"]


def test_hooks_are_removed_when_the_forward_raises():
    module = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="boom"):
        with output_hooks([(module, lambda h: (_ for _ in ()).throw(RuntimeError("boom")))]):
            module(torch.ones(2))
    assert not module._forward_hooks


def test_output_tensor_reads_tensors_and_tuples_only():
    t = torch.ones(1)
    assert output_tensor(t) is t and output_tensor((t, None)) is t
    with pytest.raises(TypeError, match="cannot read a tensor"):
        output_tensor({"a": t})
