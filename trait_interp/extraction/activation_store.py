"""Pooled activations on disk: one folder per trait and model.

``activations.safetensors`` holds one ``[n_examples, n_layers, width]`` tensor per site, stored in
the dtype the capture stage chose (``extraction.store_dtype``: the model's compute dtype, e.g. bf16,
or float32) and read back as float32, so every method computes in float32 whatever was stored,
``examples.csv`` one row per example (split, pair, polarity, tokens pooled; ``schemas.examples``)
and ``meta.json`` the ``ActivationsMeta`` record, validated on write and on read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from trait_interp.core.errors import UserInputError
from trait_interp.core.io import read_safetensors, write_with
from trait_interp.core.records import read_record, write_record

ACTIVATIONS_FILE = "activations.safetensors"
EXAMPLES_FILE = "examples.csv"
META_FILE = "meta.json"

_LAYERS_KEY = "__layers__"


@dataclass(frozen=True)
class StoredActivations:
    acts: dict[str, torch.Tensor]  # site -> [n_examples, n_layers, width] float32 (upcast from the stored dtype)
    layers: tuple[int, ...]
    stored_dtype: dict[str, torch.dtype]  # site -> the dtype on disk


def save_activations(
    path: Path, acts: dict[str, torch.Tensor], layers: tuple[int, ...], dtype: torch.dtype = torch.float32
) -> None:
    """Write the pooled activations (computed in float32) as ``dtype`` (``extraction.store_dtype``)."""
    tensors = {site: tensor.to(dtype).contiguous() for site, tensor in acts.items()}
    tensors[_LAYERS_KEY] = torch.tensor(layers, dtype=torch.int64)
    write_with(path, lambda tmp: save_file(tensors, str(tmp)))


def load_activations(path: Path) -> StoredActivations:
    """The stored activations, upcast to float32 (bf16 -> float32 is exact)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: activations not found; capture them first (dvc repro)")
    tensors = read_safetensors(path, path.parent, "capture_activations", (_LAYERS_KEY,))
    layers = tuple(int(x) for x in tensors.pop(_LAYERS_KEY).tolist())
    stored = {site: tensor.dtype for site, tensor in tensors.items()}
    return StoredActivations(acts={site: t.float() for site, t in tensors.items()}, layers=layers, stored_dtype=stored)


@dataclass(frozen=True)
class ActivationsMeta:
    """Where the activations came from and how they were split (field order = the file's)."""

    trait: str
    variant: str  # the extraction model's key in params
    model: str  # hub id or local path
    revision: str | None
    adapter: str | None
    position: str
    sites: tuple[str, ...]
    layers: tuple[int, ...]
    paired: bool
    val_fraction: float
    split_seed: int
    dataset_hash: str  # sha256 of the scenarios the responses came from
    n_examples: int  # examples captured (after vetting)
    n_generated: int  # responses generated (before vetting)
    vetting: str | None  # the vetting table used, if any
    n_empty_selection: int  # examples whose position selected no token (excluded)


def write_meta(path: Path, meta: ActivationsMeta) -> None:
    write_record(path, meta)


def read_meta(path: Path) -> ActivationsMeta:
    return read_record(ActivationsMeta, path, "no activations metadata; capture them first (dvc repro)",
                       "capture this trait's activations again")
