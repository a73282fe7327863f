"""What capture and projection cost next to the model's own forward pass and generation.

- capture: one forward with the pooled capture of every site at every layer vs a plain forward of
  the same batch (``batch`` sequences of ``seq`` tokens, the last 5 pooled); goal <= 1.05 on a GPU.
- projection: greedy generation of ``new_tokens`` per prompt, then the stream-through projection
  pass of 10 trait vectors at every layer over the generated sequences, vs the generation alone;
  goal <= 1.10 on a GPU.
Each time is the fastest of ``repeats`` runs after a warm-up (the least disturbed by other load).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from benchmarks.shapes import Shape, device_sync, random_model
from trait_interp.core.forward import TokenSequence
from trait_interp.core.generation import generate_greedy
from trait_interp.core.positions import parse_position
from trait_interp.core.prompting import left_pad
from trait_interp.core.sites import SITES
from trait_interp.extraction.capture import capture_pooled
from trait_interp.monitoring.projection import TraitVector, project_sequences


def fastest(fn: Callable[[], object], device: str, repeats: int) -> float:
    fn()  # warm-up
    device_sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        device_sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def _sequences(shape: Shape, batch: int, seq: int, response: int, seed: int = 0) -> list[TokenSequence]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, shape.config.vocab_size, (batch, seq), generator=generator).tolist()
    return [TokenSequence(tuple(row[: seq - response]), tuple(row[seq - response :])) for row in ids]


@torch.no_grad()
def capture_overhead(shape: Shape, device: str, dtype: torch.dtype, batch: int, seq: int, repeats: int) -> dict:
    model = random_model(shape, device, dtype)
    sequences = _sequences(shape, batch, seq, response=5)
    input_ids, attention_mask, position_ids = (t.to(device) for t in left_pad([list(s.ids) for s in sequences], 0))
    layers = list(range(shape.n_layers))

    def plain() -> None:
        model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
              logits_to_keep=1)

    def captured() -> None:
        capture_pooled(model, sequences, parse_position("response[:]"), list(SITES), layers, 0, batch_size=batch)

    t_plain, t_capture = fastest(plain, device, repeats), fastest(captured, device, repeats)
    return {"measure": f"forward + capture of {len(SITES)} sites x {len(layers)} layers / plain forward",
            "shape": f"{shape.name} ({len(layers)} layers), {str(dtype).split('.')[-1]}, batch {batch} x {seq} tokens",
            "plain_s": round(t_plain, 4), "with_capture_s": round(t_capture, 4),
            "ratio": round(t_capture / t_plain, 3), "goal": "<= 1.05 (GPU)"}


@torch.no_grad()
def projection_overhead(shape: Shape, device: str, dtype: torch.dtype, batch: int, prompt: int, new_tokens: int,
                        repeats: int, n_traits: int = 10) -> dict:
    model = random_model(shape, device, dtype)
    prompts = [list(s.prompt_ids) for s in _sequences(shape, batch, prompt + 1, response=1)]
    eos = (shape.config.vocab_size + 1,)  # never generated: every answer runs to new_tokens
    generator = torch.Generator().manual_seed(1)
    layers = list(range(shape.n_layers))
    vectors = [TraitVector(f"t{i}", "probe", "residual", layer, torch.randn(shape.config.hidden_size, generator=generator))
               for i in range(n_traits) for layer in layers]
    answers: list[list[int]] = []

    def generate() -> None:
        answers[:] = generate_greedy(model, prompts, new_tokens, 0, eos, batch_size=batch)

    def project() -> None:
        sequences = [TokenSequence(tuple(p), tuple(a)) for p, a in zip(prompts, answers)]
        project_sequences(model, sequences, vectors, 0, batch_size=batch)

    t_generate = fastest(generate, device, repeats)
    t_project = fastest(project, device, repeats)
    return {"measure": f"generation + projection of {n_traits} traits x {len(layers)} layers / generation",
            "shape": f"{shape.name} ({len(layers)} layers), {str(dtype).split('.')[-1]}, {batch} prompts x {prompt} "
                     f"+ {new_tokens} new tokens",
            "generation_s": round(t_generate, 4), "projection_s": round(t_project, 4),
            "ratio": round((t_generate + t_project) / t_generate, 3), "goal": "<= 1.10 (GPU)"}
