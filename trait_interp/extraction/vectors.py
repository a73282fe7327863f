"""Self-describing vector files: ``[n_layers, hidden]`` unit vectors + a JSON sidecar.

One file per (variant, trait, position, site, method): ``<method>.safetensors`` holds ``vectors``
and ``layers`` (the layer index of each row); ``<method>.json`` holds the provenance and the
per-layer train metrics and mean activation norms (for coefficient scaling when steering).

Vectors are stored in the dtype the activations were stored in (``extraction.store_dtype``: the
model's compute dtype, bf16 on a real model, as the reference system stores its vectors; float32
when asked, and on the float32 toy). They are computed in float32 and read back as float32 unit
rows (a bf16 row is re-normalised after upcasting: rounding moves its norm by ~1e-3).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from trait_interp.core.errors import UserInputError
from trait_interp.core.io import read_safetensors, write_json, write_with

LAYER_CONVENTION = "layer i = output of decoder block i, 0-based (= HF hidden_states[i+1])"


@dataclass(frozen=True)
class VectorMetadata:
    trait: str
    variant: str
    model: str  # hub id or local path
    revision: str | None
    adapter: str | None
    site: str
    position: str
    method: str
    method_params: dict[str, Any]
    dataset_hash: str
    n_train: int
    n_val: int
    layers: list[int]
    train_metrics: dict[str, dict[str, float]]  # str(layer) -> {metric: value}
    activation_norms: dict[str, float]  # str(layer) -> mean ||h|| over train examples
    layer_convention: str = LAYER_CONVENTION
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VectorSet:
    vectors: torch.Tensor  # [n_layers, hidden] float32, unit rows
    metadata: VectorMetadata

    def layer(self, layer: int) -> torch.Tensor:
        try:
            row = self.metadata.layers.index(layer)
        except ValueError:
            raise UserInputError(
                f"no vector for layer {layer} ({self.metadata.trait}, {self.metadata.method}); "
                f"layers extracted: {self.metadata.layers}"
            ) from None
        return self.vectors[row]


def vector_paths(directory: Path, site: str, method: str) -> tuple[Path, Path]:
    base = Path(directory) / site / method
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def save_vectors(directory: Path, vector_set: VectorSet, dtype: torch.dtype = torch.float32) -> None:
    """Write the vectors as ``dtype`` (the stored activations' dtype) and the sidecar."""
    meta = vector_set.metadata
    tensor_path, json_path = vector_paths(directory, meta.site, meta.method)
    tensors = {
        "vectors": vector_set.vectors.float().to(dtype).contiguous(),
        "layers": torch.tensor(meta.layers, dtype=torch.int64),
    }
    # no safetensors header metadata: its key order is not stable across processes, which would
    # make identical vectors hash differently for DVC; the JSON sidecar carries the provenance
    write_with(tensor_path, lambda tmp: save_file(tensors, str(tmp)))
    write_json(json_path, asdict(meta))


def load_vectors(directory: Path, site: str, method: str) -> VectorSet:
    tensor_path, json_path = vector_paths(directory, site, method)
    if not tensor_path.is_file() or not json_path.is_file():
        raise UserInputError(f"{tensor_path}: no vectors for site '{site}' method '{method}'; extract them first (dvc repro)")
    tensors = read_safetensors(tensor_path, Path(directory), "extract_vectors", ("vectors", "layers"))
    try:
        meta = VectorMetadata(**json.loads(json_path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError) as err:
        raise UserInputError(
            f"{json_path}: corrupt vector sidecar ({type(err).__name__}: {err}); restore it with "
            f"`dvc checkout {directory}` or re-run extract_vectors"
        ) from None
    if tensors["layers"].tolist() != meta.layers:
        raise UserInputError(f"{tensor_path}: layers do not match its sidecar {json_path}")
    vectors = tensors["vectors"]
    if vectors.dtype != torch.float32:  # stored in the compute dtype: unit rows again in float32
        vectors = vectors.float()
        vectors = vectors / torch.linalg.vector_norm(vectors, dim=-1, keepdim=True).clamp_min(1e-12)
    return VectorSet(vectors=vectors, metadata=meta)
