"""The activations folder: tensors round-trip, and meta.json is a typed record checked on write and read."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch

from trait_interp.core.errors import UserInputError
from trait_interp.extraction.activation_store import (
    ActivationsMeta,
    load_activations,
    read_meta,
    save_activations,
    write_meta,
)

META = ActivationsMeta(
    trait="behavior/refusal", variant="toy-base", model="experiments/toy/models/base", revision=None, adapter=None,
    position="response[:5]", sites=("residual", "attn_out"), layers=(0, 1, 2), paired=True, val_fraction=0.2,
    split_seed=0, dataset_hash="ab" * 32, n_examples=48, n_generated=80, vetting="vetting.jsonl", n_empty_selection=0,
)


def test_meta_round_trip_keeps_every_field_in_order(tmp_path):
    path = tmp_path / "meta.json"
    write_meta(path, META)
    assert read_meta(path) == META
    assert list(json.loads(path.read_text())) == list(asdict(META))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("dataset_hash"), "missing required key 'dataset_hash'"),
        (lambda d: d.update(extra=1), "unknown key"),
        (lambda d: d.update(n_examples="48"), "n_examples: expected an integer"),
        (lambda d: d.update(layers=[0, "x"]), r"layers\[1\]: expected an integer"),
    ],
)
def test_a_damaged_meta_is_a_one_line_error_naming_the_file(tmp_path, change, message):
    path = tmp_path / "meta.json"
    data = json.loads(json.dumps(asdict(META)))
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match=message) as err:
        read_meta(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_bad_record_is_not_written(tmp_path):
    with pytest.raises(UserInputError, match="paired: expected true/false"):
        write_meta(tmp_path / "meta.json", replace(META, paired="yes"))  # type: ignore[arg-type]
    assert not (tmp_path / "meta.json").exists()


def test_activations_round_trip(tmp_path):
    acts = {"residual": torch.randn(4, 3, 8), "k_proj": torch.randn(4, 3, 2)}
    save_activations(tmp_path / "a.safetensors", acts, (0, 2, 5))
    stored = load_activations(tmp_path / "a.safetensors")
    assert stored.layers == (0, 2, 5) and set(stored.acts) == set(acts)
    assert all(torch.equal(stored.acts[k], acts[k]) for k in acts)


# --- the stored dtype (extraction.store_dtype) ---------------------------------------------------------

def _dtype_on_disk(path) -> dict[str, str]:
    """Each tensor's dtype as the safetensors header records it (read here, not through our loader)."""
    header = path.read_bytes()
    size = int.from_bytes(header[:8], "little")
    return {k: v["dtype"] for k, v in json.loads(header[8:8 + size]).items() if k != "__metadata__"}


def _bf16_capture():
    from tests.conftest import tiny_model
    from trait_interp.core.forward import TokenSequence
    from trait_interp.core.positions import parse_position
    from trait_interp.extraction.capture import capture_pooled

    model = tiny_model("llama").to(torch.bfloat16)
    sequences = [TokenSequence(prompt_ids=(5, 17, 23, 9), response_ids=(12, 33, 7, 60, 4)),
                 TokenSequence(prompt_ids=(8, 41), response_ids=(3, 3, 19))]
    pooled = capture_pooled(model, sequences, parse_position("response[:5]"), ["residual", "k_proj"], [0, 1, 2], 0)
    return model, pooled


def test_a_bf16_model_stores_bf16_and_float32_when_asked(tmp_path):
    from trait_interp.extraction.capture import store_dtype

    model, pooled = _bf16_capture()
    assert all(t.dtype == torch.float32 for t in pooled.acts.values())  # pooled in float32 whatever the model
    assert store_dtype("model", model) == torch.bfloat16 and store_dtype("float32", model) == torch.float32
    for setting, on_disk in (("model", "BF16"), ("float32", "F32")):
        path = tmp_path / f"{setting}.safetensors"
        save_activations(path, pooled.acts, pooled.layers, store_dtype(setting, model))
        assert _dtype_on_disk(path) == {"residual": on_disk, "k_proj": on_disk, "__layers__": "I64"}
        stored = load_activations(path)
        assert stored.stored_dtype == {"residual": getattr(torch, {"BF16": "bfloat16", "F32": "float32"}[on_disk]),
                                       "k_proj": stored.stored_dtype["residual"]}
        for site, exact in pooled.acts.items():
            assert stored.acts[site].dtype == torch.float32  # read back upcast
            expected = exact if setting == "float32" else exact.to(torch.bfloat16).float()
            assert torch.equal(stored.acts[site], expected), (setting, site)
    model_bytes, float_bytes = ((tmp_path / f"{s}.safetensors").stat().st_size for s in ("model", "float32"))
    assert model_bytes < 0.6 * float_bytes


def test_a_float32_model_stores_the_same_bytes_as_before(tmp_path):
    """The toy world is float32: its stored activations are byte for byte what the float32-only store wrote."""
    from safetensors.torch import save_file

    from tests.conftest import tiny_model
    from trait_interp.extraction.capture import store_dtype

    acts = {"residual": torch.randn(4, 3, 8), "attn_out": torch.randn(4, 3, 8)}
    save_activations(tmp_path / "new.safetensors", acts, (0, 1, 2), store_dtype("model", tiny_model("llama")))
    old = {site: t.float().contiguous() for site, t in acts.items()} | {"__layers__": torch.tensor((0, 1, 2))}
    save_file(old, str(tmp_path / "old.safetensors"))  # what save_activations wrote before store_dtype
    assert (tmp_path / "new.safetensors").read_bytes() == (tmp_path / "old.safetensors").read_bytes()


def test_vectors_and_evaluation_from_bf16_storage_compute_in_float32(tmp_path):
    """The methods and the evaluation see float32 inputs (the upcast bf16 values): float32 vectors, and
    exactly what they give on those values upcast by hand."""
    from trait_interp.extraction.evaluation import evaluate_layers
    from trait_interp.extraction.extract import ClassSets, extract_layers
    from trait_interp.extraction.methods import METHODS, MethodSettings

    gen = torch.Generator().manual_seed(0)
    n, layers = 24, (0, 1)
    acts = torch.randn(n, len(layers), 16, generator=gen) * 3
    acts[::2] += 1.5  # even rows positive, shifted: a direction to find
    path = tmp_path / "a.safetensors"
    save_activations(path, {"residual": acts}, layers, torch.bfloat16)
    stored = load_activations(path).acts["residual"]
    by_hand = acts.to(torch.bfloat16).float()
    assert stored.dtype == torch.float32 and torch.equal(stored, by_hand)

    def sets(x, rows):
        return ClassSets(x[rows][::2], x[rows][1::2])

    train_rows, val_rows = torch.arange(16), torch.arange(16, n)
    for method in METHODS:
        vectors, _ = extract_layers(sets(stored, train_rows), method, MethodSettings(), layers)
        expected, _ = extract_layers(sets(by_hand, train_rows), method, MethodSettings(), layers)
        assert vectors.dtype == torch.float32 and torch.equal(vectors, expected), method
        scores = evaluate_layers(sets(stored, train_rows), sets(stored, val_rows), vectors, layers)
        assert scores == evaluate_layers(sets(by_hand, train_rows), sets(by_hand, val_rows), expected, layers)
