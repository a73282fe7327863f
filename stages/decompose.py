"""Stage decompose: for a pair of traits, the share of responses in each high/low quadrant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from schemas.analyses import Quadrants
from schemas.evaluation import VectorEvaluation
from schemas.projections import Projections
from stages._common import ParamsOption, user_errors
from trait_interp.analyses.decomposition import quadrants
from trait_interp.analyses.group_comparison import response_means
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import write_json
from trait_interp.core.tables import read_table, write_table

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
    means = response_means(read_table(projections, Projections))
    eval_x, eval_y = read_table(evaluation_x, VectorEvaluation), read_table(evaluation_y, VectorEvaluation)
    tables = []
    for (method, site, layer), group in means.groupby(["method", "site", "layer"]):
        if not {trait_x, trait_y} <= set(group["trait"]):
            continue
        layer = int(layer)
        tx = train_threshold(eval_x, evaluation_x, site, method, layer)
        ty = train_threshold(eval_y, evaluation_y, site, method, layer)
        tables.append(quadrants(means, trait_x, trait_y, tx, ty, layer, method, site))
    if not tables:
        raise UserInputError(
            f"{projections}: {trait_x} and {trait_y} were never projected at the same layer; "
            "set layer to an int, a list or all (best may pick different layers)"
        )
    table = pd.concat(tables, ignore_index=True)
    write_table(table, Quadrants, out)
    shares = {f"L{r.layer}:{r.quadrant}": round(float(r.share), 4) for r in table.itertuples()}
    write_json(metrics, {"trait_x": trait_x, "trait_y": trait_y, **shares})
    typer.echo(f"{trait_x} x {trait_y}: {len(tables)} layer(s) -> {out}")
