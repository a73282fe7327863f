"""Batched greedy generation that returns the exact generated token ids."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from trait_interp.core.batching import BatchSize, resolve_batch_size, run_chunks
from trait_interp.core.prompting import left_pad
from trait_interp.core.sites import input_device


@dataclass(frozen=True)
class GenerationSettings:
    """``generation:`` in params. ``max_new_tokens: auto`` = what the position needs."""

    batch_size: BatchSize = 16
    max_new_tokens: int | Literal["auto"] = "auto"


def trim_response(ids: Sequence[int], eos_ids: Sequence[int]) -> list[int]:
    """Generated ids up to and including the first EOS (the rest is padding)."""
    out: list[int] = []
    for token in ids:
        out.append(int(token))
        if token in eos_ids:
            break
    return out


# (rows of the chunk, padded prompt width) -> what is active while that chunk generates (e.g. steering hooks)
ChunkContext = Callable[[Sequence[int], int], AbstractContextManager[object]]


@torch.no_grad()
def generate_greedy(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    pad_id: int,
    eos_ids: Sequence[int],
    batch_size: BatchSize = 16,
    progress: bool = False,
    context: ChunkContext | None = None,
) -> list[list[int]]:
    """Greedy continuations of each prompt (left-padded batches); exact ids, EOS kept.

    One ``generate`` call per chunk of ``batch_size`` prompts (``auto``: from free CUDA memory for
    the longest prompt plus ``max_new_tokens``; a chunk that runs out of CUDA memory runs again in
    halves). ``context(rows, width)``, when given, is entered around each chunk's call.
    """
    if max_new_tokens == 0 or not prompts:
        return [[] for _ in prompts]
    size = resolve_batch_size(model, batch_size, max(len(p) for p in prompts) + max_new_tokens)

    def run(rows: Sequence[int]) -> list[list[int]]:
        input_ids, attention_mask, _ = left_pad([prompts[i] for i in rows], pad_id)
        with context(rows, input_ids.shape[1]) if context is not None else nullcontext():
            return generate_padded(model, input_ids, attention_mask, max_new_tokens, pad_id, eos_ids)

    responses: list[list[int]] = []
    with tqdm(total=len(prompts), desc="generate", unit="seq", disable=not progress) as bar:
        for _rows, chunk in run_chunks(list(range(len(prompts))), size, run, what="generate", progress=bar):
            responses.extend(chunk)
    return responses


@torch.no_grad()
def generate_padded(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    pad_id: int,
    eos_ids: Sequence[int],
) -> list[list[int]]:
    """One greedy ``generate`` call on an already left-padded batch; trimmed ids per row."""
    device = input_device(model)
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_id,
        eos_token_id=list(eos_ids),
    )
    new_tokens = output[:, input_ids.shape[1] :].tolist()  # [batch, <= max_new_tokens]
    return [trim_response(row, eos_ids) for row in new_tokens]
