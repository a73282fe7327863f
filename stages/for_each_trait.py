"""Stage runner for_each_trait: one per-trait stage over every trait, re-running only the traits whose inputs changed.

Why: a real trait collection has about 173 traits. As one DVC stage per trait and phase (seven
phases) that is over a thousand stages, and `dvc status` and an up-to-date `dvc repro` spend their
time on DVC's per-stage work (its index, a lock around every stage) and on hashing every dep and out
of every stage (benchmarks/scale.py, benchmarks/scale_layouts.py: 7 s and 15 s on a 2-core box,
against 2.3 s and 2.4 s with one stage per phase). So each phase is one DVC stage whose outs are
folders holding every trait's files, and the per-trait incrementality DVC gave moves here: the stage's
record (``--record``, a DVC out) keeps, per trait, a digest of what the trait's run read (its
``stage_inputs`` file, its own argv, the content of every input path) and of what it wrote. A trait
runs again only when one of those changed, or when its outputs are not what it wrote; a trait no
longer in ``traits`` has its outputs removed. Editing one trait re-runs that trait alone.

Each trait runs as the per-trait command always has (``trait-interp <stage> --trait ... --out ...``),
in a fork of this process after the heavy libraries are imported once (as ``trait-interp warm``
does), so a run sees nothing of the trait before it; without ``os.fork`` (or once CUDA has started)
each trait is its own ``python -m stages`` process. Which options of a stage are outputs its module
says (``TRAIT_OUTPUTS``; of them, ``TRAIT_CACHES`` are caches such as the judge's, whose presence
counts but not their bytes, which carry timestamps); every other path option is an input. Set
``TRAIT_INTERP_RERUN_TRAITS=1`` to run every trait again (``dvc repro --force`` re-runs the stage,
whose traits are then up to date).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from stages._common import ParamsOption, stage_params, user_errors
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import write_json

PARAMS = ("traits",)
RERUN_VARIABLE = "TRAIT_INTERP_RERUN_TRAITS"
STAT_CACHE = Path(".dvc/tmp/trait_interp_digests.json")  # content digests by (size, mtime, inode): never tracked
SKIPPED_NAMES = ("__pycache__",)


@dataclass(frozen=True)
class TraitRun:
    """One trait's command line and the paths it reads and writes."""

    trait: str
    argv: list[str]
    inputs: dict[str, str]   # option -> path
    outputs: dict[str, str]  # option -> path
    caches: frozenset[str] = frozenset()  # outputs that are caches: their presence counts, not their bytes


def stage_main(command: str) -> Any:
    """The per-trait stage's ``main`` (its module imports no heavy library at import)."""
    from stages.cli import STAGES

    module = STAGES.get(command)
    if module is None:
        raise UserInputError(f"for-each-trait: '{command}' is not a stage; choose one of {', '.join(STAGES)}")
    stage = importlib.import_module(f"stages.{module}")
    if not hasattr(stage, "TRAIT_OUTPUTS"):
        raise UserInputError(f"for-each-trait: stages/{module}.py declares no TRAIT_OUTPUTS (it is not a per-trait stage)")
    return stage


def path_options(main: Any) -> set[str]:
    """The options of a stage's ``main`` that take a path (``Path`` or ``Path | None``)."""
    function = inspect.unwrap(main)
    hints = typing.get_type_hints(function, include_extras=True)
    names = set()
    for name, hint in hints.items():
        base = typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint
        if base is Path or Path in typing.get_args(base):
            names.add(name)
    return names


def option_pairs(argv: list[str], where: str) -> dict[str, str]:
    """``--name value`` pairs of a per-trait argv template (every per-trait option takes a value)."""
    if len(argv) % 2 or not all(token.startswith("--") for token in argv[::2]):
        raise UserInputError(f"{where}: the per-trait command must be --option value pairs after '--'; got {' '.join(argv)}")
    return {name[2:].replace("-", "_"): value for name, value in zip(argv[::2], argv[1::2], strict=True)}


def trait_runs(command: str, template: list[str], traits: list[str]) -> list[TraitRun]:
    """Each trait's argv (``{trait}`` filled in) and which of its paths the run reads and writes."""
    stage = stage_main(command)
    paths = path_options(stage.main)
    outputs = set(stage.TRAIT_OUTPUTS)
    where = f"for-each-trait {command}"
    pairs = option_pairs(template, where)
    if not any("{trait}" in value for value in pairs.values()):
        raise UserInputError(f"{where}: no option holds {{trait}}; every trait would read and write the same files")
    missing = sorted(outputs - set(pairs))
    if missing:
        raise UserInputError(f"{where}: pass its outputs {', '.join('--' + m.replace('_', '-') for m in missing)}")
    runs = []
    for trait in traits:
        argv = [token.replace("{trait}", trait) for token in template]
        filled = option_pairs(argv, where)
        runs.append(TraitRun(
            trait, [command, *argv],
            {k: v for k, v in filled.items() if k in paths and k not in outputs and k != "params"},
            {k: v for k, v in filled.items() if k in outputs}, frozenset(getattr(stage, "TRAIT_CACHES", ()))))
    return runs


