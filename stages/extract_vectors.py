"""Stage extract_vectors: one unit vector per layer, per site and method, with a JSON sidecar.

Vectors are stored in the stored activations' dtype (``extraction.store_dtype``), computed in float32.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from stages._common import ParamsOption, stage_params, user_errors
from trait_interp.core.config import from_mapping
from trait_interp.core.io import atomic_dir

PARAMS = ("vectors",)
# the options whose paths this stage writes, one trait at a time (stages/for_each_trait.py)
TRAIT_OUTPUTS = ("out",)


@user_errors
def main(
    activations: Annotated[Path, typer.Option(help="Folder written by capture_activations.")],
    out: Annotated[Path, typer.Option(help="Output folder: <site>/<method>.safetensors + .json.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Run every configured method on the train split, per site and layer."""
    from schemas.examples import Examples
    from trait_interp.core.tables import read_table
    from trait_interp.extraction.activation_store import (
        ACTIVATIONS_FILE,
        EXAMPLES_FILE,
        META_FILE,
        load_activations,
        read_meta,
    )
    from trait_interp.extraction.extract import (
        VectorSettings,
        check_methods_fit_pairing,
        class_sets,
        extract_layers,
        mean_norms,
    )
    from trait_interp.extraction.vectors import VectorMetadata, VectorSet, save_vectors

    settings = from_mapping(VectorSettings, stage_params(params, PARAMS)["vectors"], f"{params}:vectors")
    stored = load_activations(activations / ACTIVATIONS_FILE)
    examples = read_table(activations / EXAMPLES_FILE, Examples)
    meta = read_meta(activations / META_FILE)
    check_methods_fit_pairing(settings.methods, meta.paired, f"{params}:vectors.methods")
    from tqdm.auto import (
        tqdm,  # progress on stderr: a (site, method) runs every layer (minutes at 80 layers)
    )

    bar = tqdm(total=len(stored.acts) * len(settings.methods), desc=f"extract {meta.trait}", unit="method")
    with atomic_dir(out) as tmp, bar:
        for site, acts in stored.acts.items():
            train = class_sets(acts, examples, "train", meta.paired)
            val = class_sets(acts, examples, "val", meta.paired)  # counted as train is: usable rows only
            norms = mean_norms(train, stored.layers)
            for method in settings.methods:
                bar.set_postfix_str(f"{site}/{method}, {len(stored.layers)} layers")
                vectors, info = extract_layers(train, method, settings.settings, stored.layers)
                metadata = VectorMetadata(
                    trait=meta.trait,
                    variant=meta.variant,
                    model=meta.model,
                    revision=meta.revision,
                    adapter=meta.adapter,
                    site=site,
                    position=meta.position,
                    method=method,
                    method_params=asdict(settings.settings),
                    dataset_hash=meta.dataset_hash,
                    n_train=int(train.positive.shape[0] + train.negative.shape[0]),
                    n_val=int(val.positive.shape[0] + val.negative.shape[0]),
                    layers=list(stored.layers),
                    train_metrics=info,
                    activation_norms=norms,
                )
                save_vectors(tmp, VectorSet(vectors, metadata), dtype=stored.stored_dtype[site])  # as the activations were stored
                bar.update(1)
    typer.echo(f"{meta.trait}: {len(settings.methods)} methods x {len(stored.acts)} sites -> {out}")
