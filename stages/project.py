"""Stage project: every token of every response of a prompt set, projected on every trait's vector."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schemas.dynamics import Commitment, Dynamics
from schemas.inference import InferenceResponses
from schemas.projections import Projections
from stages._common import ParamsOption, named_model, stage_params, user_errors
from trait_interp.capture import TokenSequence
from trait_interp.config import from_mapping
from trait_interp.dynamics import dynamics_table
from trait_interp.errors import UserInputError
from trait_interp.io import read_json, write_json
from trait_interp.massive_dims import Calibration, clean_dims_for
from trait_interp.models import load_model
from trait_interp.monitoring import MonitoringSettings, monitor_vectors, steering_best_layer
from trait_interp.projection import project_sequences, to_long_rows
from trait_interp.sites import check_site, num_layers
from trait_interp.tables import read_table, write_table

PARAMS = ("models.{model}", "layer", "traits", "monitoring")


@user_errors
def main(
    model: Annotated[str, typer.Option(help="Model (variant) key in params.yaml models, e.g. toy-instruct.")],
    responses: Annotated[Path, typer.Option(help="Responses table from generate_inference (.jsonl).")],
    vectors_root: Annotated[Path, typer.Option(help="Folder holding <trait>/vectors for every trait.")],
    steering_root: Annotated[Path, typer.Option(help="Folder holding <trait>/best.json (for layer: best).")],
    out: Annotated[Path, typer.Option(help="Projection table to write (.parquet, long form).")],
    dynamics: Annotated[Path, typer.Option(help="Per-token velocity and acceleration (.parquet).")],
    commitment: Annotated[Path, typer.Option(help="Per-trajectory mean and commitment point (.csv).")],
    metrics: Annotated[Path, typer.Option(help="Summary metrics (.json).")],
    calibration: Annotated[
        Path | None,
        typer.Option(help="Massive-dims calibration (.json): needed when cleaning is on; also gives each cleaning "
                          "mode's part of the projection (columns massive_recommended, massive_top_k)."),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Stream the exact stored ids through the model once; keep only [tokens x vectors] scores and norms."""
    p = stage_params(params, PARAMS, model=model)
    key, spec = named_model(p, model, params)
    settings = from_mapping(MonitoringSettings, p["monitoring"], f"{params}:monitoring")
    check_site(settings.site, "monitoring.site")
    table = read_table(responses, InferenceResponses)
    clean, massive = None, None
    if settings.clean_massive_dims != "none" and calibration is None:
        raise UserInputError(f"{params}:monitoring.clean_massive_dims needs --calibration (run calibrate_massive_dims)")
    if calibration is not None:
        if not calibration.is_file():
            raise UserInputError(f"{calibration}: file not found; run calibrate_massive_dims or leave out --calibration")
        try:
            calibrated = Calibration.from_json(read_json(calibration))
        except (ValueError, KeyError, TypeError) as err:
            raise UserInputError(f"{calibration}: not a massive-dims calibration ({err}); re-run calibrate_massive_dims") from None
        clean = clean_dims_for(calibrated, settings.clean_massive_dims)
        # each mode's part of the raw projection, so the dashboard can switch cleaning on and off
        massive = {mode: clean_dims_for(calibrated, mode) for mode in ("recommended", "top_k")}

    model = load_model(spec)
    n_layers = num_layers(model)
    vectors = monitor_vectors(vectors_root, p["traits"], p["layer"], n_layers, settings, steering_best_layer(steering_root))
    sequences = [TokenSequence(tuple(a), tuple(b)) for a, b in zip(table["prompt_ids"], table["response_ids"])]
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    try:
        result = project_sequences(model, sequences, vectors, pad_id, settings.batch_size, clean, progress=True,
                                   massive_sets=massive)
    except ValueError as err:
        raise UserInputError(f"{vectors_root}: {err}") from None
    tokens = [list(a) + list(b) for a, b in zip(table["prompt_tokens"], table["response_tokens"])]
    long = to_long_rows(result, list(table["prompt_id"]), sequences, tokens, vectors)
    per_token, per_trajectory = dynamics_table(long, settings.dynamics_window, settings.commitment_threshold)
    write_table(long, Projections, out)
    write_table(per_token, Dynamics, dynamics)
    write_table(per_trajectory, Commitment, commitment)
    response = long[long["frame"] == "response"]
    summary = {
        "prompt_set": str(table["prompt_set"].iloc[0]),
        "model": key,
        "n_prompts": len(table),
        "n_tokens": int(sum(len(s.ids) for s in sequences)),
        "n_vectors": len(vectors),
        "cleaned": settings.clean_massive_dims,
        "mean_response_projection": {
            f"{trait}@L{layer}": round(float(g["projection"].mean()), 4)
            for (trait, layer), g in response.groupby(["trait", "layer"])
        },
        "committed_share": round(float(per_trajectory["commitment_token"].notna().mean()), 4) if len(per_trajectory) else None,
    }
    write_json(metrics, summary)
    typer.echo(f"{summary['prompt_set']}: {len(table)} responses x {len(vectors)} vectors, {len(long)} rows -> {out}")
