"""Judge throughput: concurrent vs sequential requests against a 100 ms stub, and a warm cache.

Run: ``python benchmarks/judge_concurrency.py [--requests 200] [--concurrency 20] [--latency 0.1]``.
Starts the local OpenAI-compatible stub (tests/openai_stub.py; no network, dummy key), sends the
same number of distinct requests through ``Judge(OpenAIBackend(...))`` with a file-backed cache,
once with ``max_concurrency=N`` and once sequentially (``max_concurrency=1``), then re-runs the
concurrent batch on the warm cache, which must make zero calls.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from openai_stub import serve_stub  # noqa: E402

from trait_interp.judge.cache import JudgeCache  # noqa: E402
from trait_interp.judge.judge import Judge, JudgeRequest  # noqa: E402
from trait_interp.judge.openai_backend import OpenAIBackend  # noqa: E402
from trait_interp.judge.scoring import TRAIT_MIN_MASS  # noqa: E402
from trait_interp.judge.templates import STEERING_TRAIT  # noqa: E402


def make_requests(n: int, tag: str) -> list[JudgeRequest]:
    return [
        JudgeRequest.of(
            STEERING_TRAIT,
            {"trait_name": "optimism", "definition": "Expecting good outcomes.", "question": f"{tag} question {i}",
             "answer": f"answer {i}"},
            TRAIT_MIN_MASS,
        )
        for i in range(n)
    ]


def timed_run(base_url: str, cache_path: Path, requests: list[JudgeRequest], concurrency: int) -> tuple[float, Judge, int]:
    backend = OpenAIBackend("gpt-4.1-mini", "sk-dummy", base_url, max_concurrency=concurrency, timeout_s=10.0)
    with JudgeCache.open(cache_path) as cache:
        judge = Judge(backend, cache)
        start = time.perf_counter()
        scores = judge.score_many(requests, progress=False)
        elapsed = time.perf_counter() - start
    failed = sum(s.failed or s.score is None for s in scores)
    return elapsed, judge, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.1, help="stub latency per request, seconds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, serve_stub(latency_s=args.latency) as stub:
        folder = Path(tmp)
        concurrent_requests = make_requests(args.requests, "concurrent")
        sequential_requests = make_requests(args.requests, "sequential")  # distinct: no cache hits

        t_conc, judge_conc, bad_conc = timed_run(stub.base_url, folder / "c.jsonl", concurrent_requests, args.concurrency)
        peak = stub.max_in_flight
        t_seq, judge_seq, bad_seq = timed_run(stub.base_url, folder / "s.jsonl", sequential_requests, 1)
        before = stub.requests
        t_warm, judge_warm, bad_warm = timed_run(stub.base_url, folder / "c.jsonl", concurrent_requests, args.concurrency)
        warm_http = stub.requests - before

    ratio = t_seq / t_conc
    print(f"stub latency {args.latency * 1000:.0f} ms, {args.requests} distinct requests")
    print(f"concurrent (max_concurrency={args.concurrency}): {t_conc:7.2f} s  calls={judge_conc.stats.calls} "
          f"peak in flight={peak} failures={bad_conc}")
    print(f"sequential (max_concurrency=1):  {t_seq:7.2f} s  calls={judge_seq.stats.calls} failures={bad_seq}")
    print(f"speed-up: {ratio:.1f}x (target >= 10x)")
    print(f"warm cache re-run:                {t_warm:7.3f} s  calls={judge_warm.stats.calls} "
          f"cache_hits={judge_warm.stats.cache_hits} http requests={warm_http} failures={bad_warm}")
    ok = ratio >= 10 and judge_warm.stats.calls == 0 and warm_http == 0 and not (bad_conc or bad_seq or bad_warm)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
