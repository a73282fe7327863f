"""Activation sites: which module each site names, per architecture; clear errors for unknown ones."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_model
from trait_interp.core.sites import resolve_site, text_config


def test_site_modules_by_architecture():
    gemma, llama = tiny_model("gemma2"), tiny_model("llama")
    assert resolve_site(gemma, "attn_contribution", 1).name == "model.layers.1.post_attention_layernorm"
    assert resolve_site(gemma, "mlp_contribution", 1).name == "model.layers.1.post_feedforward_layernorm"
    assert resolve_site(llama, "attn_contribution", 1).name == "model.layers.1.self_attn.o_proj"
    assert resolve_site(llama, "mlp_out", -1).name == "model.layers.2.mlp.down_proj"
    k = resolve_site(llama, "k_proj", 0).module
    assert k.out_features == llama.config.num_key_value_heads * (llama.config.hidden_size // llama.config.num_attention_heads)


def test_unknown_site_and_architecture_are_clear_errors():
    from trait_interp.core.errors import UserInputError

    model = tiny_model("llama")
    with pytest.raises(UserInputError, match="unknown site 'resid'; available: residual"):
        resolve_site(model, "resid", 0)
    with pytest.raises(UserInputError, match="out of range"):
        resolve_site(model, "residual", 3)
    model.config.model_type = "mystery"
    with pytest.raises(UserInputError, match="unknown architecture 'mystery'"):
        resolve_site(model, "residual", 0)


def test_text_config_is_the_language_models_config():
    model = tiny_model("llama")
    assert text_config(model) is model.config

    class Shell:  # a multimodal wrapper's config holds the language model's as text_config
        text_config = model.config

    class Wrapped:
        config = Shell()

    assert text_config(Wrapped()) is model.config
