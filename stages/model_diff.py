"""Stage model_diff: replay variant A's exact response tokens through variant B and compare.

Per trait and projected layer, B against A: with ``layer: best`` each trait at its own best layer
(rows and metrics keys ``trait@L<layer>``); no two traits are paired, so nothing needs a shared layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages._common import (
    ParamsOption,
    per_trait,
    resolved_model,
    rounded,
    stage_params,
    user_errors,
)
from trait_interp.core.config import from_mapping
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import write_json
from trait_interp.core.positions import parse_position

PARAMS = ("traits", "monitoring")


@user_errors
def main(
    responses: Annotated[Path, typer.Option(help="Variant A's responses (generate_inference on the application model).")],
    vectors: Annotated[str, typer.Option(help="Each trait's vectors folder, a pattern with {trait}.")],
    layers: Annotated[Path, typer.Option(help="The monitoring layer record (monitor_layers): {trait: [layers]}.")],
    model: Annotated[Path, typer.Option("--model", help="Variant A's record (the application model, resolve_models).")],
    diff_model: Annotated[Path, typer.Option("--diff-model", help="Variant B's record (diff_model, resolve_models).")],
    out: Annotated[Path, typer.Option(help="Paired difference per trait and layer (.csv).")],
    cosines: Annotated[Path, typer.Option(help="Cosine of the mean activation shift with each vector (.csv).")],
    clauses: Annotated[Path, typer.Option(help="Response clauses ranked by mean projection delta (.jsonl: clause text can hold any character).")],
    metrics: Annotated[Path, typer.Option(help="Metrics (.json).")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """A = application model, B = diff_model, both on A's exact token ids (no re-generation)."""
    from schemas.analyses import ClauseDiff, DiffCosine, ModelDiff
    from schemas.inference import InferenceResponses
    from trait_interp.analyses.model_diff import (
        diff_vector_cosines,
        paired_diff,
        per_token_diff,
    )
    from trait_interp.core.forward import pad_token_id, token_sequences
    from trait_interp.core.models import load_model, load_tokenizer
    from trait_interp.core.sites import check_site, num_layers
    from trait_interp.core.tables import read_table, write_table
    from trait_interp.extraction.capture import capture_pooled
    from trait_interp.extraction.vectors import load_vectors
    from trait_interp.monitoring.projection import project_sequences, to_long_rows
    from trait_interp.monitoring.selection import (
        MonitoringSettings,
        monitor_vectors,
        read_layers,
    )

    p = stage_params(params, PARAMS)
    record_a, spec_a, where_a = resolved_model(model)
    record_b, spec_b, where_b = resolved_model(diff_model)
    key_a, key_b = record_a.key, record_b.key
    settings = from_mapping(MonitoringSettings, p["monitoring"], f"{params}:monitoring")
    site = check_site(settings.site, "monitoring.site")
    table = read_table(responses, InferenceResponses)
    if load_tokenizer(spec_a).get_vocab() != load_tokenizer(spec_b).get_vocab():
        raise UserInputError(f"{params}: diff_model '{key_b}' has another vocabulary than '{key_a}'; "
                             "replaying token ids needs the same tokenizer")
    sequences = token_sequences(table["prompt_ids"], table["response_ids"])
    vector_dirs = per_trait(vectors, "vectors", p["traits"])
    chosen_layers = read_layers(layers)
    tokens = [list(a) + list(b) for a, b in zip(table["prompt_tokens"], table["response_tokens"])]
    prompt_ids = list(table["prompt_id"])

    projections, means = {}, {}
    chosen = monitor_vectors(vector_dirs, chosen_layers, settings)
    for name, spec, where in (("a", spec_a, where_a), ("b", spec_b, where_b)):
        loaded = load_model(spec, where)
        n_layers = num_layers(loaded)
        pad_id = pad_token_id(loaded)
        result = project_sequences(loaded, sequences, chosen, pad_id, settings.batch_size, progress=True)
        projections[name] = to_long_rows(result, prompt_ids, sequences, tokens, chosen)
        pooled = capture_pooled(loaded, sequences, parse_position("response[:]"), [site], list(range(n_layers)),
                                pad_id, settings.batch_size)
        means[name] = pooled.acts[site][pooled.n_selected > 0].mean(dim=0)  # [n_layers, width]
        del loaded

    diff = paired_diff(projections["a"], projections["b"])
    full = {t: load_vectors(folder, site, settings.method) for t, folder in vector_dirs.items()}
    layers = full[p["traits"][0]].metadata.layers
    cos = diff_vector_cosines(means["a"], means["b"], {t: v.vectors for t, v in full.items()}, layers)
    cos = cos.assign(method=settings.method, site=site)
    ranked = per_token_diff(projections["a"], projections["b"])
    write_table(diff, ModelDiff, out)
    write_table(cos, DiffCosine, cosines)
    write_table(ranked, ClauseDiff, clauses)
    summary = {
        "variant_a": key_a, "variant_b": key_b, "n_prompts": len(table),
        **{f"{r.trait}@L{r.layer}": {"mean_diff": rounded(r.mean_diff), "paired_d": rounded(r.paired_d),
                                     "p_value": rounded(r.p_value)} for r in diff.itertuples()},
        "cosine": {f"{r.trait}@L{r.layer}": rounded(r.cosine) for r in cos.itertuples()},
    }
    write_json(metrics, summary)
    typer.echo(f"{key_b} vs {key_a} on {len(table)} replayed responses: {len(diff)} (trait, layer) rows -> {out}")
