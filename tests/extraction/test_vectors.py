"""Vector files: [n_layers, hidden] float32 + a JSON sidecar; a row per layer, looked up by layer index."""

from __future__ import annotations

import json

import pytest
import torch

from trait_interp.core.errors import UserInputError
from trait_interp.extraction.vectors import (
    LAYER_CONVENTION,
    VectorMetadata,
    VectorSet,
    load_vectors,
    save_vectors,
)


def _metadata(layers: list[int]) -> VectorMetadata:
    return VectorMetadata(
        trait="tone/formality", variant="toy-base", model="m", revision="abc", adapter=None, site="residual",
        position="response[:5]", method="probe", method_params={"probe_c": 1.0}, dataset_hash="h", n_train=8,
        n_val=2, layers=layers, train_metrics={str(layer): {"train_accuracy": 1.0} for layer in layers},
        activation_norms={str(layer): 3.0 for layer in layers},
    )


def test_round_trip_and_layer_lookup(tmp_path):
    vectors = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    save_vectors(tmp_path, VectorSet(vectors, _metadata([1, 3, 5])))
    loaded = load_vectors(tmp_path, "residual", "probe")
    assert torch.equal(loaded.vectors, vectors) and loaded.metadata == _metadata([1, 3, 5])
    assert torch.equal(loaded.layer(3), vectors[1])
    assert json.loads((tmp_path / "residual" / "probe.json").read_text())["layer_convention"] == LAYER_CONVENTION
    with pytest.raises(UserInputError, match=r"no vector for layer 2 .*layers extracted: \[1, 3, 5\]"):
        loaded.layer(2)


def test_missing_file_and_mismatched_sidecar_are_clear_errors(tmp_path):
    with pytest.raises(UserInputError, match="no vectors for site 'residual' method 'pca'"):
        load_vectors(tmp_path, "residual", "pca")
    save_vectors(tmp_path, VectorSet(torch.zeros(2, 4), _metadata([0, 1])))
    sidecar = tmp_path / "residual" / "probe.json"
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "layers": [0, 2]}))
    with pytest.raises(UserInputError, match="layers do not match its sidecar"):
        load_vectors(tmp_path, "residual", "probe")


def test_vectors_stored_in_the_activations_dtype_read_back_as_float32_unit_rows(tmp_path):
    """bf16 activations (a real model's compute dtype) give bf16 vector files: half the bytes of
    float32, read back as float32 unit rows within bf16 rounding of the computed ones."""
    from safetensors.torch import load_file

    vectors = torch.nn.functional.normalize(torch.randn(3, 512, generator=torch.Generator().manual_seed(0)), dim=-1)
    save_vectors(tmp_path / "f32", VectorSet(vectors, _metadata([1, 3, 5])))
    save_vectors(tmp_path / "bf16", VectorSet(vectors, _metadata([1, 3, 5])), dtype=torch.bfloat16)
    stored = load_file(str(tmp_path / "bf16/residual/probe.safetensors"))["vectors"]
    assert stored.dtype == torch.bfloat16
    sizes = {name: (tmp_path / name / "residual/probe.safetensors").stat().st_size for name in ("f32", "bf16")}
    assert sizes["bf16"] < 0.55 * sizes["f32"]
    loaded = load_vectors(tmp_path / "bf16", "residual", "probe").vectors
    assert loaded.dtype == torch.float32
    torch.testing.assert_close(loaded.norm(dim=-1), torch.ones(3), rtol=0, atol=1e-6)
    assert torch.nn.functional.cosine_similarity(loaded, vectors, dim=-1).min() > 0.9999
    assert not torch.equal(loaded, vectors)  # rounded: the bf16 file is what was read
