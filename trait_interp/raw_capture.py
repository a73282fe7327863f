"""Raw per-token activations, for debugging a projection: never pushed, so keep it opt-in."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from trait_interp.capture import TokenSequence
from trait_interp.hooks import output_hooks
from trait_interp.io import read_safetensors, write_with
from trait_interp.prompting import left_pad
from trait_interp.sites import input_device, resolve_site


@torch.no_grad()
def capture_tokens(
    model: nn.Module, sequences: Sequence[TokenSequence], site: str, layers: Sequence[int], pad_id: int,
    batch_size: int = 8,
) -> list[torch.Tensor]:
    """Per sequence ``[n_tokens, n_layers, width]`` float32: the site output at every real token."""
    modules = [resolve_site(model, site, layer).module for layer in layers]
    device = input_device(model)
    out: list[torch.Tensor] = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        input_ids, attention_mask, position_ids = left_pad([list(s.ids) for s in batch], pad_id)
        seen: list[torch.Tensor] = []
        with output_hooks([(m, lambda h: seen.append(h.float().cpu())) for m in modules]):
            model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                  position_ids=position_ids.to(device), use_cache=False, logits_to_keep=1)
        stacked = torch.stack(seen, dim=2)  # [batch, seq, n_layers, width]
        for row, seq in enumerate(batch):
            out.append(stacked[row, stacked.shape[1] - len(seq.ids) :].contiguous())
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
