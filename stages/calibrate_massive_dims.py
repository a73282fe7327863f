"""Stage calibrate_massive_dims: the dimensions with outsized mean magnitude, per layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from schemas.inference import InferenceResponses
from stages._common import ParamsOption, named_model, stage_params, user_errors
from trait_interp.capture import TokenSequence
from trait_interp.config import from_mapping
from trait_interp.io import write_json
from trait_interp.massive_dims import calibrate
from trait_interp.models import load_model
from trait_interp.sites import check_site, num_layers
from trait_interp.tables import read_table

PARAMS = ("models.{model}", "massive_dims")


@dataclass(frozen=True)
class MassiveDimsSettings:
    """``massive_dims:`` in params."""

    prompt_set: str = "calibration"
    site: str = "residual"
    top_k: int = 5
    min_layers: int = 3
    batch_size: int = 8


@user_errors
def main(
    model: Annotated[str, typer.Option(help="Model (variant) key in params.yaml models, e.g. toy-instruct.")],
    responses: Annotated[Path, typer.Option(help="Responses of the calibration prompt set (generate_inference).")],
    out: Annotated[Path, typer.Option(help="Calibration to write (.json); the project stage reads it.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Mean activation per layer over all response tokens; its top-k dims and those recurring across layers."""
    p = stage_params(params, PARAMS, model=model)
    key, spec = named_model(p, model, params)
    settings = from_mapping(MassiveDimsSettings, p["massive_dims"], f"{params}:massive_dims")
    site = check_site(settings.site, "massive_dims.site")
    table = read_table(responses, InferenceResponses)
    model = load_model(spec)
    sequences = [TokenSequence(tuple(a), tuple(b)) for a, b in zip(table["prompt_ids"], table["response_ids"])]
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    result = calibrate(
        model, sequences, list(range(num_layers(model))), pad_id, site, settings.top_k, settings.batch_size,
        settings.min_layers, model_name=key, progress=True,
    )
    write_json(out, {"prompt_set": settings.prompt_set, **result.to_json()})
    typer.echo(f"massive dims ({key}, {settings.prompt_set}): recommended {result.recommended} -> {out}")
