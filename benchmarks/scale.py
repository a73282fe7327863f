"""DVC at real scale: `dvc status` and `dvc repro` on a copy of this project with 173 traits.

    .venv/bin/python benchmarks/scale.py                     # 173 traits, 5 timings of each
    .venv/bin/python benchmarks/scale.py --traits 50 --repeats 3 --keep /tmp/scale   # keep the project
    .venv/bin/python benchmarks/scale.py --project /tmp/scale/project --skip-fill     # time a kept one again
    .venv/bin/python benchmarks/scale.py --profile /tmp/status.prof   # also cProfile one `dvc status`

What it builds: this repository's files (as git sees them, without experiment outputs) in a fresh
git repo, with ``traits:`` in params.yaml set to the three real traits plus generated ones
(``generated<k>/trait<i>``: 15 pairs each, a definition and steering questions, the shape of
``datasets/traits/behavior/refusal``). Every other param is the project's own (toy world, two monitor
models, two prompt sets, the analyses), so the stage count is what 173 traits give this dvc.yaml.

How dvc.lock is filled without the real stages: `dvc repro` runs with a fake ``python`` first on
PATH. For ``python -m stages ...`` it looks the command up in a plan written from DVC's own index
(the stage's outs and deps) and writes every declared out: the validate marker is constant (as the
real one), every other out holds a hash of the stage's command and the content of its deps, so an
edit upstream changes the outs downstream as real stages would (and DVC decides what re-runs from
its own hashes, as always). Folder outs get one file, plus the files that other stages depend on
inside them (``models/resolved/<model>.json``). So the timings are DVC's own work at this stage
count (parsing dvc.yaml/dvc.lock, hashing deps and outs, the graph, writing dvc.lock), with ~0 s of
stage work: what `dvc status` and an up-to-date `dvc repro` cost, and the DVC overhead of a repro
after one trait is edited (the fake stages themselves take ~0.1 s each, reported apart).

Reported: the stage count; `dvc status` (up to date) and `dvc repro` (up to date) x repeats, median
and max; then `--edits` times: one trait's positive.txt edited, `dvc repro`, the stages it ran
checked against the expected set (validate, that trait's per-trait stages, the all-trait stages),
and the edit reverted (its repro restores the lock). Load averages before and after each block.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PER_TRAIT = ("generate_responses", "vet_responses", "capture_activations", "extract_vectors", "evaluate_vectors",
             "steering_sweep", "steering_eval")  # the phases: one stage each over every trait (stages/for_each_trait.py)
# files a fake trait run writes into a folder output: as many as the real toy run writes
FOLDER_FILES = {"activations": ["residual.safetensors", "examples.csv", "meta.json"],
                "vectors": [f"residual/{m}.{x}" for m in ("probe", "mean_diff", "gradient", "pca", "random_baseline")
                            for x in ("safetensors", "json")]}
FILE_SUFFIXES = {".json", ".jsonl", ".csv", ".parquet", ".txt", ".safetensors"}

FAKE_PYTHON = """#!{python}
# A stand-in for `python -m stages <command> ...` (benchmarks/scale.py): writes the stage's outs.
import json, os, sys
argv = sys.argv[1:]
if argv[:2] != ["-m", "stages"]:
    os.execv({python!r}, [{python!r}, *argv])
sys.path.insert(0, {bench!r})
from scale import fake_stage
from pathlib import Path
fake_stage(json.loads(Path(os.environ["SCALE_PLAN"]).read_text())[json.dumps(argv)])
"""


def _digest(h, path: Path) -> None:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and "__pycache__" not in child.parts and child.suffix != ".pyc":
                h.update(str(child.relative_to(path)).encode())
                h.update(child.read_bytes())
    elif path.is_file():
        h.update(path.read_bytes())


def fake_trait_run(argv: list[str], fork: bool = False) -> int:
    """One trait of a phase (stages/for_each_trait.py runs it): its outputs from a hash of its argv and inputs."""
    import hashlib

    from stages import for_each_trait as runner

    stage = runner.stage_main(argv[0])
    pairs = runner.option_pairs(argv[1:], argv[0])
    h = hashlib.sha256(json.dumps(argv).encode())
    for option, value in sorted(pairs.items()):
        if option not in stage.TRAIT_OUTPUTS and option != "params":
            _digest(h, Path(value))
    for option in stage.TRAIT_OUTPUTS:
        path = Path(pairs[option])
        files = FOLDER_FILES.get(path.parent.name) if not path.suffix else None
        for file in [path / name for name in files] if files else [path]:
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(h.hexdigest() + "\n")
    return 0


def fake_phase(argv: list[str], cwd: Path) -> None:
    """A phase stage: the real runner (its record, its per-trait digests and skips), each trait's run faked."""
    if str(cwd.resolve()) not in sys.path:
        sys.path.insert(0, str(cwd.resolve()))  # the project's own stages/
    from stages import for_each_trait as runner
    from stages.cli import app

    runner.run_trait, runner.can_fork = fake_trait_run, lambda: False
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        app(args=argv, prog_name="trait-interp", standalone_mode=False)
    finally:
        os.chdir(previous)


