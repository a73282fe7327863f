"""A layer out of range, an unknown site or a malformed position names the param that holds it.

``layer`` (steering, monitoring), ``extraction.layers`` and ``raw_activations.layers`` all hold layers;
``extraction.sites``, ``steering.site``, ``monitoring.site`` (and ``raw_activations.site``,
``massive_dims.site``) all hold sites: the message says which one to fix.
"""

from __future__ import annotations

import json

import pytest

from tests.bad_input_toy import toy_models
from tests.conftest import REPO
from tests.pipeline.test_stages import (
    _fails,
    invoke,
    make_params,
    steer_args,
    write_trait,
)

SMALL = {"extraction.sites": ["residual"], "vectors.methods": ["probe", "mean_diff"]}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Responses, activations and vectors of a 4-pair trait, and a 3-prompt inference set, on 3-layer toy models."""
    tmp = tmp_path_factory.mktemp("param-names")
    params = toy_models(tmp, **SMALL)
    pos, neg = write_trait(tmp, n=4)
    out = tmp / "exp/behavior/refusal"
    prompt_set = tmp / "set.json"
    prompts = json.loads((REPO / "datasets/inference/mixed_requests.json").read_text())
    prompt_set.write_text(json.dumps({**prompts, "prompts": prompts["prompts"][:3]}))
    steps = [
        ("generate-responses", "--trait", "behavior/refusal", "--positive", pos, "--negative", neg,
         "--out", out / "responses.jsonl", "--params", params),
        ("capture-activations", "--responses", out / "responses.jsonl", "--out", out / "activations", "--params", params),
        ("extract-vectors", "--activations", out / "activations", "--out", out / "vectors", "--params", params),
        ("generate-inference", "--model", "toy-instruct", "--prompt-set", prompt_set, "--out", tmp / "inference.jsonl",
         "--params", params),
    ]
    for step in steps:
        result = invoke(*step)
        assert result.exit_code == 0, (step[0], result.output)
    return tmp, out


def capture(toy, tmp_path, **overrides):
    tmp, out = toy
    params = make_params(tmp_path, tmp, **{**SMALL, **overrides})
    return invoke("capture-activations", "--responses", out / "responses.jsonl", "--out", tmp_path / "acts",
                  "--params", params)


def test_extraction_layers_out_of_range(toy, tmp_path):
    _fails(capture(toy, tmp_path, **{"extraction.layers": [0, 7]}),
           "extraction.layers: layer 7 is out of range for a model with 3 layers")
    _fails(capture(toy, tmp_path, **{"extraction.layers": "5:9"}), "extraction.layers: layers spec '5:9' selects no layer")
    assert not (tmp_path / "acts").exists()


def test_extraction_sites_unknown(toy, tmp_path):
    _fails(capture(toy, tmp_path, **{"extraction.sites": ["residual", "resid_post"]}),
           "extraction.sites: unknown site 'resid_post'; available: residual")


def test_extraction_position_malformed(toy, tmp_path):
    _fails(capture(toy, tmp_path, **{"extraction.position": "response[5"}), "extraction.position: malformed position")


def steer(toy, tmp_path, **overrides):
    tmp, out = toy
    params = make_params(tmp_path, tmp, **{**SMALL, **overrides})
    return invoke(*steer_args(out, params, tmp_path / "steer", cache=tmp_path / "cache.jsonl"))


def test_steering_layer_out_of_range(toy, tmp_path):
    _fails(steer(toy, tmp_path, layer=5), "layer: layer 5 is out of range for a model with 3 layers")
    _fails(steer(toy, tmp_path, layer=[1, -4]), "layer: layer -4 is out of range")
    assert not (tmp_path / "steer").exists()


def test_steering_site_unknown(toy, tmp_path):
    _fails(steer(toy, tmp_path, **{"steering.site": "resid"}), "steering.site: unknown site 'resid'")


def project(toy, tmp_path, **overrides):
    """monitor-layers, then project (as dvc.yaml runs them); the first that fails gives the result."""
    tmp, _ = toy
    params = make_params(tmp_path, tmp, **{**SMALL, **overrides})
    dest = tmp_path / "project"
    chosen = invoke("monitor-layers", "--best", f"{tmp}/none/{{trait}}/best.json", "--out", tmp_path / "layers.json",
                    "--params", params)
    if chosen.exit_code != 0:
        return chosen
    return invoke("project", "--model", "toy-instruct", "--responses", tmp / "inference.jsonl",
                  "--vectors", f"{tmp}/exp/{{trait}}/vectors", "--layers", tmp_path / "layers.json",
                  "--out", dest / "p.parquet", "--dynamics", dest / "d.parquet", "--commitment", dest / "c.csv",
                  "--metrics", dest / "m.json", "--params", params)


def test_monitoring_layer_out_of_range(toy, tmp_path):
    _fails(project(toy, tmp_path, traits=["behavior/refusal"], **{"monitoring.layer": 3}),
           "monitoring.layer: layer 3 is out of range")
    assert not (tmp_path / "project").exists()


def test_monitoring_site_unknown(toy, tmp_path):
    _fails(project(toy, tmp_path, **{"monitoring.site": "mlp"}), "monitoring.site: unknown site 'mlp'")


def raw(toy, tmp_path, **overrides):
    tmp, _ = toy
    params = make_params(tmp_path, tmp, **overrides)
    return invoke("capture-raw", "--model", "toy-instruct", "--responses", tmp / "inference.jsonl",
                  "--out", tmp_path / "raw", "--params", params)


def test_raw_activation_layers_and_site(toy, tmp_path):
    _fails(raw(toy, tmp_path, **{"raw_activations.layers": [0, 3]}), "raw_activations.layers: layer 3 is out of range")
    _fails(raw(toy, tmp_path, **{"raw_activations.site": "resid"}), "raw_activations.site: unknown site 'resid'")
    assert not (tmp_path / "raw").exists()
