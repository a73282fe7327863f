"""Pooled activation capture: one forward pass per batch, every (site, layer) at once.

The hooks pool inside the forward pass of ``core.forward`` (a weighted sum over the selected
tokens), so only ``[batch, width]`` per site and layer is kept, never the full ``[batch, seq, width]``
states.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from trait_interp.core.batching import BatchSize, compute_dtype
from trait_interp.core.forward import Batch, TokenSequence, forward_batches
from trait_interp.core.layers import normalize_layer
from trait_interp.core.positions import Position, select_span
from trait_interp.core.sites import num_layers, resolve_site


@dataclass(frozen=True)
class ExtractionSettings:
    """``extraction:`` in params: where and how activations are captured and split."""

    position: str = "response[:5]"
    sites: tuple[str, ...] = ("residual",)
    layers: str | int | tuple[int, ...] = "all"
    paired: bool = True
    val_fraction: float = 0.2
    split_seed: int = 0
    batch_size: BatchSize = 16
    # the stored copy of the pooled activations: the model's compute dtype (bf16 for a bf16 model,
    # half the bytes) or float32; pooling and every method compute in float32 either way
    store_dtype: Literal["model", "float32"] = "model"


def store_dtype(setting: str, model: nn.Module) -> torch.dtype:
    """``extraction.store_dtype``: ``model`` -> the model's compute dtype, ``float32`` -> float32."""
    return torch.float32 if setting == "float32" else compute_dtype(model)


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


def capture_pooled(
    model: nn.Module,
    sequences: Sequence[TokenSequence],
    position: Position,
    sites: Sequence[str],
    layers: Sequence[int],
    pad_id: int,
    batch_size: BatchSize = 16,
    progress: bool = False,
) -> PooledActivations:
    """Mean of each (site, layer) output over the ``position`` tokens of every sequence.

    Pooling reads only the span of positions some row selects (``hidden[:, lo:hi]``, in float32):
    never a float32 copy of the whole ``[batch, seq, width]`` output. The pooled rows stay on the
    device until the batch has run, then each site's ``[batch, n_layers, width]`` moves to the CPU
    in one transfer (not one per site and layer).
    """
    modules = [(site, layer, resolve_site(model, site, layer).module) for site in sites for layer in layers]
    chunks: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    counts: list[torch.Tensor] = []

    def attach(batch: Batch):
        weights, batch_counts = selection_weights(batch.sequences, position, batch.width)
        columns = weights.sum(dim=0).nonzero()
        lo, hi = (int(columns.min()), int(columns.max()) + 1) if len(columns) else (0, 0)
        span = weights[:, lo:hi].to(batch.input_ids.device)  # [batch, hi - lo]
        pooled: dict[tuple[str, int], torch.Tensor] = {}

        def pooler(key: tuple[str, int]):
            def fn(hidden: torch.Tensor) -> None:  # hidden: [batch, seq, width]
                selected = hidden[:, lo:hi].float()  # [batch, hi - lo, width]
                pooled[key] = torch.einsum("bs,bsw->bw", span.to(hidden.device), selected)

            return fn

        return [(module, pooler((s, l))) for s, l, module in modules], (pooled, batch_counts)

    deepest = max(normalize_layer(layer, num_layers(model)) for layer in layers)
    for batch, (pooled, batch_counts) in forward_batches(
        model, sequences, attach, deepest, batch_size, pad_id, desc="capture", progress=progress
    ):
        device = batch.input_ids.device
        for site in sites:  # [batch, n_layers, width] per site, one transfer
            chunks[site].append(torch.stack([pooled[(site, layer)].to(device) for layer in layers], dim=1).cpu())
        counts.append(batch_counts)
    acts = {site: torch.cat(chunks[site]) for site in sites}  # [n, L, w]
    return PooledActivations(acts=acts, layers=tuple(layers), n_selected=torch.cat(counts))
