"""Raw per-token activations, for debugging a projection: never pushed, so keep it opt-in."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from trait_interp.core.batching import BatchSize
from trait_interp.core.forward import Batch, TokenSequence, forward_batches
from trait_interp.core.io import read_safetensors, write_with
from trait_interp.core.layers import normalize_layer
from trait_interp.core.sites import num_layers, resolve_site


def capture_tokens(
    model: nn.Module, sequences: Sequence[TokenSequence], site: str, layers: Sequence[int], pad_id: int,
    batch_size: BatchSize = 8, progress: bool = False,
) -> list[torch.Tensor]:
    """Per sequence ``[n_tokens, n_layers, width]`` float32: the site output at every real token
    (``progress``: a bar on stderr, by sequence)."""
    modules = [resolve_site(model, site, layer).module for layer in layers]
    out: list[torch.Tensor] = []

    def attach(_batch: Batch):
        seen: list[torch.Tensor] = []
        return [(m, lambda h: seen.append(h.float().cpu())) for m in modules], seen

    deepest = max(normalize_layer(layer, num_layers(model)) for layer in layers)
    for batch, seen in forward_batches(model, sequences, attach, deepest, batch_size, pad_id, desc="capture raw",
                                       progress=progress):
        stacked = torch.stack(seen, dim=2)  # [batch, seq, n_layers, width]
        for row, seq in enumerate(batch.sequences):
            out.append(stacked[row, batch.padding(row) :].contiguous())
    return out


def save_token_activations(folder: Path, prompt_ids: Sequence[str], acts: Sequence[torch.Tensor],
                           layers: Sequence[int]) -> None:
    """One safetensors file per prompt: ``activations`` [n_tokens, n_layers, width] and ``layers``."""
    for prompt_id, tensor in zip(prompt_ids, acts):
        tensors = {"activations": tensor, "layers": torch.tensor(list(layers), dtype=torch.int64)}
        write_with(Path(folder) / f"{prompt_id}.safetensors", lambda tmp, t=tensors: save_file(t, str(tmp)))


def load_token_activations(path: Path) -> tuple[torch.Tensor, tuple[int, ...]]:
    """One prompt's raw file: ``activations`` [n_tokens, n_layers, width] and the layer indices.

    A truncated or corrupt file is a one-line error naming it (restore the prompt set's folder
    with ``dvc checkout`` on the machine that made it, or re-run capture_raw).
    """
    tensors = read_safetensors(Path(path), Path(path).parent, "capture_raw", ("activations", "layers"))
    return tensors["activations"], tuple(int(x) for x in tensors["layers"].tolist())
