"""Stage trait_correlation: how traits co-vary across responses and along token trajectories.

Layers (``trait_interp.analyses.pairing``): two traits that share layers are compared at each
shared layer; two that share none (``layer: best`` picked a different layer for each) are compared
each at its own layer(s), every combination. The tables have a ``layer`` column when every pair is
at a shared layer (any fixed ``layer``: an int, a list, ``all``), else ``layer_a`` and ``layer_b``
(the layer of trait_a and of trait_b) on every row; the metrics keys read ``a~b@L2`` or
``a@L1~b@L3``. Fewer than two traits projected (for any one method and site): empty tables and a warning
(printed, and in the metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stages._common import ParamsOption, stage_params, user_errors
from trait_interp.core.io import write_json

if TYPE_CHECKING:
    import pandas as pd

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

    Traits are compared at every (method, site, layer) where at least two traits were projected, and
    two traits that share no layer at all are compared each at its own layers.
    """
    import pandas as pd

    from schemas.analyses import LaggedCorrelation, TraitCorrelation
    from schemas.projections import Projections
    from trait_interp.analyses.correlation import (
        paired_lagged_correlation,
        paired_response_correlation,
    )
    from trait_interp.analyses.group_comparison import response_means
    from trait_interp.analyses.pairing import describe, trait_layers
    from trait_interp.core.tables import read_table, write_table

    max_lag = int(stage_params(params, PARAMS)["analyses.max_lag"])
    table = read_table(projections, Projections)
    means = response_means(table)
    responses, lags = [], []
    for (method, site), _ in means.groupby(["method", "site"], sort=True):
        keys = dict(method=method, site=site)
        response = paired_response_correlation(means, method, site)
        if response.empty:
            continue
        responses.append(response.assign(**keys))
        lags.append(paired_lagged_correlation(table, method, site, max_lag, progress=True).assign(**keys))
    response_table = _ordered(responses, TraitCorrelation)
    lag_table = _ordered(lags, LaggedCorrelation)
    shared = "layer" in response_table.columns
    write_table(response_table, TraitCorrelation, out)
    write_table(lag_table, LaggedCorrelation, lagged)
    summary = {}
    pairs = response_table[response_table["trait_a"] < response_table["trait_b"]]
    for row in pairs.itertuples():
        same = (lag_table["trait_a"] == row.trait_a) & (lag_table["trait_b"] == row.trait_b)
        if shared:
            at = lag_table[same & (lag_table["layer"] == row.layer)].dropna(subset=["r"])
            key = f"{row.trait_a}~{row.trait_b}@L{row.layer}"
        else:
            at = lag_table[same & (lag_table["layer_a"] == row.layer_a)
                           & (lag_table["layer_b"] == row.layer_b)].dropna(subset=["r"])
            key = f"{row.trait_a}@L{row.layer_a}~{row.trait_b}@L{row.layer_b}"
        peak = at.loc[at["r"].abs().idxmax()] if len(at) else None
        summary[key] = {
            "r": None if pd.isna(row.r) else round(float(row.r), 4),
            "peak_lag": None if peak is None else int(peak["lag"]),
        }
    n_compared = _n_layers(response_table)
    head: dict = {"n_layers_compared": n_compared}
    if not len(response_table):
        projected = {f"{m}/{s}: {describe(trait_layers(table, m, s))}"
                     for m, s in table[["method", "site"]].drop_duplicates().itertuples(index=False)}
        listed = "; ".join(sorted(projected)) or "no rows"
        warning = f"nothing to correlate: fewer than two traits projected for any one method and site ({listed})"
        head["warning"] = warning
        typer.echo(f"warning: {projections}: {warning}; the tables are empty", err=True)
    elif not shared:  # say which layers each trait had: the pairs across layers follow from them
        head["pairing"] = "traits that share no layer are compared each at its own layers (layer_a, layer_b)"
        head["trait_layers"] = {t: sorted({int(la) for la in g["layer"]}) for t, g in means.groupby("trait", sort=True)}
    write_json(metrics, {**head, **summary})
    typer.echo(f"trait correlation: {len(pairs)} trait pairs at {n_compared} layer(s) -> {out}")


def _n_layers(table: pd.DataFrame) -> int:
    """How many (method, site, layer) took part: with shared layers, the layers compared at."""
    import pandas as pd

    if "layer" in table.columns:
        return len(table[["method", "site", "layer"]].drop_duplicates())
    sides = [table[["method", "site", side]].set_axis(["method", "site", "layer"], axis=1) for side in ("layer_a", "layer_b")]
    return len(pd.concat(sides).drop_duplicates())


def _ordered(frames: list[pd.DataFrame], schema) -> pd.DataFrame:
    """Concatenate, with one ``layer`` column when every pair is at a shared layer, the schema's column order.

    Empty (the schema's columns, ``layer`` included) when nothing was comparable.
    """
    import pandas as pd

    from trait_interp.analyses.pairing import one_layer_column

    own = list(schema.to_schema().columns)
    if not frames:
        return pd.DataFrame(columns=[c for c in own if c not in ("layer_a", "layer_b")])
    table = one_layer_column(pd.concat(frames, ignore_index=True))
    return table[[c for c in own if c in table.columns]]
