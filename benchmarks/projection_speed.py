"""Benchmark: stream-through projection cost next to generation, and the size of the long table.

Run ``python benchmarks/projection_speed.py``. Builds the toy chat model in-process (2 torch
threads, like CI), 10 random unit trait vectors at every layer (residual), and reports:

1. plain greedy generation time vs generation + the stream-through projection pass (target <= 1.10x);
2. bytes per token of the Parquet long table vs the raw hidden states it replaces, for the toy
   model (n_layers x hidden x 4 bytes) and a 70B-class model (80 x 8192 x 2 bytes); target <= 1/100;
3. the jailbreak prompt set (305 prompts) end to end: generation, projection, long table, Parquet size.
"""

from __future__ import annotations

import argparse
import glob
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schemas.projections import Projections  # noqa: E402
from trait_interp.core.datasets import load_prompt_set  # noqa: E402
from trait_interp.core.forward import TokenSequence  # noqa: E402
from trait_interp.core.generation import generate_greedy  # noqa: E402
from trait_interp.core.prompting import PromptSpec, left_pad, prompt_ids, token_strings  # noqa: E402
from trait_interp.monitoring.dynamics import dynamics_table  # noqa: E402
from trait_interp.monitoring.projection import (  # noqa: E402
    TraitVector,
    project_sequences,
    to_long_rows,
)
from trait_interp.toy.models import ToyModelSettings, build_model, train_tokenizer  # noqa: E402

