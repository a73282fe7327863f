"""Massive-dim calibration: planted dims are found; response tokens only; recommended-set logic."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import tiny_model
from trait_interp.core.forward import TokenSequence
from trait_interp.monitoring.massive_dims import (
    Calibration,
    calibrate,
    clean_dims_for,
    recommended_dims,
)
from trait_interp.monitoring.projection import TraitVector, project_sequences

SEQUENCES = [
    TokenSequence(prompt_ids=(5, 17, 23, 9, 41, 8), response_ids=(12, 33, 7, 60)),
    TokenSequence(prompt_ids=(3, 4), response_ids=(50, 51, 52)),
    TokenSequence(prompt_ids=(9, 8, 7, 6, 5, 4, 3, 2, 1, 11, 12), response_ids=(13,)),
    TokenSequence(prompt_ids=(20, 21, 22), response_ids=()),
]


def _planted(arch: str):
    """A model whose embeddings carry huge values in dims 7 (+) and 19 (-): every layer's residual keeps them."""
    model = tiny_model(arch)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 7] += 60.0
        model.model.embed_tokens.weight[:, 19] -= 40.0
    return model


@pytest.mark.parametrize("arch", ["llama", "gemma2", "qwen2"])
def test_calibration_recovers_planted_dims(arch):
    model = _planted(arch)
    cal = calibrate(model, SEQUENCES, layers=[0, 1, 2], pad_id=0, top_k=5, batch_size=3)
    assert cal.layers == (0, 1, 2) and cal.n_tokens == 4 + 3 + 1 and cal.n_sequences == 4
    for layer in cal.layers:
        assert set(cal.top_dims_by_layer[layer][:2]) == {7, 19}, cal.top_dims_by_layer
        assert len(cal.top_dims_by_layer[layer]) == 5
    assert all(r > 5 for r in cal.dim_magnitude_by_layer[7] + cal.dim_magnitude_by_layer[19])
    assert {7, 19} <= set(recommended_dims(cal, min_layers=3))
    assert cal.recommended == recommended_dims(cal, 3)
    # an unplanted model does not put 7 and 19 on top
    plain = calibrate(tiny_model(arch), SEQUENCES, layers=[0, 1, 2], pad_id=0)
    assert not all(set(plain.top_dims_by_layer[layer][:2]) == {7, 19} for layer in plain.layers)


def test_dim_massive_at_one_layer_only_is_not_recommended():
    model = _planted("llama")

    def plant(_module, _inputs, output):  # dim 11 huge at the last block's output only
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        hidden[..., 11] += 500.0
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = model.model.layers[2].register_forward_hook(plant)
    try:
        cal = calibrate(model, SEQUENCES, layers=[0, 1, 2], pad_id=0, top_k=3)
    finally:
        handle.remove()
    assert cal.top_dims_by_layer[2][0] == 11
    assert 11 not in cal.top_dims_by_layer[0] and 11 not in cal.top_dims_by_layer[1]
    assert 11 not in recommended_dims(cal, min_layers=3) and 7 in recommended_dims(cal, min_layers=3)
    assert 11 in recommended_dims(cal, min_layers=1)
    assert cal.dim_magnitude_by_layer[11][2] > 10 > cal.dim_magnitude_by_layer[11][0]
    assert clean_dims_for(cal, "top_k")[2] == sorted(cal.top_dims_by_layer[2])
    assert clean_dims_for(cal, "recommended") == {layer: cal.recommended for layer in (0, 1, 2)}


def test_calibration_averages_response_tokens_only(any_model):
    cal = calibrate(any_model, SEQUENCES, layers=[0, 1], pad_id=0, top_k=4, batch_size=2)
    states, all_states = {0: [], 1: []}, {0: [], 1: []}
    for seq in SEQUENCES:
        with torch.no_grad():
            hidden = any_model(torch.tensor([seq.ids]), output_hidden_states=True).hidden_states
        for layer in (0, 1):
            states[layer].append(hidden[layer + 1][0, len(seq.prompt_ids) :])
            all_states[layer].append(hidden[layer + 1][0])
    for layer in (0, 1):
        h = torch.cat(states[layer])
        mean = h.mean(dim=0)
        assert cal.top_dims_by_layer[layer] == tuple(torch.topk(mean.abs(), 4).indices.tolist())
        assert cal.layer_norms[layer] == pytest.approx(float(h.norm(dim=-1).mean()), rel=1e-4)
        for dim, ratios in cal.dim_magnitude_by_layer.items():
            assert ratios[layer] == pytest.approx(float(mean[dim].abs() / mean.abs().mean()), rel=1e-3)
        everything = torch.cat(all_states[layer])
        assert cal.layer_norms[layer] != pytest.approx(float(everything.norm(dim=-1).mean()), rel=1e-3)


