"""Activation sites: which module of decoder block L to hook for each named site.

Sites: ``residual`` (block output), ``attn_out`` (o_proj output), ``mlp_out`` (down_proj output),
``attn_contribution`` / ``mlp_contribution`` (what is actually added to the residual stream: after
the post-sublayer norm where the architecture has one, as in Gemma-2/3 and OLMo-2), ``k_proj``,
``v_proj``. Blocks are found by walking the module tree, so a peft wrapper or a multimodal shell
around the language model changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trait_interp.core.errors import UserInputError
from trait_interp.core.layers import normalize_layer

SITES: tuple[str, ...] = (
    "residual",
    "attn_out",
    "mlp_out",
    "attn_contribution",
    "mlp_contribution",
    "k_proj",
    "v_proj",
)

# Relative module path inside one decoder block, per architecture family. "" = the block itself.
_PRE_NORM = {
    "residual": "",
    "attn_out": "self_attn.o_proj",
    "mlp_out": "mlp.down_proj",
    "attn_contribution": "self_attn.o_proj",
    "mlp_contribution": "mlp.down_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
}
_POST_NORM = {
    **_PRE_NORM,
    "attn_contribution": "post_attention_layernorm",
    "mlp_contribution": "post_feedforward_layernorm",
}
ARCHITECTURES: dict[str, dict[str, str]] = {
    "llama": _PRE_NORM,
    "mistral": _PRE_NORM,
    "qwen2": _PRE_NORM,
    "qwen3": _PRE_NORM,
    "gemma": _PRE_NORM,
    "gemma2": _POST_NORM,
    "gemma3": _POST_NORM,
    "gemma3_text": _POST_NORM,
    "olmo2": _POST_NORM,
}


@dataclass(frozen=True)
class SiteModule:
    site: str
    layer: int
    name: str  # full dotted module name, e.g. "model.layers.3.self_attn.o_proj"
    module: nn.Module


def text_config(model: nn.Module):
    """The language model's config: ``text_config`` of a multimodal shell (e.g. Gemma-3), else the config."""
    config = model.config
    return getattr(config, "text_config", None) or config


def model_type(model: nn.Module) -> str:
    return str(text_config(model).model_type)


def num_layers(model: nn.Module) -> int:
    return int(text_config(model).num_hidden_layers)


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of decoder blocks (name, module), found through any wrapper."""
    n = num_layers(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] == "layers" and len(module) == n:
            return name, module
    raise UserInputError(f"could not find the {n} decoder layers in {type(model).__name__}")


def check_site(site: str, param: str | None = None) -> str:
    """``site`` if it is one of ``SITES``; else an error naming ``param`` (e.g. ``steering.site``)."""
    if site not in SITES:
        named = f"{param}: " if param else ""
        raise UserInputError(f"{named}unknown site '{site}'; available: {', '.join(SITES)}")
    return site


def resolve_site(model: nn.Module, site: str, layer: int) -> SiteModule:
    check_site(site)
    arch = model_type(model)
    if arch not in ARCHITECTURES:
        raise UserInputError(
            f"unknown architecture '{arch}': sites are defined for {', '.join(sorted(ARCHITECTURES))}; "
            "add it to trait_interp.core.sites.ARCHITECTURES"
        )
    prefix, blocks = decoder_layers(model)
    layer = normalize_layer(layer, len(blocks))
    relative = ARCHITECTURES[arch][site]
    module: nn.Module = blocks[layer]
    for part in filter(None, relative.split(".")):
        if not hasattr(module, part):
            raise UserInputError(f"{arch} block {layer} has no submodule '{relative}' for site '{site}'")
        module = getattr(module, part)
    name = f"{prefix}.{layer}" + (f".{relative}" if relative else "")
    return SiteModule(site=site, layer=layer, name=name, module=module)


def site_width(model: nn.Module, module: nn.Module) -> int:
    """Width of a site's output: a projection's ``out_features``, a norm's weight, else ``hidden_size``."""
    out_features = getattr(module, "out_features", None)
    if isinstance(out_features, int):
        return out_features
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.ndim == 1:
        return int(weight.shape[0])
    return int(text_config(model).hidden_size)


def module_device(model: nn.Module, module: nn.Module) -> torch.device:
    """Where a site's module computes (its first parameter's device; the model's for parameterless ones)."""
    for param in module.parameters():
        return param.device
    return next(model.parameters()).device


def input_device(model: nn.Module) -> torch.device:
    """Where a model's inputs go: the device of its input embeddings (with a device map, the first GPU used).

    Works through a peft wrapper; with accelerate offloading (weights on ``meta``) it is the
    embedding hook's execution device.
    """
    embeddings = None
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            embeddings = getter()
        except (AttributeError, NotImplementedError):
            embeddings = None
    if isinstance(embeddings, nn.Module):
        for param in embeddings.parameters():
            if param.device.type != "meta":
                return param.device
            hook = getattr(embeddings, "_hf_hook", None)
            execution = getattr(hook, "execution_device", None)
            if execution is not None:
                return torch.device(execution if not isinstance(execution, int) else f"cuda:{execution}")
            break
    return next(model.parameters()).device
