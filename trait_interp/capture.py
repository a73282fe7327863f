"""Pooled activation capture: one forward pass per batch, every (site, layer) at once.

The hooks pool inside the forward pass (a weighted sum over the selected tokens), so only
``[batch, width]`` per site and layer is kept, never the full ``[batch, seq, width]`` states.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from trait_interp.hooks import output_hooks
from trait_interp.positions import Position, select_span
from trait_interp.prompting import left_pad
from trait_interp.sites import input_device, resolve_site


@dataclass(frozen=True)
class ExtractionSettings:
    """``extraction:`` in params: where and how activations are captured and split."""

    position: str = "response[:5]"
    sites: tuple[str, ...] = ("residual",)
    layers: str | int | tuple[int, ...] = "all"
    paired: bool = True
    val_fraction: float = 0.2
    split_seed: int = 0
    batch_size: int = 16


@dataclass(frozen=True)
class TokenSequence:
    """Exact token ids of one example: the prompt and (possibly empty) response."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt_ids + self.response_ids


@dataclass(frozen=True)
class PooledActivations:
    acts: dict[str, torch.Tensor]  # site -> [n_examples, n_layers, width] float32
    layers: tuple[int, ...]
    n_selected: torch.Tensor  # [n_examples] int64: tokens pooled per example (0 = empty selection)


def selection_weights(
    sequences: Sequence[TokenSequence], position: Position, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooling weights for a left-padded batch: ``[batch, seq_len]`` and counts ``[batch]``."""
    weights = torch.zeros(len(sequences), seq_len)
    counts = torch.zeros(len(sequences), dtype=torch.long)
    for row, seq in enumerate(sequences):
        pad = seq_len - len(seq.ids)
        start, end = select_span(position, len(seq.prompt_ids), len(seq.ids))
        if end > start:
            weights[row, pad + start : pad + end] = 1.0 / (end - start)
            counts[row] = end - start
    return weights, counts


@torch.no_grad()
def capture_pooled(
    model: nn.Module,
    sequences: Sequence[TokenSequence],
    position: Position,
    sites: Sequence[str],
    layers: Sequence[int],
    pad_id: int,
    batch_size: int = 16,
    progress: bool = False,
) -> PooledActivations:
    """Mean of each (site, layer) output over the ``position`` tokens of every sequence."""
    modules = [(site, layer, resolve_site(model, site, layer).module) for site in sites for layer in layers]
    device = input_device(model)
    chunks: dict[tuple[str, int], list[torch.Tensor]] = {(s, l): [] for s, l, _ in modules}
    counts: list[torch.Tensor] = []
    starts = range(0, len(sequences), batch_size)
    for start in tqdm(starts, desc="capture", unit="batch", disable=not progress):
        batch = sequences[start : start + batch_size]
        input_ids, attention_mask, position_ids = left_pad([list(s.ids) for s in batch], pad_id)
        weights, batch_counts = selection_weights(batch, position, input_ids.shape[1])
        weights = weights.to(device)

        def pooler(key: tuple[str, int]):
            def fn(hidden: torch.Tensor) -> None:  # hidden: [batch, seq, width]
                chunks[key].append(torch.einsum("bs,bsw->bw", weights.to(hidden.device), hidden.float()).cpu())

            return fn

        with output_hooks([(module, pooler((s, l))) for s, l, module in modules]):
            model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                position_ids=position_ids.to(device),
                use_cache=False,
                logits_to_keep=1,  # only the hooks' outputs matter: skip the full-vocab head
            )
        counts.append(batch_counts)
    acts = {
        site: torch.stack([torch.cat(chunks[(site, layer)]) for layer in layers], dim=1)  # [n, L, w]
        for site in sites
    }
    return PooledActivations(acts=acts, layers=tuple(layers), n_selected=torch.cat(counts))