def _hand_made(top: dict[int, tuple[int, ...]], min_layers: int = 3) -> Calibration:
    layers = tuple(sorted(top))
    dims = sorted({d for v in top.values() for d in v})
    return Calibration(
        model="m", site="residual", layers=layers, top_k=3, n_sequences=1, n_tokens=1, top_dims_by_layer=top,
        dim_magnitude_by_layer={d: tuple(1.0 for _ in layers) for d in dims},
        layer_norms={layer: 1.0 for layer in layers}, min_layers=min_layers,
    )  # fmt: skip


def test_recommended_dims_threshold():
    cal = _hand_made({0: (1, 2, 5), 1: (5, 1, 2), 2: (1, 5, 9), 3: (5, 8, 9)})
    assert recommended_dims(cal, min_layers=3) == [1, 5]  # 1 at 3 layers, 5 at 4; 2 and 9 at 2
    assert recommended_dims(cal, min_layers=2) == [1, 2, 5, 9]
    assert recommended_dims(cal, min_layers=4) == [5]
    assert recommended_dims(cal, min_layers=5) == []
    assert recommended_dims(cal, min_layers=1) == [1, 2, 5, 8, 9]
    with pytest.raises(ValueError):
        recommended_dims(cal, min_layers=0)
    assert clean_dims_for(cal, "none") == {}
    assert clean_dims_for(cal, "recommended") == {0: [1, 5], 1: [1, 5], 2: [1, 5], 3: [1, 5]}
    assert clean_dims_for(cal, "top_k") == {0: [1, 2, 5], 1: [1, 2, 5], 2: [1, 5, 9], 3: [5, 8, 9]}
    assert clean_dims_for(_hand_made({0: (1,), 1: (2,)}), "recommended") == {}
    with pytest.raises(ValueError, match="cleaning mode"):
        clean_dims_for(cal, "all")  # type: ignore[arg-type]


def test_json_round_trip():
    cal = calibrate(_planted("llama"), SEQUENCES, layers=[-1, 0, 1], pad_id=0, model_name="toy/llama")
    data = json.loads(json.dumps(cal.to_json()))
    assert set(data) >= {"model", "layers", "top_dims_by_layer", "dim_magnitude_by_layer", "layer_norms", "recommended"}
    assert data["model"] == "toy/llama" and data["layers"] == [0, 1, 2]
    assert data["recommended"] == [7, 19]
    assert Calibration.from_json(data) == cal
    data["recommended"] = [3]
    with pytest.raises(ValueError, match="recommended"):
        Calibration.from_json(data)
    with pytest.raises(ValueError, match="not a massive-dims calibration"):
        Calibration.from_json({"model": "m"})


def test_no_response_token_is_an_error():
    with pytest.raises(ValueError, match="no response token"):
        calibrate(tiny_model("llama"), [SEQUENCES[3]], layers=[0], pad_id=0)


def test_cleaning_with_calibration_removes_the_planted_dims_from_projections():
    model = _planted("llama")
    cal = calibrate(model, SEQUENCES, layers=[0, 1, 2], pad_id=0)
    v = torch.zeros(32)
    v[7], v[3] = 1.0, 1.0  # half along the massive dim
    vectors = [TraitVector("t", "probe", "residual", 1, v)]
    raw = project_sequences(model, SEQUENCES[:1], vectors, pad_id=0)[0]
    clean = project_sequences(model, SEQUENCES[:1], vectors, pad_id=0, clean_dims=clean_dims_for(cal, "recommended"))[0]
    assert raw.scores.abs().min() > 20  # dominated by the planted dim
    assert clean.scores.abs().max() < 10
    assert (clean.norms[("residual", 1)] < raw.norms[("residual", 1)] / 3).all()
