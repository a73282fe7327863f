"""Benchmark: batched extraction methods over all layers vs today's per-layer scikit-learn probe loop.

Run ``python benchmarks/extraction_speed.py`` (defaults: 80 layers, hidden 8192, n = 200 as
100/100, CPU). Random activations with a planted direction per layer (paired content, a few
std-100 "massive" dims unless ``--no-massive``). Reports:

(a) today's ``trait_interp.extraction.methods.probe`` called layer by layer (scikit-learn lbfgs), over all
    layers, or over ``--reference-layers`` evenly spaced layers scaled linearly (said so);
(b) all five batched methods over all layers (``extract_all_layers`` once per method; median of
    ``--repeats`` passes after a warm-up pass);
(c) each batched method on its own (the parts of (b));
(d) with ``--reference-all K``: today's five per-layer methods on K layers, scaled to all layers;
and the ratio (a)/(b), plus the probe's agreement with (a) (min cosine, train accuracy) and,
on ``--exact-layers`` layers, with scikit-learn run to convergence (tol 1e-10).

Not a test: timings depend on the machine and its load (the load average is printed). On a
machine whose cores are busy with other work, multi-threaded BLAS/LAPACK calls can be much
slower than single-threaded ones (threads wait at barriers for a descheduled sibling);
``--threads N`` sets torch's and scikit-learn's (OpenBLAS, OpenMP) thread counts for the
whole run, the reference included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import threadpoolctl
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from trait_interp.extraction import batched_methods as batched
from trait_interp.extraction import methods  # noqa: E402

METHOD_NAMES = ("probe", "mean_diff", "gradient", "pca", "random_baseline")
MASSIVE_DIMS = (3, 17, 40)
MASSIVE_STD = 100.0




def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"--device cuda: CUDA is not available here (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda or 'none'}); run with --device cpu or on a GPU machine"
        )
    return torch.device(name)


def _activations(n_layers: int, n_pos: int, n_neg: int, hidden: int, massive: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``pos [L, n_pos, hidden]``, ``neg [L, n_neg, hidden]`` float32: per layer its own planted direction and strength."""
    generator = torch.Generator().manual_seed(seed)
    n = max(n_pos, n_neg)
    pos = torch.empty(n_layers, n_pos, hidden)
    neg = torch.empty(n_layers, n_neg, hidden)
    dims = [d for d in MASSIVE_DIMS if d < hidden]
    for layer in range(n_layers):
        u = torch.randn(hidden, generator=generator)  # [hidden]
        u[dims] = 0.0
        u /= u.norm()
        strength = 0.25 + 1.5 * layer / max(1, n_layers - 1)  # weak early, strong late
        content = torch.randn(n, hidden, generator=generator)  # [n, hidden], shared by pair i
        pos[layer] = content[:n_pos] + torch.randn(n_pos, hidden, generator=generator) + strength * u
        neg[layer] = content[:n_neg] + torch.randn(n_neg, hidden, generator=generator) - strength * u
        if massive:
            pos[layer][:, dims] += MASSIVE_STD * torch.randn(n_pos, len(dims), generator=generator)
            neg[layer][:, dims] += MASSIVE_STD * torch.randn(n_neg, len(dims), generator=generator)
    return pos, neg


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reference_probe(
    pos: torch.Tensor, neg: torch.Tensor, settings: methods.MethodSettings, columns: list[int]
) -> tuple[float, dict[int, methods.MethodResult]]:
    """Today's per-layer probe on ``columns`` (CPU): seconds and results."""
    results = {}
    start = time.perf_counter()
    for column in columns:
        results[column] = methods.probe(pos[column], neg[column], settings, column)
    return time.perf_counter() - start, results


