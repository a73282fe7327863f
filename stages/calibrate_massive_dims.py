"""Stage calibrate_massive_dims: the dimensions with outsized mean magnitude, per layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from stages._common import (
    ModelRecordOption,
    ParamsOption,
    resolved_model,
    stage_params,
    user_errors,
)
from trait_interp.core.batch_size import BatchSize
from trait_interp.core.config import from_mapping
from trait_interp.core.io import write_json

PARAMS = ("massive_dims",)


@dataclass(frozen=True)
class MassiveDimsSettings:
    """``massive_dims:`` in params."""

    prompt_set: str = "calibration"
    site: str = "residual"
    top_k: int = 5
    min_layers: int = 3
    batch_size: BatchSize = 8


@user_errors
def main(
    model: ModelRecordOption,
    responses: Annotated[Path, typer.Option(help="Responses of the calibration prompt set (generate_inference).")],
    out: Annotated[Path, typer.Option(help="Calibration to write (.json); the project stage reads it.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Mean activation per layer over all response tokens; its top-k dims and those recurring across layers."""
    from schemas.inference import InferenceResponses
    from trait_interp.core.forward import pad_token_id, token_sequences
    from trait_interp.core.models import load_model
    from trait_interp.core.sites import check_site, num_layers
    from trait_interp.core.tables import read_table
    from trait_interp.monitoring.massive_dims import calibrate

    p = stage_params(params, PARAMS)
    record, spec, where = resolved_model(model)
    settings = from_mapping(MassiveDimsSettings, p["massive_dims"], f"{params}:massive_dims")
    site = check_site(settings.site, "massive_dims.site")
    table = read_table(responses, InferenceResponses)
    loaded = load_model(spec, where)
    sequences = token_sequences(table["prompt_ids"], table["response_ids"])
    result = calibrate(
        loaded, sequences, list(range(num_layers(loaded))), pad_token_id(loaded), site, settings.top_k,
        settings.batch_size, settings.min_layers, model_name=record.key, progress=True,
    )
    write_json(out, {"prompt_set": settings.prompt_set, **result.to_json()})
    typer.echo(f"massive dims ({record.key}, {settings.prompt_set}): recommended {result.recommended} -> {out}")
