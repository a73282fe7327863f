"""DVC's own cost of other pipeline layouts at 173 traits, measured before any is built.

    .venv/bin/python benchmarks/scale_layouts.py                         # every layout, 173 traits
    .venv/bin/python benchmarks/scale_layouts.py --layouts per-phase --traits 50 --keep /tmp/layouts

Why: ``benchmarks/scale.py`` times this project's own dvc.yaml at 173 traits (7 stages per trait,
1238 stages). Its profile splits the time between DVC's per-stage work (building the index from
dvc.yaml and dvc.lock; in ``dvc repro`` the read/write lock around every stage) and its per-reference
work (hashing every dep and out of every stage, each file again at each reference). This script
builds synthetic projects with the same artifacts per trait (the same files, folders, deps and outs
as today's stages) grouped into stages in other ways, fills them with fake stage work (each stage
writes its outs from a hash of its deps; DVC hashes and commits each, and dvc.lock is written once,
as ``benchmarks/scale.py`` fills), and times ``dvc status`` and an up-to-date ``dvc repro``:

- ``today``: today's 7 per-trait stages (the calibration against ``scale.py``'s real dvc.yaml);
- ``coarse-5``: vet + capture and extract + evaluate merged (5 per trait; steering and sweep apart);
- ``coarse-3``: also generate apart, steering + sweep merged (3 per trait);
- ``per-phase``: one stage per phase over every trait (7 stages; the per-trait incrementality would
  move into the stage), each phase one folder out holding every trait's files;
- ``per-phase-one-file``: the same with one file per trait and phase.

Every layout also has 20 all-trait stages reading two top-level folders each, as this project's
analyses, monitoring and report do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from scale import commit_fake_stages  # this folder is on sys.path when the script runs

BIN = Path(sys.executable).parent
ANALYSES = 20
LAYOUTS = ("today", "coarse-5", "coarse-3", "per-phase", "per-phase-one-file")

# artifact -> (path under out/ with {t} for the trait, the files of a folder artifact or None for a file)
ARTIFACTS: dict[str, tuple[str, list[str] | None]] = {
    "responses": ("extraction/{t}/responses.jsonl", None),
    "vetting": ("extraction/{t}/vetting.jsonl", None),
    "vet_cache": ("judge_cache/vet_responses/{t}.jsonl", None),
    "vet_metrics": ("metrics/vetting/{t}.json", None),
    "activations": ("extraction/{t}/activations", ["residual.safetensors", "examples.csv", "meta.json"]),
    "vectors": ("extraction/{t}/vectors", [f"residual/{m}.{x}" for m in ("probe", "mean_diff", "gradient", "pca", "random_baseline") for x in ("safetensors", "json")]),
    "evaluation": ("extraction/{t}/evaluation.csv", None),
    "plot_accuracy": ("plots/val_accuracy/{t}.csv", None),
    "plot_effect": ("plots/cohens_d/{t}.csv", None),
    "extraction_metrics": ("metrics/extraction/{t}.json", None),
    "sweep_results": ("sweep/{t}/results.csv", None),
    "sweep_responses": ("sweep/{t}/responses.jsonl", None),
    "best_layers": ("sweep/{t}/best_layers.json", None),
    "sweep_cache": ("judge_cache/steering_sweep/{t}.jsonl", None),
    "sweep_plot": ("plots/sweep/{t}.csv", None),
    "sweep_metrics": ("metrics/sweep/{t}.json", None),
    "steering_responses": ("steering/{t}/responses.jsonl", None),
    "best": ("steering/{t}/best.json", None),
    "steering_cache": ("judge_cache/steering_eval/{t}.jsonl", None),
    "steering_plot": ("plots/steering/{t}.csv", None),
    "steering_metrics": ("metrics/steering/{t}.json", None),
    "headline": ("metrics/summary/{t}.json", None),
}
DATASET_FILES = ("positive.txt", "negative.txt", "definition.txt", "steering.json")
SHARED = ("models/extraction.json", "models/application.json", "models/judge.json", "datasets/neutral.json")

# today's per-trait stages: (dataset files, shared files, artifacts read, artifacts written)
STAGES: dict[str, tuple[list[str], list[str], list[str], list[str]]] = {
    "generate_responses": (["positive.txt", "negative.txt"], ["models/extraction.json"], [], ["responses"]),
    "vet_responses": (["definition.txt"], ["models/judge.json"], ["responses"], ["vetting", "vet_cache", "vet_metrics"]),
    "capture_activations": ([], ["models/extraction.json"], ["responses", "vetting"], ["activations"]),
    "extract_vectors": ([], [], ["activations"], ["vectors"]),
    "evaluate_vectors": ([], [], ["activations", "vectors"], ["evaluation", "plot_accuracy", "plot_effect", "extraction_metrics"]),
    "steering_sweep": (["steering.json", "definition.txt"], ["datasets/neutral.json", "models/application.json", "models/judge.json"],
                       ["vectors"], ["sweep_results", "sweep_responses", "best_layers", "sweep_cache", "sweep_plot", "sweep_metrics"]),
    "steering_eval": (["steering.json", "definition.txt"], ["models/application.json", "models/judge.json"],
                      ["vectors", "evaluation", "best_layers"],
                      ["steering_responses", "best", "steering_cache", "steering_plot", "steering_metrics", "headline"]),
}
MERGES = {
    "today": [[name] for name in STAGES],
    "coarse-5": [["generate_responses"], ["vet_responses", "capture_activations"], ["extract_vectors", "evaluate_vectors"],
                 ["steering_sweep"], ["steering_eval"]],
    "coarse-3": [["generate_responses"], ["vet_responses", "capture_activations", "extract_vectors", "evaluate_vectors"],
                 ["steering_sweep", "steering_eval"]],
}

WRITER = """import json, sys
from pathlib import Path
sys.path.insert(0, {bench!r})
from scale_layouts import write_outs
write_outs(json.loads(Path("spec.json").read_text())[sys.argv[1]], Path("."))
"""


def write_outs(stage: dict, root: Path) -> None:
    """A fake stage: every out written from a hash of the stage's name and its deps' content."""
    import hashlib

    digest = hashlib.sha256(stage["name"].encode())
    for dep in (root / d for d in stage["deps"]):
        for path in sorted(dep.rglob("*")) if dep.is_dir() else [dep]:
            if path.is_file():
                digest.update(path.read_bytes())
    for out, files in stage["outs"]:
        for name in files if files is not None else [""]:
            path = root / out / name if name else root / out
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(digest.hexdigest() + str(path.relative_to(root)))


def _merged(names: list[str]) -> tuple[list[str], list[str], list[str], list[str]]:
    """The union of some stages' inputs and outputs, minus what one of them writes for another."""
    datasets, shared, reads, writes = [], [], [], []
    for name in names:
        d, s, r, w = STAGES[name]
        datasets += [x for x in d if x not in datasets]
        shared += [x for x in s if x not in shared]
        reads += [x for x in r if x not in reads]
        writes += w
    return datasets, shared, [r for r in reads if r not in writes], writes


