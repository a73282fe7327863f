"""Stage capture_activations: pooled activations of every response at the configured position."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from schemas.examples import Examples
from schemas.responses import Responses
from schemas.vetting import VettingScores
from stages._common import ParamsOption, chosen_model, stage_params, user_errors
from trait_interp.activation_store import save_activations
from trait_interp.capture import ExtractionSettings, TokenSequence, capture_pooled
from trait_interp.config import from_mapping
from trait_interp.errors import UserInputError
from trait_interp.io import atomic_dir, write_json
from trait_interp.layers import parse_layers
from trait_interp.models import load_model
from trait_interp.positions import parse_position
from trait_interp.sites import check_site, num_layers
from trait_interp.split import assign_split
from trait_interp.tables import read_table, write_table

PARAMS = ("extraction_model", "models.{extraction_model}", "extraction")


def dataset_hash(responses: pd.DataFrame) -> str:
    """sha256 of the scenarios (pair, polarity, prompt, system prompt) the responses came from."""
    keys = responses[["pair_index", "polarity", "prompt", "system_prompt"]].sort_values(["pair_index", "polarity"])
    return hashlib.sha256(json.dumps(keys.values.tolist()).encode()).hexdigest()


def kept_responses(table: pd.DataFrame, vetting: pd.DataFrame, where: Path) -> pd.DataFrame:
    """The responses the vetting table keeps; it must cover exactly the responses given."""
    keys = ["pair_index", "polarity"]
    merged = table.merge(vetting[keys + ["kept"]], on=keys, how="left", validate="one_to_one")
    if merged["kept"].isna().any() or len(vetting) != len(table):
        raise UserInputError(f"{where}: vetting table does not match the responses; re-run vet_responses")
    return table[merged["kept"].astype(bool).to_numpy()].reset_index(drop=True)


@user_errors
def main(
    responses: Annotated[Path, typer.Option(help="Responses table from generate_responses (.jsonl).")],
    out: Annotated[Path, typer.Option(help="Output folder: activations.safetensors, examples.csv, meta.json.")],
    vetting: Annotated[
        Path | None, typer.Option(help="Vetting table from vet_responses (.jsonl); only kept responses are used.")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Capture pooled activations (one forward pass per batch) and a pair-preserving train/val split."""
    p = stage_params(params, PARAMS)
    key, spec = chosen_model(p, "extraction_model", params)
    settings = from_mapping(ExtractionSettings, p["extraction"], f"{params}:extraction")
    position = parse_position(settings.position)
    sites = tuple(check_site(site, "extraction.sites") for site in settings.sites)
    table = read_table(responses, Responses)
    n_generated = len(table)
    if vetting is not None:
        table = kept_responses(table, read_table(vetting, VettingScores), vetting)

    model = load_model(spec)
    layers = parse_layers(settings.layers, num_layers(model), "extraction.layers")
    sequences = [TokenSequence(tuple(a), tuple(b)) for a, b in zip(table["prompt_ids"], table["response_ids"])]
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    pooled = capture_pooled(model, sequences, position, sites, layers, pad_id, settings.batch_size, progress=True)

    groups = table["pair_index"] if settings.paired else list(zip(table["polarity"], table["pair_index"]))
    split_of = assign_split(list(groups), settings.val_fraction, settings.split_seed)
    examples = pd.DataFrame(
        {
            "row": range(len(table)),
            "pair_index": table["pair_index"],
            "polarity": table["polarity"],
            "split": [split_of[g] for g in groups],
            "n_tokens": pooled.n_selected.tolist(),
        }
    )
    n_empty = int((examples["n_tokens"] == 0).sum())
    with atomic_dir(out) as tmp:
        save_activations(tmp / "activations.safetensors", pooled.acts, layers)
        write_table(examples, Examples, tmp / "examples.csv")
        write_json(
            tmp / "meta.json",
            {
                "trait": str(table["trait"].iloc[0]),
                "variant": key,
                "model": spec.source,
                "revision": spec.revision,
                "adapter": None,
                "position": str(position),
                "sites": list(sites),
                "layers": list(layers),
                "paired": settings.paired,
                "val_fraction": settings.val_fraction,
                "split_seed": settings.split_seed,
                "dataset_hash": dataset_hash(table),
                "n_examples": len(table),
                "n_generated": n_generated,
                "vetting": None if vetting is None else str(vetting),
                "n_empty_selection": n_empty,
            },
        )
    if n_empty:
        typer.echo(f"warning: {n_empty} examples selected no token at {position}; they are excluded", err=True)
    typer.echo(f"captured {len(table)} examples x {len(sites)} sites x {len(layers)} layers -> {out}")