class Digests:
    """Content digests of files, remembered by (size, mtime, inode) in .dvc/tmp so unchanged files are not read again."""

    def __init__(self, cache: Path = STAT_CACHE) -> None:
        self.cache = cache if cache.parent.is_dir() else None
        self.known: dict[str, list] = {}
        if self.cache is not None and self.cache.is_file():
            try:
                self.known = json.loads(self.cache.read_text(encoding="utf-8"))
            except ValueError:
                self.known = {}

    def file(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        seen = self.known.get(key)
        if seen and seen[:3] == [stat.st_size, stat.st_mtime_ns, stat.st_ino]:
            return seen[3]
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        self.known[key] = [stat.st_size, stat.st_mtime_ns, stat.st_ino, digest]
        return digest

    def path(self, path: Path) -> str:
        """A file's digest, a folder's (its files' relative paths and digests, sorted), or 'missing'."""
        if path.is_file():
            return self.file(path)
        if not path.is_dir():
            return "missing"
        digest = hashlib.sha256(b"folder\0")
        for file in sorted(p for p in path.rglob("*") if p.is_file() and not set(SKIPPED_NAMES) & set(p.parts)
                           and not p.name.endswith(".trait-interp.tmp")):
            digest.update(f"{file.relative_to(path).as_posix()}\0{self.file(file)}\0".encode())
        return digest.hexdigest()

    def save(self) -> None:
        """Write the digests back, without those of files that are gone (removed traits, temps)."""
        if self.cache is not None:
            self.known = {key: seen for key, seen in self.known.items() if os.path.exists(key)}
            temp = self.cache.with_name(f".{self.cache.name}.{os.getpid()}.trait-interp.tmp")
            temp.write_text(json.dumps(self.known), encoding="utf-8")
            temp.replace(self.cache)


def input_digest(run: TraitRun, stage_inputs: bytes, digests: Digests) -> str:
    digest = hashlib.sha256(stage_inputs + b"\0" + json.dumps(run.argv).encode())
    for option, path in sorted(run.inputs.items()):
        digest.update(f"\0{option}\0{digests.path(Path(path))}".encode())
    return digest.hexdigest()


def output_digest(run: TraitRun, digests: Digests) -> str:
    digest = hashlib.sha256()
    for option, path in sorted(run.outputs.items()):
        # a judge cache's entries carry timestamps: its content would make the record differ run to run
        seen = ("present" if Path(path).exists() else "missing") if option in run.caches else digests.path(Path(path))
        digest.update(f"{option}\0{seen}\0".encode())
    return digest.hexdigest()


def read_record(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["traits"])
    except (ValueError, KeyError, TypeError):
        typer.echo(f"{path}: unreadable; every trait runs again", err=True)
        return {}


def remove_outputs(entry: dict) -> None:
    import shutil

    for path in map(Path, entry.get("outputs", {}).values()):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_trait(argv: list[str], fork: bool) -> int:
    """Run one trait's command: in a fork of this process, or as its own ``python -m stages`` process."""
    if not fork:
        return subprocess.run([sys.executable, "-m", "stages", *argv], check=False).returncode
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:  # as the warm server runs a command: fresh project modules, the argv, a normal exit
            from stages._stage_server import _run_stage_command

            code = _run_stage_command(["trait-interp", *argv], sys.path[0])
        finally:
            os._exit(code)
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
    try:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except KeyboardInterrupt:
                os.kill(pid, signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def can_fork() -> bool:
    """Fork once the heavy libraries are imported, unless CUDA started (a forked child could not use it)."""
    if not hasattr(os, "fork"):
        return False
    from stages._stage_server import _cuda_started, preload

    preload()
    return not _cuda_started()


@user_errors
def main(
    stage: Annotated[str, typer.Argument(help="The per-trait stage command, e.g. extract-vectors.")],
    template: Annotated[list[str], typer.Argument(
        help="After '--': the stage's options, with {trait} in the paths of one trait.", show_default=False)],
    stage_inputs: Annotated[Path, typer.Option(help="The stage's params and code record (stage_inputs/<stage>.json).")],
    record: Annotated[Path, typer.Option(help="What each trait's run read and wrote (a DVC out), to skip unchanged traits.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Run a per-trait stage for every trait in ``traits``; traits whose inputs and outputs are unchanged are skipped."""
    traits = [str(t) for t in stage_params(params, PARAMS)["traits"]]
    runs = trait_runs(stage, template, traits)
    name = stage.replace("-", "_")  # the DVC stage's name
    if not stage_inputs.is_file():
        raise UserInputError(f"--stage-inputs {stage_inputs}: not found; run the stage_inputs stage first (dvc repro)")
    inputs = stage_inputs.read_bytes()
    done = read_record(record)
    digests = Digests()
    for gone in sorted(set(done) - set(traits)):
        remove_outputs(done.pop(gone))
        typer.echo(f"{name}: {gone} is no longer in traits; its outputs were removed")
    rerun_all = os.environ.get(RERUN_VARIABLE, "") not in ("", "0")
    todo = []
    for run in runs:
        entry = done.get(run.trait)
        wanted = input_digest(run, inputs, digests)
        if rerun_all or not entry or entry.get("inputs") != wanted or entry.get("written") != output_digest(run, digests):
            todo.append((run, wanted))
    typer.echo(f"{name}: {len(todo)} of {len(runs)} traits to run, {len(runs) - len(todo)} up to date"
               + (f" ({RERUN_VARIABLE})" if rerun_all else ""))

    def save() -> None:  # after every trait, so a failure or a kill keeps the traits done
        ordered = {run.trait: done[run.trait] for run in runs if run.trait in done}
        write_json(record, {"stage": name, "traits": ordered})

    fork = can_fork() if todo else False
    for k, (run, wanted) in enumerate(todo, 1):
        typer.echo(f"Running trait '{name}@{run.trait}' ({k}/{len(todo)})")
        code = run_trait(run.argv, fork)
        if code:
            done.pop(run.trait, None)
            save()
            digests.save()
            raise UserInputError(f"{name}: {run.trait} failed (exit status {code}); the traits that ran before it are kept")
        done[run.trait] = {"inputs": wanted, "written": output_digest(run, digests), "outputs": run.outputs}
        save()
    save()
    digests.save()
