"""Benchmark: monitor-gated steering vs plain steering vs unsteered greedy generation.

Run ``python benchmarks/gating_speed.py [--shape toy|gemma-2-2b|llama-3.1-8b] [--layers N]
[--device cpu|cuda] [--batch 16] [--prompt 64] [--new-tokens 32]`` or through
``python -m benchmarks --only gating``. A random-weight model built from the shape's config
(compute equals the real model's), random prompts, an EOS id that is never generated (every row
runs to ``--new-tokens``). Three generations of the same batch:

- unsteered: ``generate_greedy``;
- plain: ``generate_steered`` with one steering term at the middle layer;
- gated: ``generate_intervened`` with the same term behind a token gate read two layers earlier
  (threshold 0: it fires on about half the tokens), recording the gate's per-token trace.

Reported: the fastest of ``--repeats`` runs of each and the ratios gated / plain and gated /
unsteered (issue goal: gated / plain generation <= 1.10 on a GPU; the CPU figure is reported).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.forward_costs import fastest  # noqa: E402
from benchmarks.shapes import Shape, random_model, shape_config  # noqa: E402
from trait_interp.core.generation import generate_greedy  # noqa: E402
from trait_interp.steering.gating import Gate, RowIntervention, generate_intervened  # noqa: E402
from trait_interp.steering.interventions import SteeringTerm, generate_steered  # noqa: E402


def gating_overhead(shape: Shape, device: str, dtype: torch.dtype, batch: int, prompt: int, new_tokens: int,
                    repeats: int) -> dict:
    """One row: seconds of unsteered, plain-steered and gated generation of the same batch, and the ratios."""
    model = random_model(shape, device, dtype)
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, shape.config.vocab_size, (batch, prompt), generator=generator).tolist()
    eos = (shape.config.vocab_size + 1,)  # never generated
    hidden = shape.config.hidden_size
    vector = torch.randn(hidden, generator=generator)
    vector = vector / vector.norm()
    steer_layer = shape.n_layers // 2
    gate_layer = max(0, steer_layer - 2)
    term = SteeringTerm(steer_layer, vector, 4.0)
    gate = Gate(gate_layer, torch.randn(hidden, generator=generator), 0.0, mode="token")
    rows = [RowIntervention((term,), gate)] * batch

    def unsteered() -> None:
        generate_greedy(model, prompts, new_tokens, 0, eos, batch_size=batch)

    def plain() -> None:
        generate_steered(model, prompts, [[term]] * batch, "residual", new_tokens, 0, eos, batch)

    def gated() -> None:
        generate_intervened(model, prompts, rows, "residual", new_tokens, 0, eos, batch_size=batch)

    t_unsteered, t_plain, t_gated = (fastest(fn, device, repeats) for fn in (unsteered, plain, gated))
    return {"measure": "gated steering (token gate, per-token trace) / plain steering, generation",
            "shape": f"{shape.name} ({shape.n_layers} layers), {str(dtype).split('.')[-1]}, {batch} prompts x {prompt} "
                     f"+ {new_tokens} new tokens",
            "unsteered_s": round(t_unsteered, 4), "plain_s": round(t_plain, 4), "gated_s": round(t_gated, 4),
            "gated_vs_unsteered": round(t_gated / t_unsteered, 3),
            "ratio": round(t_gated / t_plain, 3), "goal": "<= 1.10 (GPU)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="toy", choices=("toy", "gemma-2-2b", "llama-3.1-8b"))
    parser.add_argument("--layers", type=int, default=None, help="keep the first N decoder blocks")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    row = gating_overhead(shape_config(args.shape, args.layers), args.device, dtype, args.batch, args.prompt,
                          args.new_tokens, args.repeats)
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