def per_trait_layout(layout: str, traits: list[str]) -> dict[str, dict]:
    """Stages of one trait each (``name@trait``), grouped as ``MERGES[layout]``."""
    stages = {}
    for group in MERGES[layout]:
        name = "+".join(group)
        datasets, shared, reads, writes = _merged(group)
        for trait in traits:
            deps = [f"stage_inputs/{name}.json", *(f"datasets/traits/{trait}/{f}" for f in datasets), *shared,
                    *(f"out/{ARTIFACTS[a][0].format(t=trait)}" for a in reads)]
            outs = [[f"out/{ARTIFACTS[a][0].format(t=trait)}", ARTIFACTS[a][1]] for a in writes]
            stages[f"{name}@{trait}"] = {"deps": deps, "outs": outs}
    folders = ["out/extraction", "out/steering", "out/sweep", "out/metrics", "out/plots"]
    return _with_analyses(stages, folders)


def per_phase_layout(traits: list[str], one_file: bool) -> dict[str, dict]:
    """One stage per phase over every trait; a phase's outputs in its own folder, per trait inside."""
    stages = {}
    writer_of = {a: name for name, (_, _, _, writes) in STAGES.items() for a in writes}
    for name, (_, shared, reads, writes) in STAGES.items():
        files = []
        for artifact in writes[:1] if one_file else writes:
            path, folder_files = ARTIFACTS[artifact]
            base = Path(path).name
            files += [f"{base}/{f}" for f in folder_files] if folder_files and not one_file else [base]
        deps = [f"stage_inputs/{name}.json", "datasets/traits", *shared,
                *sorted({f"out/{writer_of[a]}" for a in reads})]
        outs = [[f"out/{name}", [f"{trait}/{f}" for trait in traits for f in files]]]
        stages[name] = {"deps": deps, "outs": outs}
    return _with_analyses(stages, [f"out/{name}" for name in STAGES])


