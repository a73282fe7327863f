"""Stage steering_eval: baseline and coefficient search for one trait on the application model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from schemas.evaluation import VectorEvaluation
from schemas.steering import SteeringCurve, SteeringResponses
from stages._common import ParamsOption, chosen_model, rounded, stage_params, user_errors
from trait_interp.config import from_mapping
from trait_interp.datasets import load_steering_questions, read_definition, trait_display_name
from trait_interp.errors import UserInputError
from trait_interp.evaluation import best_index
from trait_interp.io import write_json
from trait_interp.judge.judge import steering_scores
from trait_interp.judge.session import judge_summary, open_judge
from trait_interp.judge.settings import JudgeSettings
from trait_interp.judge.templates import custom_eval_template
from trait_interp.models import context_limit, load_model, load_tokenizer
from trait_interp.prompting import PromptSpec, check_context, prompt_ids, uses_chat_template
from trait_interp.sites import check_site, num_layers
from trait_interp.steering_eval import (
    Decoder,
    SteeringSettings,
    evaluate_steering,
    resolve_steering_layers,
    rises_with_coefficient,
)
from trait_interp.tables import read_table, write_table
from trait_interp.vectors import load_vectors

PARAMS = ("application_model", "models.{application_model}", "layer", "steering", "judge")


def best_extraction_layer(evaluation: Path, site: str, method: str) -> int:
    """The layer where the steered method's vector separated held-out data best (``layer: best``)."""
    table = read_table(evaluation, VectorEvaluation)
    rows = table[(table["site"] == site) & (table["method"] == method)]
    if rows.empty:
        raise UserInputError(f"{evaluation}: no evaluation rows for site '{site}' method '{method}'")
    return int(rows.loc[best_index(rows), "layer"])


def sweep_metrics(sweep: list[dict], direction: str) -> dict[str, object]:
    """``sweep``: trait and coherence per ratio (``+0.5`` ...), and whether the trait follows the coefficient.

    ``sweep_monotonic`` is true when the trait score rises with the coefficient all the way through
    the sweep (falls, for a trait whose steering direction is negative). Empty without a sweep.
    """
    if not sweep:
        return {}
    ordered = sweep if direction != "negative" else list(reversed(sweep))
    return {
        "sweep": {f"{row['ratio']:+g}": {"trait": rounded(row["trait_mean"], 3),
                                         "coherence": rounded(row["coherence_mean"], 3)} for row in sweep},
        "sweep_monotonic": rises_with_coefficient(ordered),
    }


@user_errors
def main(
    trait: Annotated[str, typer.Option(help="Trait name, category/trait.")],
    questions: Annotated[Path, typer.Option(help="The trait's steering.json.")],
    definition: Annotated[Path, typer.Option(help="The trait's definition.txt (judge rubric).")],
    vectors: Annotated[Path, typer.Option(help="Vectors folder of the trait (from extract_vectors).")],
    evaluation: Annotated[Path, typer.Option(help="Vector evaluation table (for layer: best).")],
    judge_cache: Annotated[Path, typer.Option(help="Judge cache (.jsonl, a persistent DVC output).")],
    responses: Annotated[Path, typer.Option(help="Per-response table to write (.jsonl).")],
    best: Annotated[Path, typer.Option(help="Best (layers, method, coefficient) to write (.json).")],
    metrics: Annotated[Path, typer.Option(help="Summary metrics to write (.json).")],
    plot: Annotated[Path, typer.Option(help="Trait score and coherence per coefficient (.csv).")],
    lexicon: Annotated[
        Path | None, typer.Option(help="Planted vocabulary (datasets/toy/lexicon.json); read only by judge.backend: lexicon.")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Steer the application model along the trait vector; the judge scores trait and coherence."""
    p = stage_params(params, PARAMS)
    key, spec = chosen_model(p, "application_model", params)
    settings = from_mapping(SteeringSettings, p["steering"], f"{params}:steering")
    judge_settings = from_mapping(JudgeSettings, p["judge"], f"{params}:judge")
    site = check_site(settings.site, "steering.site")
    steering_set = load_steering_questions(questions)
    asked = steering_set.questions[: settings.subset] if settings.subset else steering_set.questions
    rubric = read_definition(definition, trait)
    vector_set = load_vectors(vectors, site, settings.method)
    if steering_set.eval_prompt is not None:
        try:
            custom_eval_template(steering_set.eval_prompt)
        except ValueError as err:
            raise UserInputError(f"{questions}: eval_prompt: {err}") from None

    # the judge first: an openai key is checked before any model loads
    with open_judge(judge_settings, judge_cache, f"{params}:judge", trait, lexicon) as judge:
        tokenizer = load_tokenizer(spec)
        chat = uses_chat_template(tokenizer, spec.prompt_mode)
        prompts = [prompt_ids(tokenizer, PromptSpec(q), chat, spec.merge_system_prompt) for q in asked]
        labels = [f"{questions}: questions[{i}]" for i in range(len(asked))]
        check_context(prompts, labels, settings.max_new_tokens, context_limit(spec), "steering.max_new_tokens")
        model = load_model(spec)
        layers = resolve_steering_layers(
            p["layer"], num_layers(model), lambda: best_extraction_layer(evaluation, site, settings.method)
        )
        by_layer = {layer: vector_set.layer(layer) for layer in layers}
        decoder = Decoder(
            pad_id=tokenizer.pad_token_id,
            eos_ids=(tokenizer.eos_token_id,),
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        )

        def score(qs, answers):
            return steering_scores(judge, trait_display_name(trait), rubric, steering_set.eval_prompt, qs, answers,
                                   relevance_check=judge_settings.relevance_check)

        outcome = evaluate_steering(model, prompts, asked, by_layer, settings, steering_set.direction, decoder, score,
                                    progress=True)
        stats = judge_summary(judge, judge_settings)

    layer_label = ",".join(str(layer) for layer in layers)
    common = {"trait": trait, "layers": layer_label}
    rows = pd.DataFrame([{**common, "method": settings.method, "site": site, **r} for r in outcome.responses])
    curve = pd.DataFrame([{**common, **s} for s in outcome.steps]).sort_values("coefficient", kind="stable")
    write_table(rows, SteeringResponses, responses)
    write_table(curve, SteeringCurve, plot)
    chosen = outcome.best
    write_json(best, {"trait": trait, "model": key, "position": vector_set.metadata.position, **chosen})
    write_json(
        metrics,
        {
            "trait": trait,
            "layers": layer_label,
            "method": settings.method,
            "baseline_trait": rounded(chosen["baseline_trait_mean"], 3),
            "best_trait": rounded(chosen["trait_mean"], 3),
            "delta": rounded(chosen["delta"], 3),
            "best_coherence": rounded(chosen["coherence_mean"], 3),
            "best_coefficient": rounded(chosen["coefficient"], 3),
            "best_ratio": rounded(chosen["ratio"], 3),
            "valid": chosen["valid"],
            **sweep_metrics(outcome.sweep, steering_set.direction),
            "judge": stats,
        },
    )
    typer.echo(
        f"{trait}: layers {layer_label}, baseline {rounded(chosen['baseline_trait_mean'], 3)}, best "
        f"{rounded(chosen['trait_mean'], 3)} at coef {rounded(chosen['coefficient'], 3)} (coherence "
        f"{rounded(chosen['coherence_mean'], 3)}{'' if chosen['valid'] else ', below min_coherence'}); "
        f"judge calls {stats['calls']}, cache hits {stats['cache_hits']}"
    )
