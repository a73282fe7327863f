"""Pooled activations on disk: one safetensors file, one ``[n_examples, n_layers, width]`` per site."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from trait_interp.errors import UserInputError
from trait_interp.io import read_safetensors, write_with

_LAYERS_KEY = "__layers__"


@dataclass(frozen=True)
class StoredActivations:
    acts: dict[str, torch.Tensor]  # site -> [n_examples, n_layers, width] float32
    layers: tuple[int, ...]


def save_activations(path: Path, acts: dict[str, torch.Tensor], layers: tuple[int, ...]) -> None:
    tensors = {site: tensor.float().contiguous() for site, tensor in acts.items()}
    tensors[_LAYERS_KEY] = torch.tensor(layers, dtype=torch.int64)
    write_with(path, lambda tmp: save_file(tensors, str(tmp)))


def load_activations(path: Path) -> StoredActivations:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: activations not found; run capture_activations first")
    tensors = read_safetensors(path, path.parent, "capture_activations", (_LAYERS_KEY,))
    layers = tuple(int(x) for x in tensors.pop(_LAYERS_KEY).tolist())
    return StoredActivations(acts=tensors, layers=layers)
