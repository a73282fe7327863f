"""Stage steering_eval: baseline and coefficient search for one trait on the application model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stages._common import (
    JudgeRecordOption,
    ModelRecordOption,
    ParamsOption,
    resolved_model,
    rounded,
    stage_params,
    touch_output,
    user_errors,
)
from trait_interp.core.config import from_mapping
from trait_interp.core.datasets import (
    load_steering_questions,
    read_definition,
    trait_display_name,
)
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import write_json
from trait_interp.core.layers import parse_layer_choice

if TYPE_CHECKING:
    import pandas as pd

    from trait_interp.steering.best import BestSteering
    from trait_interp.steering.evaluate import SteeringSettings

PARAMS = ("layer", "steering", "judge")
# the options whose paths this stage writes, one trait at a time (stages/for_each_trait.py)
TRAIT_OUTPUTS = ("responses", "best", "metrics", "headline", "plot", "judge_cache")
TRAIT_CACHES = ("judge_cache",)  # content-addressed answers: present or not, not their bytes


def best_extraction_layer(evaluation: Path, site: str, method: str) -> int:
    """The layer where the steered method's vector separated held-out data best (``layer: best``)."""
    from schemas.evaluation import VectorEvaluation
    from trait_interp.core.tables import read_table
    from trait_interp.extraction.evaluation import best_index

    table = read_table(evaluation, VectorEvaluation)
    rows = table[(table["site"] == site) & (table["method"] == method)]
    if rows.empty:
        raise UserInputError(f"{evaluation}: no evaluation rows for site '{site}' method '{method}'")
    return int(rows.loc[best_index(rows), "layer"])


def best_layer_source(settings: SteeringSettings, evaluation: Path, sweep_best: Path | None, site: str,
                      where: str) -> Callable[[], int]:
    """What ``layer: best`` stands for (``steering.best_from``): the extraction's best layer or the sweep's."""
    from trait_interp.steering.sweep_results import read_best_layers

    if settings.best_from == "extraction":
        return lambda: best_extraction_layer(evaluation, site, settings.method)
    if sweep_best is None:
        raise UserInputError(f"{where}: sweep needs the trait's sweep record (--sweep-best, steering_sweep's "
                             "best_layers.json); pass it or set steering.best_from: extraction")
    return lambda: read_best_layers(sweep_best).layer_for(settings.method, site, where)


def sweep_metrics(sweep: list[dict], direction: str) -> dict[str, object]:
    """``sweep``: trait and coherence per ratio (``+0.5`` ...), and whether the trait follows the coefficient.

    ``sweep_monotonic`` is true when the trait score rises with the coefficient all the way through
    the sweep (falls, for a trait whose steering direction is negative). Empty without a sweep.
    """
    from trait_interp.steering.evaluate import rises_with_coefficient

    if not sweep:
        return {}
    ordered = sweep if direction != "negative" else list(reversed(sweep))
    return {
        "sweep": {f"{row['ratio']:+g}": {"trait": rounded(row["trait_mean"], 3),
                                         "coherence": rounded(row["coherence_mean"], 3)} for row in sweep},
        "sweep_monotonic": rises_with_coefficient(ordered),
    }


def headline_of(evaluation: pd.DataFrame, best: BestSteering) -> dict[str, object]:
    """One trait's row of ``dvc metrics show``: its best vector (held out) and what steering it did."""
    from trait_interp.extraction.evaluation import best_vector

    vector = best_vector(evaluation)
    return {
        "vector": f"{vector['method']}@{vector['site']}",  # the best vector on held-out pairs
        "layer": int(vector["layer"]),
        "val_acc": rounded(float(vector["val_accuracy"]), 3),
        "steered": ",".join(str(layer) for layer in best.layers),  # the layers steering used
        "delta": rounded(best.delta, 3),  # trait score at the chosen step minus the baseline
        "coherence": rounded(best.coherence_mean, 3),
        "coherent": best.valid,  # coherence >= steering.min_coherence
    }


