"""Bytes on disk per trait at the 70B shape, by formula, checked against the real files of a tiny 80-layer run.

    .venv/bin/python benchmarks/storage.py
    .venv/bin/python benchmarks/storage.py --examples 300 --prompts 100 --tokens 200

The 70B shape: 80 layers, hidden 8192, k_proj/v_proj 1024 wide (8 KV heads x 128). Per trait:

- activations (capture_activations): ``n_examples x n_layers x sum(site widths) x dtype bytes`` plus
  a safetensors header, the layer indices, examples.csv and meta.json;
- vectors (extract_vectors): per (site, method) ``n_layers x hidden x dtype bytes`` (the stored
  activations' dtype: bf16 by default on a real model) plus the layer indices, a header and the
  JSON sidecar;
- projections (project, per prompt set and monitored model): one Parquet row per (prompt, token,
  layer, trait, method, site), so per trait ``prompts x tokens x monitored layers`` rows, plus the
  dynamics table; bytes per row are measured (Parquet compresses), not derived.

Against the reference layout (design/reference-system.md), in two forms: its payload alone (bf16
residual activations, 300 x 80 x 8192 x 2 bytes, and bf16 vectors, per method 80 x 8192 x 2 bytes),
which favours it; and its files as it writes them, measured: ``train_all_layers.pt`` (torch.save of
the bf16 tensor) with its metadata.json, one ``layer{L}.pt`` per method and layer (torch.save of a 1-D
bf16 tensor) with one metadata.json per method, and one projection JSON per prompt and trait
(section 8.3's format, one vector, compact separators, the floats as Python writes them). The
check builds a tiny Llama with 80 layers (hidden 64, k/v 16 wide) in bf16, captures, extracts and
projects with the library's own writers, and compares each file's size with the formula at that
shape (exact for the tensors; the small files are measured and scaled per layer or per row).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trait_interp.core.forward import TokenSequence  # noqa: E402
from trait_interp.core.positions import parse_position  # noqa: E402
from trait_interp.extraction.activation_store import load_activations, save_activations  # noqa: E402
from trait_interp.extraction.capture import capture_pooled, store_dtype  # noqa: E402
from trait_interp.extraction.extract import ClassSets, extract_layers, mean_norms  # noqa: E402
from trait_interp.extraction.methods import METHODS, MethodSettings  # noqa: E402
from trait_interp.extraction.vectors import (  # noqa: E402
    VectorMetadata,
    VectorSet,
    save_vectors,
    vector_paths,
)
from trait_interp.monitoring.dynamics import dynamics_table  # noqa: E402
from trait_interp.monitoring.projection import (  # noqa: E402
    TraitVector,
    project_sequences,
    to_long_rows,
)

SITES = ("residual", "attn_out", "mlp_out", "attn_contribution", "mlp_contribution", "k_proj", "v_proj")
BIG = {"layers": 80, "hidden": 8192, "kv": 1024}
DTYPE_BYTES = {torch.float32: 4, torch.bfloat16: 2}
GB = 1e9


def widths(hidden: int, kv: int, sites: tuple[str, ...]) -> int:
    return sum(kv if site in ("k_proj", "v_proj") else hidden for site in sites)


def safetensors_bytes(tensors: dict[str, tuple[tuple[int, ...], int]]) -> int:
    """Exact size of a safetensors file: 8 + the JSON header (padded to 8) + the data."""
    offset, header = 0, {}
    for name, (shape, itemsize) in sorted(tensors.items(), key=lambda kv: (-kv[1][1], kv[0])):  # safetensors' order
        size = itemsize
        for n in shape:
            size *= n
        dtype = {2: "BF16", 4: "F32", 8: "I64"}[itemsize]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"))
    return 8 + len(text) + (-len(text) % 8) + offset


def activations_formula(n: int, layers: int, hidden: int, kv: int, sites: tuple[str, ...], itemsize: int) -> int:
    tensors = {site: ((n, layers, kv if site in ("k_proj", "v_proj") else hidden), itemsize) for site in sites}
    tensors["__layers__"] = ((layers,), 8)
    return safetensors_bytes(tensors)


def vectors_formula(layers: int, hidden: int, dtype_bytes: int) -> int:
    return safetensors_bytes({"vectors": ((layers, hidden), dtype_bytes), "layers": ((layers,), 8)})


def reference_files(tmp: Path, tokens: int) -> dict[str, float]:
    """The reference system's own files, written as it writes them (sizes in bytes, measured).

    ``pt_overhead``: torch.save's bytes beyond a bf16 tensor's payload (zip container, pickle);
    ``projection_json``: one per-prompt projection file of one trait (section 8.3), ``tokens``
    tokens split 40 / 60 between prompt and response.
    """
    gen = torch.Generator().manual_seed(0)
    torch.save(torch.randn(4096, generator=gen).to(torch.bfloat16), tmp / "layer0.pt")
    pt_overhead = (tmp / "layer0.pt").stat().st_size - 4096 * 2
    n_prompt = tokens * 2 // 5
    values = torch.randn(4, tokens, generator=gen).tolist()
    norms = (torch.rand(4, generator=gen) * 100).tolist()
    record = {
        "metadata": {"prompt_id": "42", "prompt_set": "jailbreak/original", "n_prompt_tokens": n_prompt,
                     "n_response_tokens": tokens - n_prompt, "multi_vector": True, "n_vectors": 1,
                     "component": "residual", "position": "response[:5]", "centered": False,
                     "projection_date": "2026-12-02T12:00:00"},
        "projections": [{"method": "probe", "layer": 40, "selection_source": "steering", "baseline": norms[0],
                         "prompt": values[0][:n_prompt], "response": values[0][n_prompt:],
                         "token_norms": {"prompt": values[1][:n_prompt], "response": values[1][n_prompt:]}}],
        "activation_norms": {"prompt": norms[2:3], "response": norms[3:4]},
    }
    return {"pt_overhead": pt_overhead, "projection_json": len(json.dumps(record, separators=(",", ":")))}


def tiny_model(layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=512)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval().to(torch.bfloat16)


def check_small_run(tmp: Path, layers: int, n_examples: int) -> dict:
    """Capture, extract and project with a tiny 80-layer bf16 model; file sizes against the formulas."""
    model = tiny_model(layers)
    hidden, kv = 64, 16
    gen = torch.Generator().manual_seed(0)
    sequences = [TokenSequence(tuple(torch.randint(3, 128, (12,), generator=gen).tolist()),
                               tuple(torch.randint(3, 128, (8,), generator=gen).tolist())) for _ in range(n_examples)]
    pooled = capture_pooled(model, sequences, parse_position("response[:5]"), list(SITES), list(range(layers)), 0)
    rows = []
    for label, sites, setting in (("bf16, residual (presets)", ("residual",), "model"),
                                  ("bf16, 7 sites", SITES, "model"),
                                  ("float32, 7 sites (store_dtype: float32)", SITES, "float32")):
        dtype = store_dtype(setting, model)
        path = tmp / f"acts-{len(rows)}.safetensors"
        save_activations(path, {s: pooled.acts[s] for s in sites}, pooled.layers, dtype)
        formula = activations_formula(n_examples, layers, hidden, kv, sites, DTYPE_BYTES[dtype])
        rows.append({"file": f"activations {label}", "bytes": path.stat().st_size, "formula": formula})
    stored = load_activations(tmp / "acts-0.safetensors")
    acts = stored.acts["residual"]
    train = ClassSets(acts[0::2], acts[1::2])
    norms = mean_norms(train, stored.layers)
    sidecar, settings = 0, MethodSettings(gradient_max_steps=200)  # sizes do not depend on convergence
    for method in METHODS:
        vectors, info = extract_layers(train, method, settings, stored.layers)
        meta = VectorMetadata(trait="t", variant="tiny", model="tiny-80", revision=None, adapter=None, site="residual",
                              position="response[:5]", method=method, method_params=asdict(settings),
                              dataset_hash="0" * 64, n_train=len(acts), n_val=0, layers=list(stored.layers),
                              train_metrics=info, activation_norms=norms)
        save_vectors(tmp / "vectors", VectorSet(vectors, meta), dtype=stored.stored_dtype["residual"])  # as extract_vectors does
        tensor_path, json_path = vector_paths(tmp / "vectors", "residual", method)
        rows.append({"file": f"vectors residual/{method}.safetensors (bf16)", "bytes": tensor_path.stat().st_size,
                     "formula": vectors_formula(layers, hidden, DTYPE_BYTES[stored.stored_dtype["residual"]])})
        sidecar += json_path.stat().st_size
    # projections: 10 traits at one layer each (monitoring.layer: best), 20 prompts x 20 tokens
    traits = [f"cat/trait{i}" for i in range(10)]
    vectors = [TraitVector(t, "probe", "residual", 40, torch.randn(hidden, generator=gen)) for t in traits]
    result = project_sequences(model, sequences[:20], vectors, 0, batch_size=8)
    tokens = [[f"tok{t}" for t in s.ids] for s in sequences[:20]]
    table = to_long_rows(result, [f"prompt-{i:03d}" for i in range(20)], sequences[:20], tokens, vectors)
    table.to_parquet(tmp / "projections.parquet", index=False)
    dyn, commit = dynamics_table(table, 5, 0.5)
    dyn.to_parquet(tmp / "dynamics.parquet", index=False)
    commit.to_csv(tmp / "commitment.csv", index=False)
    return {"rows": rows, "sidecar_per_layer": sidecar / len(METHODS) / layers,
            "projection_rows": len(table), "projection_bytes": (tmp / "projections.parquet").stat().st_size,
            "dynamics_bytes": (tmp / "dynamics.parquet").stat().st_size + (tmp / "commitment.csv").stat().st_size,
            "traits": len(traits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=300, help="examples per trait (the reference: 300)")
    parser.add_argument("--prompts", type=int, default=100, help="prompts per prompt set")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per prompt (prompt + response)")
    parser.add_argument("--methods", type=int, default=len(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    with tempfile.TemporaryDirectory(prefix="storage-") as tmp_name:
        check = check_small_run(Path(tmp_name), BIG["layers"], 30)
        reference_measured = reference_files(Path(tmp_name), args.tokens)
    print(f"check: a tiny Llama with {BIG['layers']} layers (hidden 64, k/v 16), bf16, 30 examples")
    print(f"{'file':<46} {'bytes':>9} {'formula':>9}")
    for row in check["rows"]:
        flag = "exact" if row["bytes"] == row["formula"] else f"off by {row['bytes'] - row['formula']}"
        print(f"{row['file']:<46} {row['bytes']:>9} {row['formula']:>9}  {flag}")
    per_row = check["projection_bytes"] / check["projection_rows"]
    dyn_per_row = check["dynamics_bytes"] / check["projection_rows"]
    print(f"vector sidecar (.json): {check['sidecar_per_layer']:.0f} bytes per layer; projections.parquet: "
          f"{per_row:.1f} bytes per row ({check['projection_rows']} rows, {check['traits']} traits); "
          f"dynamics.parquet + commitment.csv: {dyn_per_row:.1f} bytes per projection row")

    L, H, KV = BIG["layers"], BIG["hidden"], BIG["kv"]
    n = args.examples
    reference_acts = n * L * H * 2
    reference_vectors = args.methods * L * H * 2
    reference = reference_acts + reference_vectors
    small = 30_000  # examples.csv (~60 bytes a row) and meta.json, at most
    acts = {  # label -> (activation bytes, vector dtype bytes)
        "default (presets: residual, store_dtype: model = bf16)": (activations_formula(n, L, H, KV, ("residual",), 2), 2),
        "residual, store_dtype: float32": (activations_formula(n, L, H, KV, ("residual",), 4), 4),
        "params.yaml's 7 sites, bf16": (activations_formula(n, L, H, KV, SITES, 2), 2),
        "params.yaml's 7 sites, float32 (before)": (activations_formula(n, L, H, KV, SITES, 4), 4),
    }
    rows_per_set = args.prompts * args.tokens  # one monitored layer per trait (monitoring.layer: best)
    projections = rows_per_set * (per_row + dyn_per_row)
    print(f"\n70B shape ({L} layers, hidden {H}, k/v {KV}), {n} examples per trait, {args.methods} methods; "
          f"projections per prompt set of {args.prompts} prompts x {args.tokens} tokens, one layer per trait")
    print(f"reference layout (bf16 residual activations, {n} examples, + {args.methods} bf16 vectors): "
          f"{reference_acts / GB:.3f} + {reference_vectors / GB:.4f} = {reference / GB:.3f} GB per trait")
    print(f"{'per trait':<56} {'activations':>12} {'vectors':>9} {'proj./set':>10} {'total':>9} {'x ref':>7}")
    totals = {}  # label -> bytes per trait
    for label, (size, vector_bytes) in acts.items():
        vectors = args.methods * (vectors_formula(L, H, vector_bytes) + check["sidecar_per_layer"] * L)
        totals[label] = total = size + small + vectors + projections
        print(f"{label:<56} {size / GB:>10.3f}GB {vectors / GB:>7.4f}GB {projections / GB:>8.4f}GB "
              f"{total / GB:>7.3f}GB {total / reference:>7.3f}")
    print(f"activations alone vs the reference's: {acts[next(iter(acts))][0] / reference_acts:.4f}; "
          f"vector payload alone: {vectors_formula(L, H, 2) / (L * H * 2):.4f}")

    # The reference's files as written: its .pt containers, metadata and per-prompt projection JSON.
    metadata_json = 1_000  # extraction metadata.json (one) and one per method: a few hundred bytes each
    files_acts = reference_acts + reference_measured["pt_overhead"] + metadata_json
    files_vectors = args.methods * (L * (H * 2 + reference_measured["pt_overhead"]) + metadata_json)
    files_projections = args.prompts * reference_measured["projection_json"]
    files_total = files_acts + files_vectors + files_projections
    print(f"\nreference layout as written (measured files): activations {files_acts / GB:.3f} GB, vectors "
          f"{files_vectors / GB:.4f} GB ({L} layer{{L}}.pt per method, {reference_measured['pt_overhead']:.0f} "
          f"bytes of torch.save each), projections {files_projections / GB:.4f} GB per set "
          f"({reference_measured['projection_json']:.0f} bytes of JSON per prompt) = {files_total / GB:.3f} GB per trait")
    for label, total in totals.items():
        print(f"  {label:<54} x reference as written: {total / files_total:.3f}")


if __name__ == "__main__":
    main()
