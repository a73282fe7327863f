"""Model load time from local safetensors, and its share of one trait's extraction chain.

The chain of one trait loads the extraction model twice (generate_responses, capture_activations):
load + generate ``n`` responses of 5 tokens, load + capture every site at every layer, then every
extraction method over every layer. The share is the two loads over the whole chain.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from benchmarks.forward_costs import _sequences, fastest
from benchmarks.shapes import Shape, device_sync, random_model
from trait_interp.core.generation import generate_greedy
from trait_interp.core.models import ModelSpec, load_model
from trait_interp.core.positions import parse_position
from trait_interp.core.sites import SITES
from trait_interp.extraction.capture import capture_pooled
from trait_interp.extraction.extract import ClassSets, extract_layers
from trait_interp.extraction.methods import METHODS, MethodSettings

DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float16: "float16"}


def load_share(shape: Shape, device: str, dtype: torch.dtype, n_examples: int, prompt: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        random_model(shape, "cpu", dtype).save_pretrained(folder)
        spec = ModelSpec(path=str(folder), dtype=DTYPE_NAMES[dtype], device=device)
        device_sync(device)
        start = time.perf_counter()
        model = load_model(spec)
        device_sync(device)
        t_load = time.perf_counter() - start
        size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    sequences = _sequences(shape, n_examples, prompt + 5, response=5)
    prompts = [list(s.prompt_ids) for s in sequences]
    eos = (shape.config.vocab_size + 1,)
    t_generate = fastest(lambda: generate_greedy(model, prompts, 5, 0, eos, batch_size="auto"), device, 1)
    layers = list(range(shape.n_layers))
    pooled = {}

    def capture() -> None:
        pooled["acts"] = capture_pooled(model, sequences, parse_position("response[:5]"), list(SITES), layers, 0,
                                        batch_size="auto").acts

    t_capture = fastest(capture, device, 1)
    half = n_examples // 2

    def extract() -> None:
        for acts in pooled["acts"].values():
            train = ClassSets(positive=acts[:half], negative=acts[half : 2 * half])
            for method in METHODS:
                extract_layers(train, method, MethodSettings(), tuple(layers))

    t_extract = fastest(extract, device, 1)
    chain = 2 * t_load + t_generate + t_capture + t_extract
    return {"measure": "model load from local safetensors, and its share of one trait's extraction chain",
            "shape": f"{shape.name} ({shape.n_layers} layers), {DTYPE_NAMES[dtype]}, {size / 2**30:.2f} GiB of weights",
            "load_s": round(t_load, 2), "generate_s": round(t_generate, 2), "capture_s": round(t_capture, 2),
            "extract_s": round(t_extract, 2), "chain_s": round(chain, 2), "load_share": round(2 * t_load / chain, 3),
            "goal": "report"}