def fake_stage(stage: dict, cwd: Path = Path(".")) -> None:
    """Write a stage's outs: the validate marker constant, else a hash of its command and its deps' content."""
    import hashlib

    argv = json.loads(stage["key"])
    if argv[2] == "for-each-trait":
        fake_phase(argv[2:], cwd)
        return

    h = hashlib.sha256(stage["key"].encode())
    for dep in stage["deps"]:
        _digest(h, cwd / dep)
    content = "valid\n" if stage["constant"] else h.hexdigest() + "\n"
    for out in stage["outs"]:
        path = cwd / out["path"]
        if out["dir"]:
            if path.is_dir() and not out.get("persist"):
                shutil.rmtree(path)
            for name in out["files"]:
                (path / name).parent.mkdir(parents=True, exist_ok=True)
                (path / name).write_text(content)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)


def env(extra_path: Path | None = None, plan: Path | None = None) -> dict[str, str]:
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    if extra_path:
        path = f"{extra_path}{os.pathsep}{path}"
    out = {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "bench",
           "GIT_AUTHOR_EMAIL": "bench@localhost", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    if plan:
        out["SCALE_PLAN"] = str(plan)
    return out


CPU_SECONDS: list[float] = []  # user + sys of each command run by sh(), the last one last


def sh(args: list[str], cwd: Path, environ: dict[str, str] | None = None) -> tuple[float, str]:
    """Run a command; (wall seconds, output). Its CPU seconds (children's user + sys) go to CPU_SECONDS."""
    if args[0] == "dvc":
        args = [str(BIN / "dvc"), *args[1:]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=environ or env(), capture_output=True, text=True, timeout=7200)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_SECONDS.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return seconds, done.stdout + done.stderr


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def stages_run(output: str) -> set[str]:
    """DVC's stages run, and each phase's trait runs as ``<stage>@<trait>``."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith(("Running stage", "Running trait"))}


# --- the project ------------------------------------------------------------------------------------

def write_trait(root: Path, name: str, pairs: int = 15) -> None:
    folder = root / "datasets/traits" / name
    folder.mkdir(parents=True)
    (folder / "positive.txt").write_text("".join(f"A {name} scenario, side one, number {i}.\n" for i in range(pairs)))
    (folder / "negative.txt").write_text("".join(f"A {name} scenario, side two, number {i}.\n" for i in range(pairs)))
    (folder / "definition.txt").write_text(f"How strongly the answer shows the generated trait {name}.\n")
    (folder / "steering.json").write_text(json.dumps({"questions": [f"Question {i} for {name}?" for i in range(8)]},
                                                     indent=2) + "\n")


def build(root: Path, n_traits: int) -> list[str]:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        if rel.startswith("experiments/") or rel == "dvc.lock" or not (REPO / rel).is_file():
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    params = yaml.safe_load((root / "params.yaml").read_text())
    real = list(params["traits"])
    names = [*real, *(f"generated{i // 20}/trait{i:03d}" for i in range(n_traits - len(real)))]
    for name in names[len(real):]:
        write_trait(root, name)
    text = (root / "params.yaml").read_text()
    block = "traits:\n" + "".join(f"  - {n}\n" for n in real)
    assert block in text, "params.yaml's traits: block has moved; update benchmarks/scale.py"
    (root / "params.yaml").write_text(text.replace(block, "traits:\n" + "".join(f"  - {n}\n" for n in names)))
    sh(["git", "init", "-q"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "scale benchmark"], root)
    return names


def write_plan(root: Path, plan_path: Path) -> int:
    """The fake stages' plan, from DVC's own index: command -> deps, outs (folders and the files needed in them)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = list(repo.index.stages)
        dep_paths = [d.def_path for s in stages for d in s.deps]
        plan = {}
        for stage in stages:
            outs = []
            for out in stage.outs:
                path = out.def_path
                inside = sorted({d[len(path) + 1:] for d in dep_paths if d.startswith(path + "/")})
                is_dir = bool(inside) or Path(path).suffix not in FILE_SUFFIXES and Path(path).name != "validated"
                outs.append({"path": path, "dir": is_dir, "files": inside or (["data.txt"] if is_dir else []),
                             "persist": bool(out.persist)})
            key = json.dumps(shlex.split(stage.cmd)[1:])
            plan[key] = {"key": key, "name": stage.name, "deps": [d.def_path for d in stage.deps],
                         "outs": outs, "constant": stage.name == "validate"}
    plan_path.write_text(json.dumps(plan))
    return len(stages)


def fill(root: Path, plan_path: Path) -> tuple[int, float]:
    """dvc.lock for every stage of ``plan_path``'s plan without `dvc repro` (see ``commit_fake_stages``)."""
    plan = {entry["name"]: entry for entry in json.loads(plan_path.read_text()).values()}
    return commit_fake_stages(root, lambda name: fake_stage(plan[name], root))


def commit_fake_stages(root: Path, write_stage: Callable[[str], None]) -> tuple[int, float]:
    """dvc.lock for every stage without `dvc repro`: ``write_stage(name)`` runs each fake stage in
    dependency order here, then DVC hashes and commits it (as a repro does after running it), and
    dvc.lock is written once. Returns the stage count and the seconds it took.

    (`dvc repro` of the same fake stages gives the same dvc.lock but rewrites it after every stage,
    which at ~1000 stages takes an hour on 2 loaded cores.)"""
    import networkx as nx
    from dvc.repo import Repo

    start, cwd = time.perf_counter(), os.getcwd()
    os.chdir(root)  # DVC's run cache resolves paths from the working directory
    try:
        with Repo(str(root)) as repo, repo.lock:
            graph = repo.index.graph
            order = list(reversed(list(nx.topological_sort(graph))))  # edges: stage -> the stages it needs
            for stage in order:
                write_stage(stage.name)
                stage.save()
                stage.commit()
            order[0].dvcfile._lockfile.dump_stages(order)
    finally:
        os.chdir(cwd)
    return len(order), time.perf_counter() - start


def fake_bin(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "python"
    shim.write_text(FAKE_PYTHON.replace("{python}", sys.executable).replace("{python!r}", repr(sys.executable))
                    .replace("{bench!r}", repr(str(Path(__file__).resolve().parent))))
    shim.chmod(0o755)
    return folder


# --- timings -----------------------------------------------------------------------------------------

def timed(label: str, args: list[str], root: Path, environ: dict[str, str], repeats: int, check) -> list[float]:
    before = load()
    times, cpu = [], []
    for _ in range(repeats):
        seconds, text = sh(args, root, environ)
        check(text)
        times.append(seconds)
        cpu.append(CPU_SECONDS[-1])
    print(f"{label:<34} x{repeats}: median {statistics.median(times):6.2f} s  min {min(times):6.2f}  "
          f"max {max(times):6.2f}  [{' '.join(f'{t:.2f}' for t in times)}]  CPU median {statistics.median(cpu):.2f} s"
          f"  load {before} -> {load()}", flush=True)
    return times


def expected_after_edit(root: Path, trait: str) -> set[str]:
    """validate, the phases and every stage downstream of them (all-trait stages), and the trait's own runs."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        import networkx as nx

        graph = repo.index.graph
        by_name = {s.name: s for s in graph.nodes}
        start = [by_name["generate_responses"]]
        # graph edges point from a stage to the stages it depends on
        found = set()
        for node in start:
            found |= {s.name for s in nx.ancestors(graph, node)} | {node.name}
    return found | {"validate"} | {f"{s}@{trait}" for s in PER_TRAIT}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traits", type=int, default=173)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--edits", type=int, default=3, help="edit one trait and repro, this many times")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (else a temp folder)")
    parser.add_argument("--project", type=Path, help="time an already built project (with --skip-fill)")
    parser.add_argument("--skip-fill", action="store_true")
    parser.add_argument("--profile", type=Path, help="write a cProfile of one `dvc status` here")
    args = parser.parse_args()

    tmp_obj = None
    if args.project:
        root = args.project.resolve()
        work = root.parent
    else:
        if args.keep:
            work = args.keep.resolve()
            work.mkdir(parents=True, exist_ok=True)
        else:
            tmp_obj = tempfile.TemporaryDirectory(prefix="scale-")
            work = Path(tmp_obj.name)
        root = work / "project"
        root.mkdir()
        names = build(root, args.traits)
        print(f"built {root}: {len(names)} traits", flush=True)
    plan = work / "plan.json"
    n_stages = write_plan(root, plan)
    fake = env(fake_bin(work / "bin"), plan)
    _, c_parser = sh([sys.executable, "-c", "import ruamel.yaml.main as m; print(m.CParser is not None)"], root)
    print(f"{n_stages} stages; {os.cpu_count()} CPUs; load {load()}; ruamel.yaml's C parser (ruamel.yaml.clib): "
          f"{'yes' if c_parser.strip() == 'True' else 'no'}", flush=True)

    if not args.skip_fill:
        n, seconds = fill(root, plan)
        print(f"fill: {n} fake stages run, hashed and committed, dvc.lock written in {seconds:.1f} s", flush=True)
        sh(["git", "add", "-A"], root)
        sh(["git", "commit", "-qm", "filled"], root)

    def up_to_date(text: str) -> None:
        assert "up to date" in text and "Running stage" not in text, text[-2000:]

    timed("dvc status (up to date)", ["dvc", "status"], root, fake, args.repeats, up_to_date)
    timed("dvc repro (up to date)", ["dvc", "repro"], root, fake, args.repeats, up_to_date)

    if args.profile:
        sh([sys.executable, "-m", "cProfile", "-o", str(args.profile), "-m", "dvc", "status"], root, fake)
        print(f"profile of one dvc status: {args.profile}", flush=True)

    trait = "tone/formality"
    expected = expected_after_edit(root, trait)
    positive = root / "datasets/traits" / trait / "positive.txt"
    original = positive.read_text()
    edit_times, edit_cpu, restore_times = [], [], []
    before = load()
    for i in range(args.edits):
        positive.write_text(original.replace("\n", f" Indeed{i}.\n", 1))
        seconds, text = sh(["dvc", "repro"], root, fake)
        ran = stages_run(text)
        edit_times.append(seconds)
        edit_cpu.append(CPU_SECONDS[-1])
        if i == 0:
            own = sorted(s for s in ran if s.endswith("@" + trait))
            print(f"after editing {trait}/positive.txt, dvc repro ran {len(ran)} stages: {sorted(ran)}")
            print(f"  of them the trait's own: {own}")
            assert {f"{s}@{trait}" for s in PER_TRAIT} <= ran, "the edited trait's stages did not all run"
            assert not {s for s in ran if "@" in s and s.split("@", 1)[0] in PER_TRAIT and not s.endswith(trait)}, \
                "another trait's stage ran"
            print(f"  expected from the graph (validate + everything downstream of the trait): "
                  f"{'same' if ran == expected else sorted(expected ^ ran)}")
        positive.write_text(original)
        seconds, _ = sh(["dvc", "repro"], root, fake)  # back: the trait's stages re-run (fake) to the old lock
        restore_times.append(seconds)
    print(f"{'dvc repro after one trait edited':<34} x{args.edits}: median {statistics.median(edit_times):6.2f} s  "
          f"[{' '.join(f'{t:.2f}' for t in edit_times)}]  CPU median {statistics.median(edit_cpu):.2f} s"
          f"  (revert repro: median {statistics.median(restore_times):.2f} s)"
          f"  load {before} -> {load()}")
    _, status = sh(["dvc", "status"], root, fake)
    up_to_date(status)
    if tmp_obj:
        tmp_obj.cleanup()


if __name__ == "__main__":
    main()