def _with_analyses(stages: dict[str, dict], folders: list[str]) -> dict[str, dict]:
    for k in range(ANALYSES):
        reads = [folders[k % len(folders)], folders[(k + 2) % len(folders)]]
        stages[f"analysis{k}"] = {"deps": reads, "outs": [[f"out/analyses/{k}.json", None]]}
    return stages


def build(root: Path, layout: str, n_traits: int) -> dict[str, dict]:
    """Write the project: datasets, shared files, stage_inputs, write.py, spec.json and dvc.yaml."""
    traits = [f"generated{i // 20}/trait{i}" for i in range(n_traits)]
    for trait in traits:
        folder = root / "datasets" / "traits" / trait
        folder.mkdir(parents=True)
        for name in DATASET_FILES:
            (folder / name).write_text(f"{trait} {name}\n" * 15)
    for shared in SHARED:
        (root / shared).parent.mkdir(parents=True, exist_ok=True)
        (root / shared).write_text(shared)
    if layout.startswith("per-phase"):
        stages = per_phase_layout(traits, one_file=layout.endswith("one-file"))
    else:
        stages = per_trait_layout(layout, traits)
    (root / "stage_inputs").mkdir()
    for name in {name.split("@")[0] for name in stages}:
        (root / "stage_inputs" / f"{name}.json").write_text(name)
    stages = {name.replace("+", "-").replace("@", "-at-").replace("/", "-"): stage for name, stage in stages.items()}
    for name, stage in stages.items():
        stage["name"] = name
    (root / "write.py").write_text(WRITER.replace("{bench!r}", repr(str(Path(__file__).resolve().parent))))
    (root / "spec.json").write_text(json.dumps(stages))
    dvc_yaml = {name: {"cmd": f"python write.py {name}", "deps": stage["deps"], "outs": [out for out, _ in stage["outs"]]}
                for name, stage in stages.items()}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": dvc_yaml}, sort_keys=False, width=10**6))
    return stages


def run(root: Path, *args: str) -> float:
    """Wall seconds of a command in ``root``; a DVC command must also find everything up to date."""
    environ = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    done = subprocess.run(args, cwd=root, env=environ, capture_output=True, text=True, timeout=7200)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed in {root}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    if args[0] == "dvc" and args[1] in ("status", "repro") and "up to date" not in done.stdout:
        raise SystemExit(f"{' '.join(args)} in {root} found work to do after the fill:\n{done.stdout[-2000:]}")
    return seconds


def measure(root: Path, layout: str, n_traits: int, repeats: int) -> dict:
    stages = build(root, layout, n_traits)
    run(root, "git", "init", "-q")
    run(root, "dvc", "init", "-q")
    print(f"{layout}: {len(stages)} stages; filling (fake stages, hashed and committed by DVC) ...", flush=True)
    _, fill_seconds = commit_fake_stages(root, lambda name: write_outs(stages[name], root))
    references = sum(len(stage["deps"]) + len(stage["outs"]) for stage in stages.values())
    files = sum(1 for path in (root / "out").rglob("*") if path.is_file() and path.name != ".gitignore")
    result = {"layout": layout, "stages": len(stages), "deps_and_outs": references, "output_files": files,
              "fill_s": round(fill_seconds, 1)}
    for key, command in (("status_s", ("dvc", "status")), ("repro_s", ("dvc", "repro"))):
        seconds = [run(root, *command) for _ in range(repeats)]
        result[key] = round(statistics.median(seconds), 2)
        result[key.replace("_s", "_all")] = [round(s, 2) for s in seconds]
    result["load"] = round(os.getloadavg()[0], 2)
    print(f"  {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traits", type=int, default=173)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of {', '.join(LAYOUTS)}")
    parser.add_argument("--keep", type=Path, help="build the projects under this (new) folder and keep them")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    layouts = args.layouts.split(",")
    unknown = [layout for layout in layouts if layout not in LAYOUTS]
    if unknown:
        parser.error(f"--layouts: unknown {', '.join(unknown)}; choose from {', '.join(LAYOUTS)}")
    print(f"{args.traits} traits; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as scratch:
        base = args.keep or Path(scratch)
        results = []
        for layout in layouts:
            root = base / layout
            root.mkdir(parents=True, exist_ok=False)
            results.append(measure(root, layout, args.traits, args.repeats))
    print(f"\n{'layout':<20} {'stages':>7} {'deps+outs':>10} {'files':>6} {'dvc status':>11} {'dvc repro':>10}")
    for r in results:
        print(f"{r['layout']:<20} {r['stages']:>7} {r['deps_and_outs']:>10} {r['output_files']:>6} "
              f"{r['status_s']:>9.2f} s {r['repro_s']:>8.2f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
