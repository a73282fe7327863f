"""Model registry entries (from params) and loading through ``from_pretrained``.

A local path and a hub id go through the same code path; weights load only from safetensors
and ``trust_remote_code`` stays off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from trait_interp.config import from_mapping
from trait_interp.errors import UserInputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """One entry of ``models:`` in params.yaml. Exactly one of ``path`` / ``hub_id``."""

    path: str | None = None
    hub_id: str | None = None
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    device: str = "cpu"
    prompt_mode: Literal["auto", "chat", "completion"] = "auto"
    merge_system_prompt: bool = False

    @property
    def source(self) -> str:
        return self.path if self.path is not None else str(self.hub_id)


def model_spec(models: Mapping[str, Any], key: str, where: str = "params.yaml") -> ModelSpec:
    """Pick and validate the registry entry ``key``; checks the local path exists."""
    if key not in models:
        raise UserInputError(f"{where}: unknown model '{key}'; models defined: {', '.join(models) or 'none'}")
    spec = from_mapping(ModelSpec, models[key], f"{where}:models.{key}")
    if (spec.path is None) == (spec.hub_id is None):
        raise UserInputError(f"{where}:models.{key}: set exactly one of 'path' or 'hub_id'")
    if spec.path is not None and not Path(spec.path).is_dir():
        raise UserInputError(
            f"{where}:models.{key}.path: model folder '{spec.path}' does not exist; "
            "build it (dvc repro build_toy_models) or fix the path"
        )
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"{where}:models.{key}.device is '{spec.device}' but no CUDA device is available; set device: cpu")
    return spec


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(spec.source, revision=spec.revision, trust_remote_code=False)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: ModelSpec) -> PreTrainedModel:
    model = AutoModelForCausalLM.from_pretrained(
        spec.source,
        revision=spec.revision,
        dtype=DTYPES[spec.dtype],
        use_safetensors=True,
        trust_remote_code=False,
    )
    return model.to(spec.device).eval()