@user_errors
def main(
    trait: Annotated[str, typer.Option(help="Trait name, category/trait.")],
    questions: Annotated[Path, typer.Option(help="The trait's steering.json.")],
    definition: Annotated[Path, typer.Option(help="The trait's definition.txt (judge rubric).")],
    vectors: Annotated[Path, typer.Option(help="Vectors folder of the trait (from extract_vectors).")],
    evaluation: Annotated[Path, typer.Option(help="Vector evaluation table (for layer: best and the headline).")],
    judge_cache: Annotated[Path, typer.Option(help="Judge cache (.jsonl, a persistent DVC output).")],
    responses: Annotated[Path, typer.Option(help="Per-response table to write (.jsonl).")],
    best: Annotated[Path, typer.Option(help="Best (layers, method, coefficient) to write (.json).")],
    metrics: Annotated[Path, typer.Option(help="Steering metrics to write (.json).")],
    headline: Annotated[
        Path, typer.Option(help="The trait's headline (.json): best vector, held-out accuracy, steering delta and coherence.")
    ],
    plot: Annotated[Path, typer.Option(help="Trait score and coherence per coefficient (.csv).")],
    model: ModelRecordOption,
    judge_record: JudgeRecordOption,
    sweep_best: Annotated[
        Path | None, typer.Option(help="The trait's sweep record (best_layers.json), read for steering.best_from: sweep.")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Steer the application model along the trait vector; the judge scores trait and coherence."""
    import pandas as pd

    from schemas.evaluation import VectorEvaluation
    from schemas.steering import SteeringCurve, SteeringResponses
    from trait_interp.core.models import context_limit, load_model, load_tokenizer
    from trait_interp.core.prompting import (
        PromptSpec,
        check_context,
        prompt_ids,
        uses_chat_template,
    )
    from trait_interp.core.sites import check_site, num_layers
    from trait_interp.core.tables import read_table, write_table
    from trait_interp.extraction.vectors import load_vectors
    from trait_interp.judge.judge import steering_scores
    from trait_interp.judge.record import read_judge_record
    from trait_interp.judge.session import judge_summary, open_judge
    from trait_interp.judge.settings import JudgeSettings
    from trait_interp.judge.templates import custom_eval_template
    from trait_interp.steering.best import BestSteering, write_best
    from trait_interp.steering.evaluate import (
        Decoder,
        SteeringSettings,
        evaluate_steering,
    )

    p = stage_params(params, PARAMS)
    record, spec, where = resolved_model(model)
    settings = from_mapping(SteeringSettings, p["steering"], f"{params}:steering")
    judge_settings = from_mapping(JudgeSettings, p["judge"], f"{params}:judge")
    site = check_site(settings.site, "steering.site")
    steering_set = load_steering_questions(questions)
    asked = steering_set.questions[: settings.subset] if settings.subset else steering_set.questions
    rubric = read_definition(definition, trait)
    vector_set = load_vectors(vectors, site, settings.method)
    best_layer = best_layer_source(settings, evaluation, sweep_best, site, f"{params}:steering.best_from")
    if steering_set.eval_prompt is not None:
        try:
            custom_eval_template(steering_set.eval_prompt)
        except ValueError as err:
            raise UserInputError(f"{questions}: eval_prompt: {err}") from None

    # the judge first: an openai key is checked before any model loads
    with open_judge(judge_settings, read_judge_record(judge_record), judge_cache, f"{params}:judge", trait) as judge:
        tokenizer = load_tokenizer(spec)
        chat = uses_chat_template(tokenizer, spec.prompt_mode)
        prompts = [prompt_ids(tokenizer, PromptSpec(q), chat, spec.merge_system_prompt) for q in asked]
        labels = [f"{questions}: questions[{i}]" for i in range(len(asked))]
        check_context(prompts, labels, settings.max_new_tokens, context_limit(spec), "steering.max_new_tokens")
        loaded = load_model(spec, where)
        layers = parse_layer_choice(p["layer"], num_layers(loaded), best_layer, "layer", allow_all=False)
        by_layer = {layer: vector_set.layer(layer) for layer in layers}
        decoder = Decoder(
            pad_id=tokenizer.pad_token_id,
            eos_ids=record.eos_token_ids,
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        )

        def score(qs, answers):
            return steering_scores(judge, trait_display_name(trait), rubric, steering_set.eval_prompt, qs, answers,
                                   relevance_check=judge_settings.relevance_check)

        outcome = evaluate_steering(loaded, prompts, asked, by_layer, settings, steering_set.direction, decoder, score,
                                    progress=True)
        stats = judge_summary(judge, judge_settings)
    touch_output(judge_cache)  # a DVC output, also when every answer came from the cache

    layer_label = ",".join(str(layer) for layer in layers)
    common = {"trait": trait, "layers": layer_label}
    rows = pd.DataFrame([{**common, "method": settings.method, "site": site, **r} for r in outcome.responses])
    curve = pd.DataFrame([{**common, **s} for s in outcome.steps]).sort_values("coefficient", kind="stable")
    write_table(rows, SteeringResponses, responses)
    write_table(curve, SteeringCurve, plot)
    chosen = outcome.best
    chosen_step = BestSteering(trait=trait, model=record.key, position=vector_set.metadata.position, **chosen)
    write_best(best, chosen_step)
    write_json(headline, headline_of(read_table(evaluation, VectorEvaluation), chosen_step))
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
