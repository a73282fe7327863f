"""Stage cross_evaluate: held-out accuracy of each trait's vector on every other trait's data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages._common import ParamsOption, per_trait, stage_params, user_errors
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import write_json

PARAMS = ("analyses.cross_evaluation",)


def split_rows(folder: Path, site: str, split: str):
    """(acts [n, n_layers, hidden], polarity) of one split of a trait's pooled activations (its folder)."""
    import torch

    from schemas.examples import Examples
    from trait_interp.core.tables import read_table
    from trait_interp.extraction.activation_store import (
        ACTIVATIONS_FILE,
        EXAMPLES_FILE,
        load_activations,
    )

    stored = load_activations(folder / ACTIVATIONS_FILE)
    if site not in stored.acts:
        raise UserInputError(f"{folder}: no activations for site '{site}'; add it to extraction.sites")
    examples = read_table(folder / EXAMPLES_FILE, Examples)
    rows = examples[(examples["split"] == split) & (examples["n_tokens"] > 0)]
    index = torch.tensor(rows["row"].to_numpy(), dtype=torch.long)
    return stored.acts[site][index], rows["polarity"].to_numpy(), stored.layers


@user_errors
def main(
    activations: Annotated[str, typer.Option(help="Each trait's activations folder, a pattern with {trait}.")],
    vectors: Annotated[str, typer.Option(help="Each trait's vectors folder, a pattern with {trait}.")],
    out: Annotated[Path, typer.Option(help="Cross-evaluation table to write (.csv).")],
    metrics: Annotated[Path, typer.Option(help="Metrics (.json): mean off-diagonal accuracy per method.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Every trait's vector, with its own train-set threshold, scored on every trait's held-out pairs."""
    import pandas as pd

    from schemas.analyses import CrossEvaluation
    from trait_interp.analyses.cross_evaluation import cross_accuracy
    from trait_interp.core.tables import write_table
    from trait_interp.extraction.vectors import load_vectors

    settings = stage_params(params, PARAMS)["analyses.cross_evaluation"]
    traits, methods, site = list(settings["traits"]), list(settings["methods"]), str(settings["site"])
    if len(traits) < 2:
        raise UserInputError(f"{params}:analyses.cross_evaluation.traits: name at least two traits")
    activation_dirs, vector_dirs = per_trait(activations, "activations", traits), per_trait(vectors, "vectors", traits)
    from tqdm.auto import (
        tqdm,  # progress on stderr: one activations file per trait (hundreds of MB at 80 layers)
    )

    heldout, train, layers = {}, {}, None
    for trait in tqdm(traits, desc="cross-evaluate: load", unit="trait"):
        acts, polarity, layers_t = split_rows(activation_dirs[trait], site, "val")
        heldout[trait] = (acts, polarity)
        train_acts, train_pol, _ = split_rows(activation_dirs[trait], site, "train")
        train[trait] = (train_acts, train_pol)
        if layers is not None and layers_t != layers:
            raise UserInputError(f"{activation_dirs[trait]}: captured layers {layers_t} differ from {layers}")
        layers = layers_t
    tables = []
    for method in tqdm(methods, desc="cross-evaluate: score", unit="method"):
        by_trait = {trait: load_vectors(vector_dirs[trait], site, method).vectors for trait in traits}
        table = cross_accuracy(by_trait, heldout, list(layers), train=train)
        tables.append(table.assign(method=method, site=site))
    table = pd.concat(tables, ignore_index=True)
    write_table(table, CrossEvaluation, out)
    summary = {}
    for method, group in table.groupby("method"):
        off = group[group["source_trait"] != group["target_trait"]]
        own = group[group["source_trait"] == group["target_trait"]]
        summary[method] = {"own_accuracy": round(float(own["accuracy"].mean()), 4),
                           "transfer_accuracy": round(float(off["accuracy"].mean()), 4)}
    write_json(metrics, {"traits": traits, "site": site, **summary})
    typer.echo(f"cross-evaluation: {len(traits)} traits x {len(methods)} methods -> {out}")
