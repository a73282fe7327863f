"""Stage monitor_layers: which layers each trait is projected at (monitoring.layer), as a small record.

``best`` reads each trait's steering ``best.json``, so traits may end up at different layers. The
projection stages read this record instead of the steering results: steering at another layer
(``-S layer=...``) re-runs the projection only when the layers chosen for monitoring change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages._common import (
    ModelRecordOption,
    ParamsOption,
    per_trait,
    stage_params,
    user_errors,
)

PARAMS = ("traits", "monitoring.layer")


@user_errors
def main(
    best: Annotated[str, typer.Option(help="Each trait's steering best.json (read for best), a pattern with {trait}.")],
    out: Annotated[Path, typer.Option(help="The layer record to write (.json): {trait: [layers]}.")],
    model: ModelRecordOption,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Per trait, the layers monitoring projects at; the application model's record gives the layer count."""
    from trait_interp.core.resolution import read_model_record
    from trait_interp.monitoring.selection import (
        choose_layers,
        steering_best_layer,
        write_layers,
    )

    p = stage_params(params, PARAMS)
    traits = [str(t) for t in p["traits"]]
    record = read_model_record(model)
    layers = choose_layers(traits, p["monitoring.layer"], record.num_layers, steering_best_layer(per_trait(best, "best", traits)))
    write_layers(out, p["monitoring.layer"], layers)
    shown = ", ".join(f"{t}: {list(v) if len(v) < 6 else f'{len(v)} layers'}" for t, v in layers.items())
    typer.echo(f"monitoring layers ({p['monitoring.layer']}): {shown} -> {out}")
