"""The one batched forward loop over exact token ids, with hooks attached per batch.

Capture, projection, massive-dim calibration, activation norms and raw capture all read a model
the same way: left-pad a batch of exact prompt+response ids (position ids count real tokens only),
put it on the model's input device, attach that batch's hooks, run
``model(use_cache=False, logits_to_keep=1)`` and stop right after the deepest decoder block a hook
reads (the blocks above it, the final norm and the LM head would only cost time). Only what the
hooks keep leaves the loop.

``attach(batch)`` returns the batch's hooks and the state they write into; the loop yields
``(batch, state)`` after the pass. Hooks must write only into that state: on CUDA a batch that
runs out of memory is run again in halves (``core.batching.run_chunks``), each half with freshly
attached hooks, so a failed pass leaves nothing behind. ``batch_size`` is an int or ``auto``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from trait_interp.core.batching import BatchSize, resolve_batch_size, run_chunks
from trait_interp.core.hooks import OutputHook, output_hooks
from trait_interp.core.prompting import left_pad
from trait_interp.core.sites import decoder_layers, input_device

State = TypeVar("State")
Hooks = list[tuple[nn.Module, OutputHook]]


@dataclass(frozen=True)
class TokenSequence:
    """Exact token ids of one example: the prompt and (possibly empty) response."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt_ids + self.response_ids


def token_sequences(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]]) -> list[TokenSequence]:
    """One TokenSequence per row of two id columns (e.g. a responses table's ``prompt_ids``/``response_ids``)."""
    return [TokenSequence(tuple(int(t) for t in p), tuple(int(t) for t in r)) for p, r in zip(prompt_ids, response_ids)]


@dataclass(frozen=True)
class Batch:
    """One left-padded batch; row ``i`` is ``sequences[i]``, which is ``rows[i]`` of the sequences given."""

    rows: tuple[int, ...]
    sequences: tuple[TokenSequence, ...]
    input_ids: torch.Tensor  # [batch, width] long, on the model's input device
    attention_mask: torch.Tensor  # [batch, width]
    position_ids: torch.Tensor  # [batch, width]

    @property
    def width(self) -> int:
        return int(self.input_ids.shape[1])

    def padding(self, row: int) -> int:
        """Left padding of row ``row``: its first real token is at ``padding(row)``."""
        return self.width - len(self.sequences[row].ids)


class _StopForward(Exception):
    """Raised by the hook on the deepest needed block: every hooked site has run."""


def _raise_stop(_hidden: torch.Tensor) -> None:
    raise _StopForward


def stop_hooks(model: nn.Module, deepest_layer: int | None) -> Hooks:
    """A hook ending the pass after block ``deepest_layer`` (normalised), none when that is the last block.

    Every site of block L is a submodule of block L, so all hooks on it have run when it returns.
    """
    _, blocks = decoder_layers(model)
    if deepest_layer is None or deepest_layer >= len(blocks) - 1:
        return []
    return [(blocks[deepest_layer], _raise_stop)]


def pad_token_id(model: nn.Module) -> int:
    """The id that pads batches (masked out, so any id works): the config's pad id, else 0."""
    pad = getattr(model.config, "pad_token_id", None)
    return int(pad) if pad is not None else 0


@torch.no_grad()
def forward_batches(
    model: nn.Module,
    sequences: Sequence[TokenSequence],
    attach: Callable[[Batch], tuple[Hooks, State]],
    deepest_layer: int | None,
    batch_size: BatchSize = 16,
    pad_id: int | None = None,
    by_length: bool = False,
    desc: str = "forward",
    progress: bool = False,
) -> Iterator[tuple[Batch, State]]:
    """One hooked forward pass per batch of ``sequences``; yields ``(batch, state)`` after each pass.

    ``deepest_layer``: the deepest (normalised) block any hook reads; the pass stops after it (None:
    run every block). ``by_length`` batches sequences of similar length together (less padding);
    ``batch.rows`` says where each row came from. ``pad_id`` defaults to ``pad_token_id(model)``.
    """
    if not sequences:
        return
    pad = pad_token_id(model) if pad_id is None else pad_id
    device = input_device(model)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].ids)) if by_length else list(range(len(sequences)))
    size = resolve_batch_size(model, batch_size, max(len(s.ids) for s in sequences))
    stop = stop_hooks(model, deepest_layer)

    def run(rows: Sequence[int]) -> tuple[Batch, State]:
        batch_sequences = tuple(sequences[i] for i in rows)
        input_ids, attention_mask, position_ids = left_pad([list(s.ids) for s in batch_sequences], pad)
        batch = Batch(tuple(rows), batch_sequences, input_ids.to(device), attention_mask.to(device), position_ids.to(device))
        hooks, state = attach(batch)
        with output_hooks(list(hooks) + stop):  # the stop hook last: it runs after the others on its block
            try:
                model(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                    use_cache=False,
                    logits_to_keep=1,  # only the hooks' outputs matter: skip the full-vocab head
                )
            except _StopForward:
                pass
        return batch, state

    with tqdm(total=len(sequences), desc=desc, unit="seq", disable=not progress) as bar:
        for _rows, (batch, state) in run_chunks(order, size, run, what=desc, progress=bar):
            yield batch, state
