"""Stage project: every token of every response of a prompt set, projected on every trait's vector."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages._common import (
    ModelRecordOption,
    ParamsOption,
    per_trait,
    resolved_model,
    stage_params,
    user_errors,
)
from trait_interp.core.config import from_mapping
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import read_json, write_json

PARAMS = ("traits", "monitoring")


@user_errors
def main(
    model: ModelRecordOption,
    responses: Annotated[Path, typer.Option(help="Responses table from generate_inference (.jsonl).")],
    vectors: Annotated[str, typer.Option(help="Each trait's vectors folder, a pattern with {trait}.")],
    layers: Annotated[Path, typer.Option(help="The monitoring layer record (monitor_layers): {trait: [layers]}.")],
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
    from schemas.dynamics import Commitment, Dynamics
    from schemas.inference import InferenceResponses
    from schemas.projections import Projections
    from trait_interp.core.forward import pad_token_id, token_sequences
    from trait_interp.core.models import load_model
    from trait_interp.core.sites import check_site
    from trait_interp.core.tables import read_table, write_table
    from trait_interp.monitoring.dynamics import dynamics_table
    from trait_interp.monitoring.massive_dims import (
        CLEANING_PARTS,
        Calibration,
        clean_dims_for,
    )
    from trait_interp.monitoring.projection import project_sequences, to_long_rows
    from trait_interp.monitoring.selection import (
        MonitoringSettings,
        monitor_vectors,
        read_layers,
    )

    p = stage_params(params, PARAMS)
    record, spec, where = resolved_model(model)
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
        massive = {mode: clean_dims_for(calibrated, mode) for mode in CLEANING_PARTS}

    loaded = load_model(spec, where)
    chosen = monitor_vectors(per_trait(vectors, "vectors", p["traits"]), read_layers(layers), settings)
    sequences = token_sequences(table["prompt_ids"], table["response_ids"])
    try:
        result = project_sequences(loaded, sequences, chosen, pad_token_id(loaded), settings.batch_size, clean,
                                   progress=True, massive_sets=massive)
    except ValueError as err:
        raise UserInputError(f"{vectors}: {err}") from None
    tokens = [list(a) + list(b) for a, b in zip(table["prompt_tokens"], table["response_tokens"])]
    long = to_long_rows(result, list(table["prompt_id"]), sequences, tokens, chosen)
    per_token, per_trajectory = dynamics_table(long, settings.dynamics_window, settings.commitment_threshold)
    write_table(long, Projections, out)
    write_table(per_token, Dynamics, dynamics)
    write_table(per_trajectory, Commitment, commitment)
    response = long[long["frame"] == "response"]
    summary = {
        "prompt_set": str(table["prompt_set"].iloc[0]),
        "model": record.key,
        "n_prompts": len(table),
        "n_tokens": int(sum(len(s.ids) for s in sequences)),
        "n_vectors": len(chosen),
        "cleaned": settings.clean_massive_dims,
        "mean_response_projection": {
            f"{trait}@L{layer}": round(float(g["projection"].mean()), 4)
            for (trait, layer), g in response.groupby(["trait", "layer"])
        },
        "committed_share": round(float(per_trajectory["commitment_token"].notna().mean()), 4) if len(per_trajectory) else None,
    }
    write_json(metrics, summary)
    typer.echo(f"{summary['prompt_set']}: {len(table)} responses x {len(chosen)} vectors, {len(long)} rows -> {out}")
