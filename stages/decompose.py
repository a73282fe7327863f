"""Stage decompose: for a pair of traits, the share of responses in each high/low quadrant.

Layers (``trait_interp.analyses.pairing.layer_pairs``): when the two traits share layers, each
shared layer gives one quadrant table, both traits read at that layer (column ``layer``, metrics
keys ``L2:high_x/low_y``), as with any fixed ``layer``. When they share none (``layer: best``
picked a different layer for each), each trait is read at its own layer(s), every combination
(columns ``layer_x`` and ``layer_y``, metrics keys ``x@L1,y@L3:high_x/low_y``); each threshold is
that trait's train midpoint at its own layer. A trait that was not projected at all (or no prompt
with a response mean for both) is a one-line error naming the traits and what was projected.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stages._common import ParamsOption, user_errors
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import write_json

if TYPE_CHECKING:
    import pandas as pd

PARAMS: tuple[str, ...] = ()


def train_threshold(evaluation: pd.DataFrame, where: Path, site: str, method: str, layer: int) -> float:
    """The vector's decision threshold: the midpoint of its train-set projections (evaluate_vectors)."""
    row = evaluation[(evaluation["site"] == site) & (evaluation["method"] == method) & (evaluation["layer"] == layer)]
    if row.empty:
        raise UserInputError(f"{where}: no evaluation row for {site}/{method} layer {layer}")
    return float(row["threshold"].iloc[0])


@user_errors
def main(
    projections: Annotated[Path, typer.Option(help="Projection table of a prompt set (.parquet).")],
    trait_x: Annotated[str, typer.Option(help="First trait (x axis).")],
    trait_y: Annotated[str, typer.Option(help="Second trait (y axis).")],
    evaluation_x: Annotated[Path, typer.Option(help="evaluation.csv of trait x (train-set thresholds).")],
    evaluation_y: Annotated[Path, typer.Option(help="evaluation.csv of trait y.")],
    out: Annotated[Path, typer.Option(help="Quadrant table to write (.csv).")],
    metrics: Annotated[Path, typer.Option(help="Metrics (.json): quadrant shares per layer.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Classify each response's mean projections on two traits as high/low by the vectors' train midpoints."""
    import pandas as pd

    from schemas.analyses import Quadrants
    from schemas.evaluation import VectorEvaluation
    from schemas.projections import Projections
    from trait_interp.analyses.decomposition import quadrants
    from trait_interp.analyses.group_comparison import response_means
    from trait_interp.analyses.pairing import describe, layer_pairs, trait_layers
    from trait_interp.core.tables import read_table, write_table

    if trait_x == trait_y:
        raise UserInputError(f"--trait-x and --trait-y must differ; both are {trait_x}")
    means = response_means(read_table(projections, Projections))
    eval_x, eval_y = read_table(evaluation_x, VectorEvaluation), read_table(evaluation_y, VectorEvaluation)
    plan = []  # (method, site, layer_x, layer_y)
    for (method, site), _ in means.groupby(["method", "site"], sort=True):
        layers = trait_layers(means, method, site)
        if trait_x in layers and trait_y in layers:
            plan += [(method, site, lx, ly) for lx, ly in layer_pairs(layers[trait_x], layers[trait_y])]
    if not plan:
        projected = sorted(f"{m}/{s}: {describe(trait_layers(means, m, s))}"
                           for m, s in means[["method", "site"]].drop_duplicates().itertuples(index=False))
        raise UserInputError(
            f"{projections}: nothing to decompose: {trait_x} and {trait_y} were never both projected for one "
            f"method and site (projected: {'; '.join(projected) or 'no response tokens'}); add both to traits"
        )
    shared = all(lx == ly for _, _, lx, ly in plan)
    tables = []
    for method, site, lx, ly in plan:
        tx = train_threshold(eval_x, evaluation_x, site, method, lx)
        ty = train_threshold(eval_y, evaluation_y, site, method, ly)
        try:
            tables.append(quadrants(means, trait_x, trait_y, tx, ty, lx, method, site, None if shared else ly))
        except ValueError as err:
            raise UserInputError(f"{projections}: {err}") from None
    table = pd.concat(tables, ignore_index=True)
    write_table(table, Quadrants, out)
    if shared:
        shares = {f"L{r.layer}:{r.quadrant}": round(float(r.share), 4) for r in table.itertuples()}
        write_json(metrics, {"trait_x": trait_x, "trait_y": trait_y, **shares})
    else:
        shares = {f"x@L{r.layer_x},y@L{r.layer_y}:{r.quadrant}": round(float(r.share), 4) for r in table.itertuples()}
        layers_x, layers_y = sorted({lx for *_, lx, _ in plan}), sorted({ly for *_, ly in plan})
        write_json(metrics, {"trait_x": trait_x, "trait_y": trait_y, "layers_x": layers_x, "layers_y": layers_y,
                             "pairing": "the traits share no layer: each read at its own", **shares})
    pairs = "layer(s)" if shared else "layer pair(s), each trait at its own layer"
    typer.echo(f"{trait_x} x {trait_y}: {len(tables)} {pairs} -> {out}")
