"""Stage capture_raw: raw per-token activations of a monitored prompt set, kept on the machine that made them.

The output is ``push: false`` in dvc.yaml: hundreds of MB per prompt set at 70B scale, cheap to
regenerate from the pushed responses. The stage exists only for the (model, prompt set) pairs listed
in ``raw_activations`` (both lists empty by default), because a ``push: false`` output is missing on
every other machine: there ``dvc pull`` needs ``--allow-missing`` and ``dvc status`` lists it.
"""

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
from trait_interp.core.io import atomic_dir
from trait_interp.core.layers import parse_layers

PARAMS = ("raw_activations.site", "raw_activations.layers", "raw_activations.batch_size")


@dataclass(frozen=True)
class RawActivationSettings:
    """``raw_activations:`` in params (``models`` and ``prompt_sets`` only expand the stage in dvc.yaml)."""

    site: str = "residual"
    layers: str | int | list[int] = "all"
    batch_size: BatchSize = 8


@user_errors
def main(
    model: ModelRecordOption,
    responses: Annotated[Path, typer.Option(help="Responses table from generate_inference (.jsonl).")],
    out: Annotated[Path, typer.Option(help="Folder to write: one <prompt_id>.safetensors per prompt.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Every token of every stored response through the model once; ``[n_tokens, n_layers, width]`` per prompt."""
    from schemas.inference import InferenceResponses
    from trait_interp.core.forward import pad_token_id, token_sequences
    from trait_interp.core.models import load_model
    from trait_interp.core.sites import check_site, num_layers
    from trait_interp.core.tables import read_table
    from trait_interp.monitoring.raw_capture import (
        capture_tokens,
        save_token_activations,
    )

    p = stage_params(params, PARAMS)
    _, spec, where = resolved_model(model)
    section = {k: p[f"raw_activations.{k}"] for k in ("site", "layers", "batch_size")}
    settings = from_mapping(RawActivationSettings, section, f"{params}:raw_activations")
    site = check_site(settings.site, "raw_activations.site")
    table = read_table(responses, InferenceResponses)
    loaded = load_model(spec, where)
    layers = list(parse_layers(settings.layers, num_layers(loaded), "raw_activations.layers"))
    sequences = token_sequences(table["prompt_ids"], table["response_ids"])
    acts = capture_tokens(loaded, sequences, site, layers, pad_token_id(loaded), settings.batch_size, progress=True)
    with atomic_dir(out) as tmp:
        save_token_activations(tmp, list(table["prompt_id"]), acts, layers)
    size = sum(a.numel() * a.element_size() for a in acts)
    typer.echo(f"{len(acts)} prompts x {len(layers)} layers ({site}), {size / 2**20:.1f} MiB -> {out} (local only)")
