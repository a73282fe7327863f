"""Stage compare_groups: per trait and layer, do two groups of prompts differ in mean projection?

Each trait is compared at every layer it was projected at, on its own: traits at different layers
(``layer: best``) need no pairing; the rows and the metrics keys (``trait@L<layer>``) say each layer.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from stages._common import ParamsOption, rounded, stage_params, user_errors
from trait_interp.analyses.settings import AnalysisSettings
from trait_interp.core.datasets import load_prompt_set
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import write_json

PARAMS = ("analyses.n_boot", "analyses.seed")


@user_errors
def main(
    prompt_set: Annotated[Path, typer.Option(help="The prompt set (.json) whose prompts carry the label field.")],
    projections: Annotated[Path, typer.Option(help="Projection table of that prompt set (.parquet).")],
    label: Annotated[str, typer.Option(help="Prompt field holding the group label (e.g. note).")],
    group_a: Annotated[str, typer.Option(help="Label of group A (d is A minus B).")],
    group_b: Annotated[str, typer.Option(help="Label of group B.")],
    out: Annotated[Path, typer.Option(help="Comparison table to write (.csv).")],
    metrics: Annotated[Path, typer.Option(help="Metrics (.json): d, interval and p per trait and layer.")],
    labels_file: Annotated[
        Path | None, typer.Option(help="CSV prompt_id,label (e.g. from label_responses) instead of a prompt field.")
    ] = None,
    allow_empty_group: Annotated[
        bool, typer.Option(help="A group with no prompt gives NaN statistics instead of an error (judge verdicts).")
    ] = False,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Mean response projection per group, signed Cohen's d with a bootstrap 95% interval, Welch p-value."""
    from schemas.analyses import GroupComparison
    from schemas.projections import Projections
    from trait_interp.analyses.group_comparison import (
        compare_groups,
        labels_from_field,
        read_labels,
        response_means,
    )
    from trait_interp.core.tables import read_table, write_table

    p = stage_params(params, PARAMS)
    settings = AnalysisSettings(n_boot=p["analyses.n_boot"], seed=p["analyses.seed"])
    if labels_file is not None:
        labels = read_labels(labels_file)
    else:
        prompts = load_prompt_set(prompt_set)
        records = [{"id": q.id, "note": q.note, **q.extra} for q in prompts.prompts]
        try:
            labels = labels_from_field(records, label)
        except ValueError as err:
            raise UserInputError(f"{prompt_set}: {err}; give every prompt a '{label}' or use a labels file") from None
    means = response_means(read_table(projections, Projections))
    try:
        table = compare_groups(means, labels, group_a, group_b, settings.n_boot, settings.seed, allow_empty=allow_empty_group)
    except ValueError as err:
        raise UserInputError(f"{prompt_set}: {err}") from None
    write_table(table, GroupComparison, out)
    summary = {
        f"{row.trait}@L{row.layer}": {
            "mean_a": rounded(row.mean_a), "mean_b": rounded(row.mean_b), "cohens_d": rounded(row.cohens_d),
            "ci_low": rounded(row.ci_low), "ci_high": rounded(row.ci_high), "p_value": rounded(row.p_value),
        }
        for row in table.itertuples()
    }
    sizes = {group_a: int(table["n_a"].max()) if len(table) else 0, group_b: int(table["n_b"].max()) if len(table) else 0}
    write_json(metrics, {"groups": [group_a, group_b], "n": sizes,
                         **summary, "settings": asdict(settings)})
    typer.echo(f"{group_a} vs {group_b}: {len(table)} (trait, layer) comparisons -> {out}")
