"""Random-weight models built from the real configs: the compute of Gemma-2-2B or Llama-3.1-8B, no weights.

``--shape toy`` is this project's toy chat model (4 layers, hidden 64); ``gemma-2-2b`` and
``llama-3.1-8b`` copy the published configs (layers, widths, heads, vocabulary), so a forward pass
costs what the real model's does. ``layers`` keeps only the first N blocks (for a CPU, where a full
8B forward at batch 16 x 256 takes minutes); the ratios measured do not depend on it much.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    LlamaConfig,
    PretrainedConfig,
)
from transformers.initialization import no_init_weights

SHAPES = ("toy", "gemma-2-2b", "llama-3.1-8b")


@dataclass(frozen=True)
class Shape:
    name: str
    config: PretrainedConfig

    @property
    def n_layers(self) -> int:
        return int(self.config.num_hidden_layers)


def shape_config(name: str, layers: int | None = None) -> Shape:
    if name == "toy":
        config = LlamaConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    elif name == "gemma-2-2b":
        config = Gemma2Config(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                              num_attention_heads=8, num_key_value_heads=4, head_dim=256, max_position_embeddings=8192,
                              sliding_window=4096, query_pre_attn_scalar=256, attn_logit_softcapping=50.0,
                              final_logit_softcapping=30.0)
    elif name == "llama-3.1-8b":
        config = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                             num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                             rope_theta=500000.0, rms_norm_eps=1e-5,
                             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    else:
        raise ValueError(f"unknown shape {name!r}; use one of {', '.join(SHAPES)}")
    if layers is not None:
        config.num_hidden_layers = min(layers, config.num_hidden_layers)
    config.pad_token_id = 0
    return Shape(name, config)


def random_model(shape: Shape, device: str, dtype: torch.dtype, seed: int = 0):
    """The shape's model with seeded N(0, 0.02) weights (no checkpoint), in eval mode on ``device``."""
    torch.manual_seed(seed)
    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(shape.config, dtype=dtype)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02, generator=generator)
    return model.eval()


def device_sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