JAILBREAK = REPO.parent / "shared" / "upstream-datasets" / "inference" / "jailbreak" / "original.json"
N_TRAITS = 10
MAX_NEW_TOKENS = 48
N_PROMPTS = 32
REPEATS = 5
BIG_MODEL_BYTES_PER_TOKEN = 80 * 8192 * 2  # 70B-class: 80 layers x 8192 hidden x bf16


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Fastest of ``repeats`` runs after a warm-up: the least disturbed by other load on the machine."""
    result = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def _parquet_bytes(table) -> int:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "projections.parquet"
        table.to_parquet(path, index=False)
        return path.stat().st_size


@torch.no_grad()
def _plain_forward(model, sequences: list[list[int]], pad_id: int, batch_size: int) -> None:  # type: ignore[no-untyped-def]
    """The same batched forward passes as the projection (sorted by length), without any hook."""
    ordered = sorted(sequences, key=len)
    for start in range(0, len(ordered), batch_size):
        input_ids, attention_mask, position_ids = left_pad(ordered[start : start + batch_size], pad_id)
        model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False, logits_to_keep=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16, help="generation and projection batch size")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--hidden-size", type=int, default=None, help="override the toy width (scaling check)")
    parser.add_argument("--num-layers", type=int, default=None, help="override the toy depth (scaling check)")
    parser.add_argument("--skip-jailbreak", action="store_true", help="only parts (1) and (2)")
    args = parser.parse_args()

    torch.set_num_threads(2)
    settings = ToyModelSettings()
    if args.hidden_size or args.num_layers:
        hidden = args.hidden_size or settings.hidden_size
        settings = replace(
            settings, hidden_size=hidden, intermediate_size=2 * hidden, num_layers=args.num_layers or settings.num_layers
        )
    corpus = (REPO / "datasets" / "toy" / "tokenizer_corpus.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = train_tokenizer([line for line in corpus if line.strip()], settings.vocab_size, chat=True)
    model = build_model(settings, tokenizer)
    pad_id, eos_ids = tokenizer.pad_token_id, [tokenizer.eos_token_id]

    generator = torch.Generator().manual_seed(0)
    vectors = []
    for layer in range(settings.num_layers):
        for trait in range(N_TRAITS):
            v = torch.randn(settings.hidden_size, generator=generator)
            vectors.append(TraitVector(f"trait_{trait}", "probe", "residual", layer, v / v.norm()))

    def prompts_of(path: Path) -> list[list[int]]:
        prompt_set = load_prompt_set(path)
        return [prompt_ids(tokenizer, PromptSpec(p.text, prompt_set.system_prompt), chat=True) for p in prompt_set.prompts]

    local = [ids for path in sorted(glob.glob(str(REPO / "datasets" / "inference" / "*.json"))) for ids in prompts_of(Path(path))]
    prompts = [local[i % len(local)] for i in range(N_PROMPTS)]

    print(f"toy llama: hidden {settings.hidden_size}, {settings.num_layers} layers, vocab {len(tokenizer)}; "
          f"torch threads {torch.get_num_threads()}; batch size {args.batch_size}")
    print(f"{len(vectors)} vectors ({N_TRAITS} traits x {settings.num_layers} layers, residual); "
          f"{MAX_NEW_TOKENS} new tokens; best of {args.repeats}")

    # (1) generation vs generation + projection ------------------------------------------------
    def generate(ps: list[list[int]]) -> list[list[int]]:
        return generate_greedy(model, ps, MAX_NEW_TOKENS, pad_id, eos_ids, batch_size=args.batch_size)

    t_gen, responses = _best(lambda: generate(prompts), args.repeats)
    sequences = [TokenSequence(tuple(p), tuple(r)) for p, r in zip(prompts, responses)]  # type: ignore[arg-type]
    t_proj, result = _best(
        lambda: project_sequences(model, sequences, vectors, pad_id, batch_size=args.batch_size), args.repeats
    )
    t_plain, _ = _best(lambda: _plain_forward(model, [list(s.ids) for s in sequences], pad_id, args.batch_size), args.repeats)
    t_prefill, _ = _best(lambda: _plain_forward(model, prompts, pad_id, args.batch_size), args.repeats)
    one_layer = [v for v in vectors if v.layer == 1]  # monitoring at one layer (e.g. `best`): later blocks skipped
    t_one, _ = _best(lambda: project_sequences(model, sequences, one_layer, pad_id, batch_size=args.batch_size), args.repeats)
    n_tokens = sum(len(s.ids) for s in sequences)
    n_response = sum(len(s.response_ids) for s in sequences)
    tokens = [token_strings(tokenizer, s.ids) for s in sequences]
    ids = [f"p{i}" for i in range(len(sequences))]
    t_table, table = _best(lambda: to_long_rows(result, ids, sequences, tokens, vectors), args.repeats)  # type: ignore[arg-type]
    Projections.validate(table)
    size = _parquet_bytes(table)
    ratio = (t_gen + t_proj) / t_gen
    print()
    print(f"(1) {len(prompts)} prompts, {n_tokens} tokens ({n_response} generated)")
    print(f"    generation                          {t_gen:8.3f} s")
    print(f"    stream-through projection pass      {t_proj:8.3f} s  ({1000 * t_proj / n_tokens:.3f} ms/token)")
    print(f"    generation + projection             {t_gen + t_proj:8.3f} s  -> {ratio:.3f}x "
          f"(target <= 1.10x: {'met' if ratio <= 1.10 else 'NOT met'})")
    print(f"    long table (to_long_rows)           {t_table:8.3f} s  ({len(table)} rows)")
    print(f"    same, {N_TRAITS} traits at layer 1 only     {t_one:8.3f} s  -> {(t_gen + t_one) / t_gen:.3f}x "
          f"(the pass stops after block 1 of {settings.num_layers})")
    print("    where the projection time goes:")
    print(f"      same forward passes, no hooks     {t_plain:8.3f} s  (hooks add {t_proj / t_plain - 1:+.0%})")
    print(f"      forward over the prompts only     {t_prefill:8.3f} s  (~ the prefill inside generation)")

    # (2) bytes per token ------------------------------------------------------------------------
    per_token = size / n_tokens
    raw = settings.num_layers * settings.hidden_size * 4
    print()
    print(f"(2) Parquet long table: {size} bytes = {per_token:.1f} bytes/token "
          f"({size / len(table):.2f} bytes/row, {len(vectors)} rows/token)")
    print(f"    vs toy raw states ({settings.num_layers} x {settings.hidden_size} x 4 = {raw} B/token): "
          f"1/{raw / per_token:.1f} (target <= 1/100: {'met' if raw / per_token >= 100 else 'NOT met'})")
    print(f"    vs 70B raw states (80 x 8192 x 2 = {BIG_MODEL_BYTES_PER_TOKEN} B/token): "
          f"1/{BIG_MODEL_BYTES_PER_TOKEN / per_token:.0f} "
          f"(target <= 1/100: {'met' if BIG_MODEL_BYTES_PER_TOKEN / per_token >= 100 else 'NOT met'})")

    # (3) jailbreak prompt set -----------------------------------------------------------------
    if args.skip_jailbreak:
        return
    if not JAILBREAK.exists():
        print(f"\n(3) skipped: {JAILBREAK} not found")
        return
    jailbreak = prompts_of(JAILBREAK)
    repeats = max(1, args.repeats // 2)  # each run takes seconds here
    t_jb_gen, jb_responses = _best(lambda: generate(jailbreak), repeats)
    jb_sequences = [TokenSequence(tuple(p), tuple(r)) for p, r in zip(jailbreak, jb_responses)]  # type: ignore[arg-type]
    t_jb_proj, jb_result = _best(
        lambda: project_sequences(model, jb_sequences, vectors, pad_id, batch_size=args.batch_size), repeats
    )
    jb_tokens_str = [token_strings(tokenizer, s.ids) for s in jb_sequences]
    jb_ids = [str(i) for i in range(len(jb_sequences))]
    t_jb_table, jb_table = _best(
        lambda: to_long_rows(jb_result, jb_ids, jb_sequences, jb_tokens_str, vectors), repeats  # type: ignore[arg-type]
    )
    start = time.perf_counter()
    per_token, per_trajectory = dynamics_table(jb_table, window=5, threshold=0.5)
    t_dyn = time.perf_counter() - start
    jb_size = _parquet_bytes(jb_table)
    jb_tokens = sum(len(s.ids) for s in jb_sequences)
    print()
    print(f"(3) jailbreak/original.json (best of {repeats}): {len(jailbreak)} prompts, {jb_tokens} tokens "
          f"({sum(len(s.response_ids) for s in jb_sequences)} generated)")
    print(f"    generation {t_jb_gen:.2f} s; projection {t_jb_proj:.2f} s ({t_jb_proj / t_jb_gen:.1%} of generation); "
          f"long table {t_jb_table:.2f} s")
    print(f"    dynamics_table {t_dyn:.2f} s ({len(per_trajectory)} trajectories, {len(per_token)} response-token rows)")
    print(f"    Parquet {jb_size / 1e6:.2f} MB, {len(jb_table)} rows, {jb_size / jb_tokens:.1f} bytes/token "
          f"(raw toy states would be {jb_tokens * raw / 1e6:.2f} MB; 70B states {jb_tokens * BIG_MODEL_BYTES_PER_TOKEN / 1e9:.1f} GB)")


if __name__ == "__main__":
    main()
