"""Stage validate: one cheap check of the whole experiment before any model loads; every problem, one line each."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from stages._common import ParamsOption, user_errors
from stages.calibrate_massive_dims import MassiveDimsSettings
from stages.capture_raw import RawActivationSettings
from trait_interp.core.io import write_text

PARAMS: tuple[str, ...] = ()  # it reads the whole params file: depend on params.yaml as a file in dvc.yaml
MARKER = "valid\n"  # constant: re-validating an unchanged experiment never invalidates the stages after it


@user_errors
def main(
    out: Annotated[Path, typer.Option(help="Marker file, written (constant content) only when everything is valid.")],
    traits_root: Annotated[Path, typer.Option(help="Folder of category/trait datasets.")] = Path("datasets/traits"),
    prompt_sets_root: Annotated[Path, typer.Option(help="Folder of prompt sets (<name>.json).")] = Path("datasets/inference"),
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Check params, every trait and prompt set, positions, sites, methods and each model's layers (config.json only)."""
    from trait_interp.validation import ExperimentFiles, validate_experiment

    started = time.perf_counter()
    files = ExperimentFiles(params, traits_root, prompt_sets_root)  # the lexicon: judge.lexicon
    result = validate_experiment(
        files, stage_sections={"massive_dims": MassiveDimsSettings, "raw_activations": RawActivationSettings}
    )
    for note in result.notes:
        typer.echo(f"note: {note}")
    seconds = time.perf_counter() - started
    if not result.ok:
        out.unlink(missing_ok=True)  # a stale marker must not vouch for what is now invalid
        for problem in result.problems:
            typer.echo(f"error: {problem}", err=True)
        typer.echo(f"{len(result.problems)} problem(s) in {params} and its datasets ({seconds:.1f} s); "
                   "fix them and run again", err=True)
        raise typer.Exit(code=1)
    write_text(out, MARKER)
    typer.echo(f"valid: {result.n_traits} traits, {result.n_prompt_sets} prompt sets ({seconds:.1f} s) -> {out}")
