"""How long `validate` takes on a 176-trait experiment: the command (a fresh process) and the check in process.

    .venv/bin/python benchmarks/validate_speed.py               # 5 timings of each
    .venv/bin/python benchmarks/validate_speed.py --repeats 9 --traits 400

The experiment is the one of ``tests/bad_input/test_validate.py:experiment``: 176 traits of 15
pairs (the three real ones and generated ones), the real prompt sets, and models that are only a
config.json (validate reads layer counts there, never weights). It is valid, so each run writes
the marker.

Three timings, each repeated:

- ``python -m stages validate ...`` in a fresh process: what the DVC stage costs (Python start-up,
  the imports of stages/validate.py and the library it uses, then the check);
- the same through the CLI in this process (``typer`` runner, imports already done);
- ``validate_experiment`` alone (the check: params, every section, every trait's files and pair
  counts, prompt sets, layers from config.json).

Printed: median, min and max of each, with the load average before and after.
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

import tests.bad_input.test_validate as generated  # noqa: E402


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def report(label: str, times: list[float], before: str) -> None:
    print(f"{label:<44} x{len(times)}: median {statistics.median(times):6.3f} s  min {min(times):6.3f}  "
          f"max {max(times):6.3f}  load {before} -> {load()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--traits", type=int, default=generated.N_TRAITS)
    args = parser.parse_args()
    generated.N_TRAITS = args.traits

    from typer.testing import CliRunner

    from stages.calibrate_massive_dims import MassiveDimsSettings
    from stages.capture_raw import RawActivationSettings
    from stages.cli import app
    from trait_interp.validation import ExperimentFiles, validate_experiment

    with tempfile.TemporaryDirectory(prefix="validate-speed-") as tmp_name:
        root, params = generated.experiment(Path(tmp_name))
        path = root / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        marker = root / "out/validated"
        cli = ["validate", "--params", str(path), "--traits-root", str(root / "traits"),
               "--prompt-sets-root", str(root / "inference"), "--out", str(marker)]
        print(f"{len(params['traits'])} traits, {len(params['prompt_sets'])} prompt sets; {os.cpu_count()} CPUs",
              flush=True)

        before, times = load(), []
        for _ in range(args.repeats):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "stages", *cli], cwd=REPO, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            assert done.returncode == 0 and marker.read_text() == "valid\n", done.stdout + done.stderr
            marker.unlink()
        report("python -m stages validate (fresh process)", times, before)
        print(f"  its own report: {done.stdout.strip().splitlines()[-1]}")

        runner, before, times = CliRunner(), load(), []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = runner.invoke(app, cli)
            times.append(time.perf_counter() - start)
            assert result.exit_code == 0, result.output
            marker.unlink()
        report("validate command in process (CliRunner)", times, before)

        files = ExperimentFiles(path, root / "traits", root / "inference")
        sections = {"massive_dims": MassiveDimsSettings, "raw_activations": RawActivationSettings}
        before, times = load(), []
        for _ in range(args.repeats):
            start = time.perf_counter()
            checked = validate_experiment(files, stage_sections=sections)
            times.append(time.perf_counter() - start)
            assert checked.ok, checked.problems
        report("validate_experiment in process (the check)", times, before)

        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import stages.validate"], cwd=REPO, check=True)
        print(f"  for scale: `python -c 'import stages.validate'` alone: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
