"""Stage model_diff: replay variant A's exact response tokens through variant B and compare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schemas.analyses import ClauseDiff, DiffCosine, ModelDiff
from schemas.inference import InferenceResponses
from stages._common import ParamsOption, chosen_model, rounded, stage_params, user_errors
from trait_interp.analyses.model_diff import diff_vector_cosines, paired_diff, per_token_diff
from trait_interp.capture import TokenSequence, capture_pooled
from trait_interp.config import from_mapping
from trait_interp.errors import UserInputError
from trait_interp.io import write_json
from trait_interp.models import load_model, load_tokenizer
from trait_interp.monitoring import MonitoringSettings, monitor_vectors, steering_best_layer
from trait_interp.positions import parse_position
from trait_interp.projection import project_sequences, to_long_rows
from trait_interp.sites import check_site, num_layers
from trait_interp.tables import read_table, write_table
from trait_interp.vectors import load_vectors

PARAMS = (
    "application_model", "models.{application_model}", "diff_model", "models.{diff_model}", "layer", "traits",
    "monitoring",
)


@user_errors
def main(
    responses: Annotated[Path, typer.Option(help="Variant A's responses (generate_inference on the application model).")],
    vectors_root: Annotated[Path, typer.Option(help="Folder holding <trait>/vectors for every trait.")],
    steering_root: Annotated[Path, typer.Option(help="Folder holding <trait>/best.json (for layer: best).")],
    out: Annotated[Path, typer.Option(help="Paired difference per trait and layer (.csv).")],
    cosines: Annotated[Path, typer.Option(help="Cosine of the mean activation shift with each vector (.csv).")],
    clauses: Annotated[Path, typer.Option(help="Response clauses ranked by mean projection delta (.jsonl: clause text can hold any character).")],
    metrics: Annotated[Path, typer.Option(help="Metrics (.json).")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """A = application model, B = diff_model, both on A's exact token ids (no re-generation)."""
    p = stage_params(params, PARAMS)
    key_a, spec_a = chosen_model(p, "application_model", params)
    key_b, spec_b = chosen_model(p, "diff_model", params)
    settings = from_mapping(MonitoringSettings, p["monitoring"], f"{params}:monitoring")
    site = check_site(settings.site, "monitoring.site")
    table = read_table(responses, InferenceResponses)
    if load_tokenizer(spec_a).get_vocab() != load_tokenizer(spec_b).get_vocab():
        raise UserInputError(f"{params}: diff_model '{key_b}' has another vocabulary than '{key_a}'; "
                             "replaying token ids needs the same tokenizer")
    sequences = [TokenSequence(tuple(a), tuple(b)) for a, b in zip(table["prompt_ids"], table["response_ids"])]
    tokens = [list(a) + list(b) for a, b in zip(table["prompt_tokens"], table["response_tokens"])]
    prompt_ids = list(table["prompt_id"])

    projections, means = {}, {}
    for name, spec in (("a", spec_a), ("b", spec_b)):
        model = load_model(spec)
        n_layers = num_layers(model)
        vectors = monitor_vectors(vectors_root, p["traits"], p["layer"], n_layers, settings,
                                  steering_best_layer(steering_root))
        pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        result = project_sequences(model, sequences, vectors, pad_id, settings.batch_size, progress=True)
        projections[name] = to_long_rows(result, prompt_ids, sequences, tokens, vectors)
        pooled = capture_pooled(model, sequences, parse_position("response[:]"), [site], list(range(n_layers)),
                                pad_id, settings.batch_size)
        means[name] = pooled.acts[site][pooled.n_selected > 0].mean(dim=0)  # [n_layers, width]
        del model

    diff = paired_diff(projections["a"], projections["b"])
    full = {t: load_vectors(vectors_root / t / "vectors", site, settings.method) for t in p["traits"]}
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
