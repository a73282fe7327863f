"""Stage evaluate_vectors: held-out accuracy, signed Cohen's d, polarity and p-value per layer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages._common import user_errors
from trait_interp.core.io import write_json, write_with

PARAMS: tuple[str, ...] = ()
# the options whose paths this stage writes, one trait at a time (stages/for_each_trait.py)
TRAIT_OUTPUTS = ("table", "metrics", "plot_accuracy", "plot_effect")
PLOT_SITE = "residual"  # the site drawn in the layer plots (others are in the table)


@user_errors
def main(
    activations: Annotated[Path, typer.Option(help="Folder written by capture_activations.")],
    vectors: Annotated[Path, typer.Option(help="Folder written by extract_vectors.")],
    table: Annotated[Path, typer.Option(help="Per (site, method, layer) table to write (.csv).")],
    metrics: Annotated[Path, typer.Option(help="Summary metrics JSON (best layer per site and method).")],
    plot_accuracy: Annotated[Path, typer.Option(help="CSV: layer x method val accuracy (residual site).")],
    plot_effect: Annotated[Path, typer.Option(help="CSV: layer x method signed Cohen's d (residual site).")],
) -> None:
    """Score every vector on the held-out pairs; the threshold is fitted on train only."""
    import pandas as pd

    from schemas.evaluation import VectorEvaluation
    from schemas.examples import Examples
    from trait_interp.core.tables import read_table, write_table
    from trait_interp.extraction.activation_store import (
        ACTIVATIONS_FILE,
        EXAMPLES_FILE,
        META_FILE,
        load_activations,
        read_meta,
    )
    from trait_interp.extraction.evaluation import (
        MIN_VAL_PAIRS,
        check_held_out,
        evaluate_layers,
        summarize,
    )
    from trait_interp.extraction.extract import class_sets
    from trait_interp.extraction.vectors import load_vectors

    stored = load_activations(activations / ACTIVATIONS_FILE)
    examples = read_table(activations / EXAMPLES_FILE, Examples)
    meta = read_meta(activations / META_FILE)
    methods = sorted(path.stem for path in vectors.glob("*/*.safetensors") if path.parent.name == meta.sites[0])
    records = []
    for site, acts in stored.acts.items():
        train = class_sets(acts, examples, "train", meta.paired)
        val = class_sets(acts, examples, "val", meta.paired)
        check_held_out(val, str(activations), meta.val_fraction)
        for method in methods:
            rows = evaluate_layers(train, val, load_vectors(vectors, site, method).vectors, stored.layers)
            records += [{"trait": meta.trait, "site": site, "method": method, **row} for row in rows]
    df = write_table(pd.DataFrame.from_records(records), VectorEvaluation, table)
    plot_site = PLOT_SITE if PLOT_SITE in stored.acts else meta.sites[0]
    summary = summarize(df, meta, plot_site)
    write_json(metrics, summary)
    held_out = summary["held_out"]
    if held_out["too_few"]:
        unit = "pairs" if meta.paired else "examples per side (at least)"
        typer.echo(
            f"warning: {meta.trait}: only {min(held_out['positive'], held_out['negative'])} held-out {unit} "
            f"(fewer than {MIN_VAL_PAIRS}): val accuracy moves in steps of "
            f"{1 / (2 * min(held_out['positive'], held_out['negative'])):.2f} and Cohen's d is uncertain; "
            "raise extraction.val_fraction or add scenarios",
            err=True,
        )
    for path, column in ((plot_accuracy, "val_accuracy"), (plot_effect, "cohens_d")):
        wide = df[df["site"] == plot_site].pivot(index="layer", columns="method", values=column).reset_index()
        write_with(path, lambda tmp, wide=wide: wide.to_csv(tmp, index=False, float_format="%.4f"))
    typer.echo(f"{meta.trait}: evaluated {len(methods)} methods x {len(stored.acts)} sites -> {metrics}")