def _exact_probe(pos: torch.Tensor, neg: torch.Tensor, settings: methods.MethodSettings) -> tuple[torch.Tensor, float]:
    """scikit-learn's probe fit run to convergence (tol 1e-10), the optimum lbfgs approaches at tol 1e-4:
    activation-space ``w`` and train accuracy."""
    x = torch.cat([pos, neg]).to(torch.float64).numpy()  # [n, hidden]
    y = np.concatenate([np.ones(pos.shape[0]), np.zeros(neg.shape[0])])  # [n]
    if settings.probe_scaling == "row_norm":
        features, back_scale = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8), np.ones(x.shape[1])
    else:
        back_scale = np.maximum(x.std(axis=0), 1e-6)
        features = (x - x.mean(axis=0)) / back_scale
    classifier = LogisticRegression(
        C=settings.probe_c, solver="lbfgs", max_iter=100_000, tol=1e-10, class_weight="balanced", fit_intercept=True
    )
    classifier.fit(features, y)
    return torch.from_numpy(classifier.coef_[0] / back_scale), float(classifier.score(features, y))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def _reference_all(pos: torch.Tensor, neg: torch.Tensor, settings: methods.MethodSettings, columns: list[int]) -> dict[str, float]:
    """Seconds per layer of each of today's per-layer methods, averaged over ``columns``."""
    seconds = {}
    for name in METHOD_NAMES:
        fn = methods.get_method(name)
        start = time.perf_counter()
        for column in columns:
            fn(pos[column], neg[column], settings, column)
        seconds[name] = (time.perf_counter() - start) / len(columns)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=80)
    parser.add_argument("--hidden", type=int, default=8192)
    parser.add_argument("--n", type=int, default=200, help="examples per layer, split evenly (n/2 pos, n/2 neg)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the batched methods run")
    parser.add_argument(
        "--reference-layers", type=int, default=None, help="time today's probe on this many layers and scale (default: all)"
    )
    parser.add_argument("--reference-all", type=int, default=0, help="also time today's five methods on this many layers")
    parser.add_argument("--exact-layers", type=int, default=4, help="layers checked against scikit-learn at tol 1e-10")
    parser.add_argument("--probe-scaling", choices=("row_norm", "standardize"), default="row_norm")
    parser.add_argument("--no-massive", action="store_true", help="no std-100 massive dims in the activations")
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS threads for the whole run")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--repeats", type=int, default=3,
                        help="time the batched methods this many times after one warm-up pass; the median is reported")
    args = parser.parse_args()
    if args.threads is None:
        run(args)
    else:
        torch.set_num_threads(args.threads)
        with threadpoolctl.threadpool_limits(limits=args.threads):
            run(args)


def _time_batched(
    pos: torch.Tensor, neg: torch.Tensor, settings: methods.MethodSettings, device: torch.device, repeats: int = 1
) -> tuple[dict[str, float], dict[str, tuple[torch.Tensor, dict[str, dict[str, float]]]]]:
    """Each batched method over all layers on ``device``: median seconds of ``repeats`` passes and outputs.

    With ``repeats > 1`` a warm-up pass comes first (first-call allocations and page faults of the
    outputs; an extraction stage runs every method once per site, so it pays them once)."""
    import statistics

    pos_d, neg_d = pos.to(device), neg.to(device)
    layers = tuple(range(pos.shape[0]))
    seconds: dict[str, list[float]] = {name: [] for name in METHOD_NAMES}
    outputs = {}
    for attempt in range(repeats + (1 if repeats > 1 else 0)):
        for name in METHOD_NAMES:
            _synchronize(device)
            start = time.perf_counter()
            outputs[name] = batched.extract_all_layers(pos_d, neg_d, name, settings, layers)
            _synchronize(device)
            if repeats == 1 or attempt > 0:
                seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}, outputs


