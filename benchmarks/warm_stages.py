"""The extraction chain through ``dvc repro``: plain stage processes against ``trait-interp warm``.

    .venv/bin/python benchmarks/warm_stages.py                 # fake Gemma-2, 2 repeats each way
    .venv/bin/python benchmarks/warm_stages.py --keep /tmp/warm --repeats 3

Builds the test suite's offline fake hub (tiny random-weight models with the real architectures and
tokenizers, tests/fake_hub.py) and a project on the gemma-2-2b preset with the suite's CPU overrides
(tests/pipeline/test_real_models.py), reproduces it once, then times ``dvc repro --force
--single-item`` of the five extraction phases (generate, vet, capture, extract, evaluate; each runs every trait),
plain, under ``trait-interp warm`` (its server's start included: the first stages run before it
is up) and under ``warm`` once its server is up (what each later stage of a long run pays), alternating. The models are tiny, so this is the stage
start-up a real run pays on top of its compute: mostly importing torch and transformers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("generate_responses", "vet_responses", "capture_activations", "extract_vectors", "evaluate_vectors")


from stages._stage_server import SERVER_VARIABLE  # noqa: E402 - after the repository is on sys.path

READY_THEN_TIME = f"""
import os, subprocess, sys, time
while not os.path.exists(os.environ[{SERVER_VARIABLE!r}]):
    time.sleep(0.05)
started = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print(time.perf_counter() - started)
"""


def timed(command: list[str], root: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    ran = sum(line.startswith("Running stage") for line in done.stdout.splitlines())
    if ran != len(STAGES):
        raise RuntimeError(f"{' '.join(command)} ran {ran} stages, expected {len(STAGES)}:\n{done.stdout}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="build here and keep it (default: a temp folder)")
    args = parser.parse_args()
    from tests.fake_hub import build_fake_hub, no_network
    from tests.openai_stub import serve_stub
    from tests.pipeline.test_real_models import TRAITS, real_project

    base = args.keep or Path(tempfile.mkdtemp(prefix="warm-stages-"))
    print(f"[warm] fake hub and project under {base} ...", file=sys.stderr, flush=True)
    with no_network():
        hub = build_fake_hub(base / "hub")
    with serve_stub() as judge:
        root = base / "gemma"
        extra = real_project(root, hub.cache_dir, "gemma-2-2b", judge.base_url)
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["layer"] = 2  # the fake Gemma has 4 layers (the preset's 12 is the real one's)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {**os.environ, **extra, "DVC_NO_ANALYTICS": "1", "TRAIT_INTERP_RERUN_TRAITS": "1",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        print("[warm] first dvc repro (every stage, plain) ...", file=sys.stderr, flush=True)
        first = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True)
        if first.returncode != 0:
            raise SystemExit(f"the first dvc repro failed:\n{first.stdout[-3000:]}\n{first.stderr[-3000:]}")
        # --force re-runs each phase, TRAIT_INTERP_RERUN_TRAITS=1 its traits (stages/for_each_trait.py)
        chain = ["dvc", "repro", "--force", "--single-item", *STAGES]
        warm = [sys.executable, "-m", "stages", "warm", "--", *chain]
        # the chain timed inside warm once its server is up: what every later stage of a long run pays
        ready = [sys.executable, "-m", "stages", "warm", "--", sys.executable, "-c", READY_THEN_TIME, *chain]
        plain_s, warm_s, ready_s = [], [], []
        for repeat in range(args.repeats):
            print(f"[warm] repeat {repeat + 1}/{args.repeats}: plain, warm, warm with its server up ...",
                  file=sys.stderr, flush=True)
            plain_s.append(timed(chain, root, env))
            warm_s.append(timed(warm, root, env))
            done = subprocess.run(ready, cwd=root, env=env, capture_output=True, text=True, check=True)
            ready_s.append(float(done.stdout.strip().splitlines()[-1]))
    plain, served, up = (statistics.median(x) for x in (plain_s, warm_s, ready_s))
    runs = len(STAGES) * len(TRAITS)  # each phase runs every trait
    print(f"the extraction chain ({len(STAGES)} phases x {len(TRAITS)} traits, fake Gemma-2, dvc repro --force):")
    print(f"  plain stage processes          {plain:6.1f} s  ({plain / runs:.1f} s a trait run)  runs {plain_s}")
    print(f"  trait-interp warm              {served:6.1f} s  ({served / runs:.1f} s a trait run)  runs {warm_s}"
          f"  ratio {plain / served:.2f}x (its server's start included)")
    print(f"  warm, the server already up    {up:6.1f} s  ({up / runs:.1f} s a trait run)  runs {ready_s}"
          f"  ratio {plain / up:.2f}x")


if __name__ == "__main__":
    main()
