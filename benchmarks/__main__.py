"""``python -m benchmarks``: the issue's speed measures in one run, as a table and as JSON.

Random-weight models built from real configs (``--shape toy|gemma-2-2b|llama-3.1-8b``: the compute of
the real model, no weights), on ``--device cpu|cuda``. ``--layers N`` keeps the first N blocks (a
CPU cannot run a full 8B forward at batch 16 x 256 in reasonable time). ``--only`` picks measures.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MEASURES = ("extraction", "capture", "projection", "load", "sweep", "gating", "startup")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def machine(device: str) -> str:
    cpu = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)} ({cpu})"
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--shape", default="toy", choices=("toy", "gemma-2-2b", "llama-3.1-8b"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=tuple(DTYPES), help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--layers", type=int, default=None, help="keep the first N decoder blocks")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(MEASURES), help=f"comma-separated: {', '.join(MEASURES)}")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    from benchmarks.shapes import shape_config

    dtype = DTYPES[args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")]
    shape = shape_config(args.shape, args.layers)
    rows = []
    for name in [m.strip() for m in args.only.split(",") if m.strip()]:
        started = time.perf_counter()
        print(f"[{name}] running ...", file=sys.stderr, flush=True)
        if name == "capture":
            from benchmarks.forward_costs import capture_overhead

            rows.append(capture_overhead(shape, args.device, dtype, args.batch, args.seq, args.repeats))
        elif name == "projection":
            from benchmarks.forward_costs import projection_overhead

            rows.append(projection_overhead(shape, args.device, dtype, args.batch, args.seq - args.new_tokens,
                                            args.new_tokens, args.repeats))
        elif name == "load":
            from benchmarks.model_load import load_share

            rows.append(load_share(shape, args.device, dtype, n_examples=80, prompt=min(args.seq, 64)))
        elif name == "extraction":
            from benchmarks.extraction_speed import extraction_rows

            rows.extend(extraction_rows(args.device))
        elif name == "sweep":
            from benchmarks.sweep_speed import sweep_rows

            rows.extend(sweep_rows(args.device))
        elif name == "gating":
            from benchmarks.gating_speed import gating_overhead

            rows.append(gating_overhead(shape, args.device, dtype, args.batch, min(args.seq, 64), min(args.new_tokens, 32),
                                        args.repeats))
        elif name == "startup":
            from benchmarks.startup import startup_rows

            rows.extend(startup_rows())
        else:
            parser.error(f"unknown measure {name!r}; use {', '.join(MEASURES)}")
        print(f"[{name}] {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    result = {"machine": machine(args.device), "device": args.device, "rows": rows}
    for row in rows:
        ratio = row.get("ratio", row.get("speedup", row.get("load_share")))
        print(f"{row['measure']:<78} {row['shape'][:60]:<60} {ratio!s:>8}  goal {row['goal']}")
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
