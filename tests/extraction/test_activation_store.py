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
