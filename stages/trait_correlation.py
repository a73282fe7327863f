"""Stage trait_correlation: how traits co-vary across responses and along token trajectories."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from schemas.analyses import LaggedCorrelation, TraitCorrelation
from schemas.projections import Projections
from stages._common import ParamsOption, stage_params, user_errors
from trait_interp.analyses.correlation import lagged_correlation, response_correlation
from trait_interp.analyses.group_comparison import response_means
from trait_interp.core.io import write_json
from trait_interp.core.tables import read_table, write_table

PARAMS = ("analyses.max_lag",)


@user_errors
def main(
    projections: Annotated[Path, typer.Option(help="Projection table of a prompt set (.parquet).")],
    out: Annotated[Path, typer.Option(help="Correlation of per-response mean projections (.csv).")],
    lagged: Annotated[Path, typer.Option(help="Correlation of token trajectories at lags (.csv).")],
    metrics: Annotated[Path, typer.Option(help="Metrics (.json): r per trait pair, peak lag.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Pearson r between traits (per-response means, and token trajectories at lags -max..max), per layer.

    Traits are compared at every (method, site, layer) where at least two traits were projected.
    """
    max_lag = int(stage_params(params, PARAMS)["analyses.max_lag"])
    table = read_table(projections, Projections)
    means = response_means(table)
    responses, lags = [], []
    for (method, site, layer), group in means.groupby(["method", "site", "layer"]):
        if group["trait"].nunique() < 2:
            continue
        keys = dict(method=method, site=site, layer=int(layer))
        responses.append(response_correlation(means, int(layer), method, site).assign(**keys))
        lags.append(lagged_correlation(table, int(layer), method, site, max_lag).assign(**keys))
    columns = ["method", "site", "layer"]
    response_table = _ordered(responses, TraitCorrelation, columns)
    lag_table = _ordered(lags, LaggedCorrelation, columns)
    write_table(response_table, TraitCorrelation, out)
    write_table(lag_table, LaggedCorrelation, lagged)
    summary = {}
    pairs = response_table[response_table["trait_a"] < response_table["trait_b"]]
    for row in pairs.itertuples():
        at = lag_table[(lag_table["trait_a"] == row.trait_a) & (lag_table["trait_b"] == row.trait_b)
                       & (lag_table["layer"] == row.layer)].dropna(subset=["r"])
        peak = at.loc[at["r"].abs().idxmax()] if len(at) else None
        summary[f"{row.trait_a}~{row.trait_b}@L{row.layer}"] = {
            "r": None if pd.isna(row.r) else round(float(row.r), 4),
            "peak_lag": None if peak is None else int(peak["lag"]),
        }
    write_json(metrics, {"n_layers_compared": len(responses), **summary})
    typer.echo(f"trait correlation: {len(pairs)} trait pairs at {len(responses)} layer(s) -> {out}")


def _ordered(frames: list[pd.DataFrame], schema, extra: list[str]) -> pd.DataFrame:
    """Concatenate, with the schema's own columns first (empty when nothing was comparable)."""
    own = list(schema.to_schema().columns)
    if not frames:
        return pd.DataFrame(columns=own)
    table = pd.concat(frames, ignore_index=True)
    return table[[c for c in own if c in table.columns] + [c for c in extra if c not in own]]
