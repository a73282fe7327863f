"""Stage steering_predictors: per trait and method, how Cohen's d and val accuracy across layers predict the sweep's effect."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stages._common import ParamsOption, per_trait, rounded, stage_params, user_errors
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import write_json

if TYPE_CHECKING:
    import pandas as pd

PARAMS = ("traits",)


def metrics_of(table: pd.DataFrame, pooled_r: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{trait: {method: {...}}, pooled: {method: {...}}}`` with the table's headline columns."""
    import pandas as pd

    keep = ("n_layers", "r_cohens_d", "r_val_accuracy", "best_steering_layer", "best_steering_effect",
            "best_extraction_layer", "same_layer")
    out: dict[str, Any] = {}
    for row in table.to_dict(orient="records"):
        entry = {}
        for key in keep:
            value = row[key]
            if isinstance(value, bool) or value is None or value is pd.NA:
                entry[key] = None if value is pd.NA else value
            elif isinstance(value, float):
                entry[key] = rounded(value, 4)
            else:
                entry[key] = int(value)
        out.setdefault(str(row["trait"]), {})[str(row["method"])] = entry
    out["pooled"] = {m: {k: rounded(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                     for m, r in pooled_r.items()}
    return out


@user_errors
def main(
    evaluation: Annotated[str, typer.Option(help="Each trait's evaluation.csv, a pattern with {trait}.")],
    results: Annotated[str, typer.Option(help="Each trait's sweep results.csv, a pattern with {trait}.")],
    out: Annotated[Path, typer.Option(help="Per (trait, method) table to write (.csv).")],
    metrics: Annotated[Path, typer.Option(help="Metrics to write (.json).")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Correlate extraction metrics with the sweep's best coherent effect across layers; best layers side by side."""
    import pandas as pd

    from schemas.evaluation import VectorEvaluation
    from schemas.sweep import SteeringPredictors, SweepResults
    from trait_interp.analyses.steering_predictors import pooled, predictor_rows
    from trait_interp.core.tables import read_table, write_table

    p = stage_params(params, PARAMS)
    traits = [str(t) for t in p["traits"]]
    evaluations = {t: read_table(f, VectorEvaluation) for t, f in per_trait(evaluation, "evaluation", traits).items()}
    sweeps = {t: read_table(f, SweepResults) for t, f in per_trait(results, "results", traits).items()}
    rows = []
    for trait in traits:
        try:
            rows += predictor_rows(trait, evaluations[trait], sweeps[trait])
        except UserInputError as err:
            raise UserInputError(f"{trait}: {err}") from None
    table = write_table(pd.DataFrame(rows), SteeringPredictors, out)
    write_json(metrics, metrics_of(table, pooled(evaluations, sweeps)))
    for row in table.itertuples():
        r_d, r_acc = rounded(row.r_cohens_d, 3), rounded(row.r_val_accuracy, 3)
        steering = "none coherent" if pd.isna(row.best_steering_layer) else int(row.best_steering_layer)
        typer.echo(f"{row.trait} {row.method}: r(d, effect) {r_d}, r(acc, effect) {r_acc} over {row.n_layers} layers; "
                   f"best steering layer {steering}, best extraction layer {row.best_extraction_layer}")
