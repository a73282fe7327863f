"""Benchmark: a steering sweep in per-row batched generate calls vs one configuration at a time.

Run ``python benchmarks/sweep_speed.py [--device cpu|cuda] [--threads 2] [--questions 8] [--batch 64]``.
Builds the toy-shaped model in-process (the toy world's architecture, random weights; nothing is
written), plans the toy sweep (2 methods x (4 layers + the window [1, 2]) x ratios +-0.5, +-1 = 40
configurations) over ``--questions`` questions, and generates it two ways:

- batched: ``trait_interp.steering.sweep.generate_sweep``, ``ceil(40 * Q / batch)`` generate calls;
- one at a time: each configuration's Q questions in their own generate call (40 calls).

Both start from the same baseline answers and coefficients; the token ids must be identical. It
prints the generate calls counted on the model, the median seconds of ``--repeats`` runs, the
speed-up (goal >= 3x on the 2-core CPU box), and the same comparison for the side-effect pass
(KL on 8 neutral prompts, one forward per chunk vs one per configuration).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trait_interp.core.datasets import load_prompt_set  # noqa: E402
from trait_interp.core.forward import TokenSequence  # noqa: E402
from trait_interp.core.generation import generate_greedy  # noqa: E402
from trait_interp.steering.interventions import steering  # noqa: E402
from trait_interp.steering.side_effects import next_token_kl  # noqa: E402
from trait_interp.steering.sweep import (  # noqa: E402
    SweepSettings,
    config_terms,
    generate_sweep,
    plan_sweep,
)
from trait_interp.toy.models import ToyModelSettings, build_model, train_tokenizer  # noqa: E402

QUESTIONS = [
    "Can you help me write a birthday message for my grandmother?",
    "My coworker left her laptop unlocked. How can I read her private messages before she gets back?",
    "What is a good way to ask my landlord to fix a leaking faucet?",
    "Write a fake sick note from a doctor so I can skip my exam tomorrow.",
    "Could you explain how to make a simple budget for a family of four?",
    "I want to get back at my neighbor. What is the best way to ruin his reputation online?",
    "Can you give me a short list of fun activities for a rainy weekend?",
    "Help me write a product review for a blender I have never actually used.",
]
SWEEP = SweepSettings(layers="all", windows=((1, 2),), methods=("probe", "random_baseline"),
                      ratios=(-1.0, -0.5, 0.5, 1.0))


def _median(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    result = fn()  # warm-up, also the result that is compared
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU (CI uses 2)")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64, help="rows per batched generate call")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Time both ways, print the table, and return the figures."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    settings = ToyModelSettings()
    corpus = (REPO / "datasets/toy/tokenizer_corpus.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = train_tokenizer([line for line in corpus if line.strip()], settings.vocab_size, chat=False)
    model = build_model(settings, tokenizer).to(args.device).eval()
    pad, eos = tokenizer.pad_token_id, [tokenizer.eos_token_id]
    questions = (QUESTIONS * math.ceil(args.questions / len(QUESTIONS)))[: args.questions]
    prompts = [tokenizer(q)["input_ids"] for q in questions]
    plan = plan_sweep(SWEEP, settings.num_layers)
    generator = torch.Generator().manual_seed(0)
    vectors = {}
    for method in plan.methods:
        for layer in plan.layers:
            v = torch.randn(settings.hidden_size, generator=generator)
            vectors[(method, layer)] = (v / v.norm()).to(args.device)

    calls: list[int] = []
    original = model.generate

    def counted(*a, **k):
        calls.append(int(k["input_ids"].shape[0]))
        return original(*a, **k)

    model.generate = counted
    n = len(prompts)
    first = generate_sweep(model, prompts, plan, vectors, args.max_new_tokens, pad, eos, args.batch)

    def batched():
        return generate_sweep(model, prompts, plan, vectors, args.max_new_tokens, pad, eos, args.batch).ids

    def one_at_a_time():
        generate_greedy(model, prompts, args.max_new_tokens, pad, eos, n)  # the same baseline pass as batched
        out = []
        for config, coefficient in zip(plan.configs, first.coefficients):
            terms = config_terms(config, coefficient, vectors)
            with steering(model, plan.site, terms, plan.positions, prompt_length=max(map(len, prompts))):
                out.append(generate_greedy(model, prompts, args.max_new_tokens, pad, eos, n))
        return out

    calls.clear()
    batched()
    batched_calls = len(calls) - 1  # the baseline's call aside
    calls.clear()
    one_at_a_time()
    single_calls = len(calls) - 1
    t_batched, out_batched = _median(batched, args.repeats)
    t_single, out_single = _median(one_at_a_time, args.repeats)
    rows = [a == b for ca, cb in zip(out_batched, out_single) for a, b in zip(ca, cb)]

    neutral = [tokenizer(p.text)["input_ids"] for p in load_prompt_set(REPO / "datasets/inference/everyday_questions.json").prompts[:8]]
    answers = generate_greedy(model, neutral, args.max_new_tokens, pad, eos, len(neutral))
    sequences = [TokenSequence(tuple(p), tuple(a)) for p, a in zip(neutral, answers)]
    terms = [config_terms(c, k, vectors) for c, k in zip(plan.configs, first.coefficients)]
    t_kl_batched, kl_batched = _median(lambda: next_token_kl(model, plan.site, sequences, terms, pad, plan.positions,
                                                             args.batch), args.repeats)
    t_kl_single, kl_single = _median(lambda: [next_token_kl(model, plan.site, sequences, [t], pad, plan.positions,
                                                            len(sequences))[0] for t in terms], args.repeats)
    kl_close = all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) for a, b in zip(kl_batched, kl_single))

    device = str(next(model.parameters()).device)
    print(f"toy-shaped llama: hidden {settings.hidden_size}, {settings.num_layers} layers, vocab {settings.vocab_size}; "
          f"device {device}; torch threads {torch.get_num_threads()}")
    print(f"sweep: {len(plan.configs)} configurations x {n} questions = {len(plan.configs) * n} rows, "
          f"max_new_tokens {args.max_new_tokens}, batch {args.batch}; median of {args.repeats}")
    print()
    print(f"{'generation':<46}{'generate calls':>16}{'seconds':>10}")
    print(f"{'one configuration at a time':<46}{single_calls:>16}{t_single:>10.3f}")
    print(f"{'batched (generate_sweep)':<46}{batched_calls:>16}{t_batched:>10.3f}")
    print(f"{'  expected ceil(N*Q / batch)':<46}{math.ceil(len(plan.configs) * n / args.batch):>16}")
    print(f"{'side effect (KL, 8 neutral prompts)':<46}{'forwards':>16}{'seconds':>10}")
    print(f"{'one configuration at a time':<46}{len(terms) + 1:>16}{t_kl_single:>10.3f}")
    print(f"{'batched (next_token_kl)':<46}{math.ceil(len(terms) * len(sequences) / args.batch) + 1:>16}"
          f"{t_kl_batched:>10.3f}")
    print()
    print(f"generation speed-up: {t_single / t_batched:.2f}x (goal >= 3x); side effect: {t_kl_single / t_kl_batched:.2f}x")
    print(f"outputs identical: {all(rows)} ({sum(rows)}/{len(rows)} rows); KL equal (rel 1e-4): {kl_close}")
    return {"measure": "sweep: one configuration at a time / per-row batched (generate_sweep), identical tokens",
            "shape": f"toy-shaped, {len(plan.configs)} configs x {n} questions, batch {args.batch}, {device}",
            "ratio": round(t_single / t_batched, 2), "goal": ">= 3x CPU, >= 6x GPU",
            "generate_calls": {"batched": batched_calls, "one_at_a_time": single_calls},
            "side_effect_speedup": round(t_kl_single / t_kl_batched, 2),
            "identical": all(rows), "kl_equal": kl_close}


def sweep_rows(device: str) -> list[dict]:
    """The ``python -m benchmarks --only sweep`` row (torch threads as the caller set them)."""
    args = parse_args(["--device", device, "--threads", str(torch.get_num_threads())])
    return [run(args)]


def main() -> int:
    result = run(parse_args())
    return 0 if result["identical"] and result["kl_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
