"""Benchmark: K steering configurations in one batched generate vs one generate per configuration.

Run ``python benchmarks/steering_batch.py``. Builds the toy model in-process (no files written),
generates 8 questions under K=8 steering configurations (different layers, signs and sizes) two
ways, checks the token ids are identical, and prints median timings over 3 repeats.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trait_interp.core.forward import TokenSequence  # noqa: E402
from trait_interp.core.generation import generate_greedy  # noqa: E402
from trait_interp.steering.interventions import (  # noqa: E402
    SteeringTerm,
    generate_steered,
    mean_activation_norm,
    steering,
)
from trait_interp.toy.models import ToyModelSettings, build_model, train_tokenizer  # noqa: E402

QUESTIONS = [
    "What time does the train leave for the city?",
    "Could you pass me the salt, please?",
    "Where will everyone sleep?",
    "Can you help me carry these boxes up to the third floor?",
    "Did you sleep well last night?",
    "What should we cook for dinner tonight?",
    "Is the library open on Sundays?",
    "How was the meeting this morning?",
]
# (layer, ratio of the layer's mean residual norm) per term; one configuration has two terms
CONFIG_SPECS: list[list[tuple[int, float]]] = [
    [(0, 0.5)],
    [(1, -0.5)],
    [(2, 1.0)],
    [(3, -1.0)],
    [(1, 2.0)],
    [(2, -2.0)],
    [(0, 1.0), (2, 1.0)],
    [(3, 4.0)],
]
MAX_NEW_TOKENS = 32
REPEATS = 3


def _median_seconds(fn: Callable[[], object]) -> tuple[float, object]:
    result = fn()  # warm-up, also the result that is compared
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    torch.set_num_threads(2)  # like CI
    settings = ToyModelSettings()
    corpus = (REPO / "datasets" / "toy" / "tokenizer_corpus.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = train_tokenizer([line for line in corpus if line.strip()], settings.vocab_size, chat=False)
    model = build_model(settings, tokenizer)
    pad_id, eos_ids = tokenizer.pad_token_id, [tokenizer.eos_token_id]
    prompts = [tokenizer(q)["input_ids"] for q in QUESTIONS]

    hidden = settings.hidden_size
    norms = mean_activation_norm(
        model, "residual", list(range(settings.num_layers)), [TokenSequence(tuple(p), ()) for p in prompts], pad_id
    )
    generator = torch.Generator().manual_seed(0)

    def unit() -> torch.Tensor:
        v = torch.randn(hidden, generator=generator)
        return v / v.norm()

    configs = [[SteeringTerm(layer, unit(), ratio * norms[layer]) for layer, ratio in spec] for spec in CONFIG_SPECS]

    def sequential() -> list[list[int]]:
        out: list[list[int]] = []
        for terms in configs:
            with steering(model, "residual", terms):
                out.extend(generate_greedy(model, prompts, MAX_NEW_TOKENS, pad_id, eos_ids, batch_size=len(prompts)))
        return out

    rows = [terms for terms in configs for _ in prompts]

    def batched() -> list[list[int]]:
        return generate_steered(
            model, prompts * len(configs), rows, "residual", MAX_NEW_TOKENS, pad_id, eos_ids, batch_size=len(rows)
        )

    t_seq, out_seq = _median_seconds(sequential)
    t_bat, out_bat = _median_seconds(batched)
    identical = out_seq == out_bat
    n_same = sum(a == b for a, b in zip(out_seq, out_bat))
    unsteered = generate_greedy(model, prompts, MAX_NEW_TOKENS, pad_id, eos_ids, batch_size=len(prompts))
    changed = sum(out != unsteered[i % len(prompts)] for i, out in enumerate(out_bat))

    print(f"toy llama: hidden {hidden}, {settings.num_layers} layers; torch threads {torch.get_num_threads()}")
    print(f"{len(prompts)} questions x {len(configs)} configurations, max_new_tokens {MAX_NEW_TOKENS}, "
          f"median of {REPEATS}")
    print(f"mean residual norm per layer: {', '.join(f'{k}: {v:.2f}' for k, v in norms.items())}")
    print()
    print(f"{'method':<44}{'generate calls':>16}{'seconds':>10}")
    print(f"{'sequential (one batch of 8 per config)':<44}{len(configs):>16}{t_seq:>10.3f}")
    print(f"{'batched (generate_steered, one batch of 64)':<44}{1:>16}{t_bat:>10.3f}")
    print()
    print(f"speed-up: {t_seq / t_bat:.2f}x (target >= 2x)")
    print(f"outputs identical: {identical} ({n_same}/{len(out_seq)} rows)")
    print(f"rows whose output differs from the unsteered model: {changed}/{len(out_bat)}")
    if not identical:
        sys.exit(1)


if __name__ == "__main__":
    main()
