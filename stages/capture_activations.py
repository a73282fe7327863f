"""Stage capture_activations: pooled activations of every response at the configured position."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stages._common import (
    ModelRecordOption,
    ParamsOption,
    resolved_model,
    stage_params,
    user_errors,
)
from trait_interp.core.config import from_mapping
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import atomic_dir
from trait_interp.core.layers import parse_layers
from trait_interp.core.positions import parse_position

if TYPE_CHECKING:
    import pandas as pd

PARAMS = ("extraction",)
# the options whose paths this stage writes, one trait at a time (stages/for_each_trait.py)
TRAIT_OUTPUTS = ("out",)


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
    model: ModelRecordOption,
    vetting: Annotated[
        Path | None, typer.Option(help="Vetting table from vet_responses (.jsonl); only kept responses are used.")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Capture pooled activations (one forward pass per batch) and a pair-preserving train/val split."""
    import pandas as pd

    from schemas.examples import Examples
    from schemas.responses import Responses
    from schemas.vetting import VettingScores
    from trait_interp.core.forward import pad_token_id, token_sequences
    from trait_interp.core.models import load_model
    from trait_interp.core.sites import check_site, num_layers
    from trait_interp.core.tables import read_table, write_table
    from trait_interp.extraction.activation_store import (
        ACTIVATIONS_FILE,
        EXAMPLES_FILE,
        META_FILE,
        ActivationsMeta,
        save_activations,
        write_meta,
    )
    from trait_interp.extraction.capture import (
        ExtractionSettings,
        capture_pooled,
        store_dtype,
    )
    from trait_interp.extraction.split import assign_split

    p = stage_params(params, PARAMS)
    record, spec, where = resolved_model(model)
    settings = from_mapping(ExtractionSettings, p["extraction"], f"{params}:extraction")
    position = parse_position(settings.position)
    sites = tuple(check_site(site, "extraction.sites") for site in settings.sites)
    table = read_table(responses, Responses)
    n_generated = len(table)
    if vetting is not None:
        table = kept_responses(table, read_table(vetting, VettingScores), vetting)

    loaded = load_model(spec, where)
    layers = parse_layers(settings.layers, num_layers(loaded), "extraction.layers")
    sequences = token_sequences(table["prompt_ids"], table["response_ids"])
    pooled = capture_pooled(loaded, sequences, position, sites, layers, pad_token_id(loaded), settings.batch_size,
                            progress=True)

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
    meta = ActivationsMeta(
        trait=str(table["trait"].iloc[0]),
        variant=record.key,
        model=record.source,
        revision=record.revision_label,
        adapter=record.adapter_label,
        position=str(position),
        sites=sites,
        layers=tuple(layers),
        paired=settings.paired,
        val_fraction=settings.val_fraction,
        split_seed=settings.split_seed,
        dataset_hash=dataset_hash(table),
        n_examples=len(table),
        n_generated=n_generated,
        vetting=None if vetting is None else str(vetting),
        n_empty_selection=n_empty,
    )
    stored = store_dtype(settings.store_dtype, loaded)  # pooled in float32; stored in the compute dtype unless float32
    with atomic_dir(out) as tmp:
        save_activations(tmp / ACTIVATIONS_FILE, pooled.acts, layers, stored)
        write_table(examples, Examples, tmp / EXAMPLES_FILE)
        write_meta(tmp / META_FILE, meta)
    if n_empty:
        typer.echo(f"warning: {n_empty} examples selected no token at {position}; they are excluded", err=True)
    typer.echo(f"captured {len(table)} examples x {len(sites)} sites x {len(layers)} layers "
               f"(stored as {str(stored).removeprefix('torch.')}) -> {out}")
