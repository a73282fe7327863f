"""Forward hooks that exist only inside a ``with`` block.

Every hook registered here is removed in ``finally``, so nothing stays attached to a model after
the block, also when the forward pass raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

OutputHook = Callable[[torch.Tensor], torch.Tensor | None]


def output_tensor(output: object) -> torch.Tensor:
    """The hidden-state tensor of a module output (first element when it is a tuple)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot read a tensor from module output of type {type(output).__name__}")


def _replace_output(output: object, tensor: torch.Tensor) -> object:
    if isinstance(output, torch.Tensor):
        return tensor
    return (tensor, *output[1:])  # type: ignore[index]


@contextmanager
def output_hooks(hooks: Sequence[tuple[nn.Module, OutputHook]], prepend: bool = False) -> Iterator[None]:
    """Register ``fn(tensor)`` on each module's output; a non-None return replaces the output.

    ``prepend`` runs the hook before hooks already on the module. Hooks that change outputs
    (steering) need it: transformers 5 records ``output_hidden_states`` with forward hooks of its
    own, added on first use and never removed, which would otherwise see the unsteered output.
    """
    handles = []

    def wrap(fn: OutputHook) -> Callable[[nn.Module, object, object], object]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> object:
            replacement = fn(output_tensor(output))
            return None if replacement is None else _replace_output(output, replacement)

        return hook

    try:
        for module, fn in hooks:
            handles.append(module.register_forward_hook(wrap(fn), prepend=prepend))
        yield
    finally:
        for handle in handles:
            handle.remove()
