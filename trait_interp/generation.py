"""Batched greedy generation that returns the exact generated token ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from trait_interp.prompting import left_pad
from trait_interp.sites import input_device


@dataclass(frozen=True)
class GenerationSettings:
    """``generation:`` in params. ``max_new_tokens: auto`` = what the position needs."""

    batch_size: int = 16
    max_new_tokens: int | Literal["auto"] = "auto"


def trim_response(ids: Sequence[int], eos_ids: Sequence[int]) -> list[int]:
    """Generated ids up to and including the first EOS (the rest is padding)."""
    out: list[int] = []
    for token in ids:
        out.append(int(token))
        if token in eos_ids:
            break
    return out


@torch.no_grad()
def generate_greedy(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    pad_id: int,
    eos_ids: Sequence[int],
    batch_size: int = 16,
    progress: bool = False,
) -> list[list[int]]:
    """Greedy continuations of each prompt (left-padded batches); exact ids, EOS kept."""
    if max_new_tokens == 0:
        return [[] for _ in prompts]
    responses: list[list[int]] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch", disable=not progress):
        input_ids, attention_mask, _ = left_pad(prompts[start : start + batch_size], pad_id)
        responses.extend(generate_padded(model, input_ids, attention_mask, max_new_tokens, pad_id, eos_ids))
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