def run(args: argparse.Namespace) -> dict[str, object]:
    device = _device(args.device)
    settings = methods.MethodSettings(probe_scaling=args.probe_scaling)
    n_pos, n_neg = args.n - args.n // 2, args.n // 2

    print(f"data: {args.layers} layers x ({n_pos} pos + {n_neg} neg) x {args.hidden} float32, massive dims: {not args.no_massive}")
    pos, neg = _activations(args.layers, n_pos, n_neg, args.hidden, not args.no_massive, seed=0)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.2f}; batched on {device}")

    # (a) today's per-layer scikit-learn probe, on all layers or an evenly spaced subset
    n_ref = args.layers if args.reference_layers is None else max(1, min(args.reference_layers, args.layers))
    columns = sorted({round(i * (args.layers - 1) / max(1, n_ref - 1)) for i in range(n_ref)})
    ref_seconds, ref_results = _reference_probe(pos, neg, settings, columns)
    reference = ref_seconds * args.layers / len(columns)

    # (b), (c)
    timings, outputs = _time_batched(pos, neg, settings, device, getattr(args, "repeats", 1))
    total = sum(timings.values())

    # (d)
    reference_all: dict[str, float] = {}
    if args.reference_all > 0:
        all_columns = columns[:: max(1, len(columns) // args.reference_all)][: args.reference_all]
        reference_all = _reference_all(pos, neg, settings, all_columns)

    # Agreement of the batched probe with today's, and with scikit-learn run to convergence.
    probe_vectors, probe_info = outputs["probe"]
    cosines = [_cos(probe_vectors[c], ref_results[c].vector) for c in columns]
    accuracy_mismatch = [c for c in columns if probe_info[str(c)]["train_accuracy"] != ref_results[c].info["train_accuracy"]]
    # Half of them where today's train accuracy differs (who is at the optimum?), half evenly spaced.
    spaced = columns[:: max(1, len(columns) // max(1, args.exact_layers))]
    exact_columns = sorted(set(accuracy_mismatch[: args.exact_layers // 2] + spaced[: args.exact_layers - args.exact_layers // 2]))
    exact = {c: _exact_probe(pos[c], neg[c], settings) for c in exact_columns}
    exact_cosines = [_cos(probe_vectors[c], exact[c][0]) for c in exact_columns]
    today_vs_exact = [_cos(ref_results[c].vector, exact[c][0]) for c in exact_columns]
    exact_accuracy_mismatch = [c for c in exact_columns if probe_info[str(c)]["train_accuracy"] != exact[c][1]]
    gradient_info = list(outputs["gradient"][1].values())
    steps = [info["steps"] for info in gradient_info]
    n_converged = int(sum(info["converged"] for info in gradient_info))

    how = "all layers" if len(columns) == args.layers else (
        f"measured on {len(columns)} of {args.layers} layers, scaled x{args.layers / len(columns):.2f}"
    )
    print()
    print(f"{'what':<56}{'seconds':>10}")
    print(f"{'(a) today: methods.probe per layer (' + how + ')':<56}{reference:>10.2f}")
    print(f"{'(b) batched: all five methods, all layers':<56}{total:>10.2f}")
    for name in METHOD_NAMES:
        print(f"{'(c)   ' + name:<56}{timings[name]:>10.2f}")
    print(f"{'ratio (a)/(b)':<56}{reference / total:>10.2f}")
    print(f"{'ratio (a)/(b without gradient)':<56}{reference / (total - timings['gradient']):>10.2f}")
    if reference_all:
        n_all = min(args.reference_all, len(columns))
        today_total = sum(reference_all.values()) * args.layers
        print(f"{f'(d) today: all five per layer (on {n_all} layers, scaled)':<56}{today_total:>10.2f}")
        for name in METHOD_NAMES:
            print(f"{'(d)   ' + name:<56}{reference_all[name] * args.layers:>10.2f}")
        print(f"{'ratio (d)/(b)':<56}{today_total / total:>10.2f}")
    print()
    print(f"probe ({args.probe_scaling}) vs today's methods.probe (lbfgs, tol 1e-4) on {len(columns)} layers: "
          f"min cosine {min(cosines):.9f}; train_accuracy differs at layers {accuracy_mismatch}")
    print(f"probe vs scikit-learn at tol 1e-10 on layers {exact_columns}: min cosine {min(exact_cosines):.12f}, "
          f"train_accuracy differs at layers {exact_accuracy_mismatch} (today's methods.probe vs the same: "
          f"min cosine {min(today_vs_exact):.9f})")
    print(f"gradient: {n_converged}/{args.layers} layers converged, steps min {min(steps):.0f} / max {max(steps):.0f} "
          f"(gradient_max_steps {settings.gradient_max_steps})")

    record = {
        "layers": args.layers,
        "hidden": args.hidden,
        "n_pos": n_pos,
        "n_neg": n_neg,
        "device": str(device),
        "massive_dims": not args.no_massive,
        "probe_scaling": args.probe_scaling,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "reference_probe_seconds": reference,
        "reference_layers_timed": len(columns),
        "batched_total_seconds": total,
        "batched_seconds": timings,
        "ratio": reference / total,
        "reference_all_seconds_per_layer": reference_all,
        "probe_min_cosine_vs_today": min(cosines),
        "probe_train_accuracy_mismatch_layers": accuracy_mismatch,
        "probe_min_cosine_vs_sklearn_tol_1e-10": min(exact_cosines),
        "today_probe_min_cosine_vs_sklearn_tol_1e-10": min(today_vs_exact),
        "probe_train_accuracy_mismatch_vs_sklearn_tol_1e-10": exact_accuracy_mismatch,
        "gradient_steps": steps,
        "gradient_converged_layers": n_converged,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return record


def extraction_rows(device: str, layers: int = 80, hidden: int = 8192, n: int = 200) -> list[dict[str, object]]:
    """The ``python -m benchmarks --only extraction`` row: batched five methods vs today's per-layer probe
    (timed on 8 evenly spaced layers, scaled to all)."""
    args = argparse.Namespace(
        layers=layers, hidden=hidden, n=n, device="cuda" if device.startswith("cuda") else "cpu",
        reference_layers=8, reference_all=0, exact_layers=2, probe_scaling="row_norm", no_massive=False, json=None, repeats=3,
    )
    record = run(args)
    return [{
        "measure": "extraction: per-layer sklearn probe / batched five methods, all layers",
        "shape": f"{layers} layers x {n} x {hidden}",
        "ratio": round(float(record["ratio"]), 2),
        "goal": ">= 5x",
        "batched_seconds": {k: round(v, 2) for k, v in record["batched_seconds"].items()},
        "reference_probe_seconds": round(float(record["reference_probe_seconds"]), 1),
        "probe_min_cosine_vs_sklearn_tol_1e-10": record["probe_min_cosine_vs_sklearn_tol_1e-10"],
    }]


if __name__ == "__main__":
    main()
