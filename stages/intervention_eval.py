"""Stage intervention_eval: one gated or capped intervention on trigger and non-trigger prompts, judged like steering."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stages._common import (
    JudgeRecordOption,
    ModelRecordOption,
    ParamsOption,
    fill_pattern,
    resolved_model,
    rounded,
    stage_params,
    touch_output,
    user_errors,
)
from trait_interp.core.config import from_mapping
from trait_interp.core.datasets import (
    load_prompt_set,
    load_steering_questions,
    read_definition,
    trait_display_name,
)
from trait_interp.core.io import write_json

if TYPE_CHECKING:
    from trait_interp.steering.intervention_record import InterventionRecord

PARAMS = ("interventions.{key}", "steering.max_new_tokens", "steering.batch_size", "judge")


def headline_of(summary: dict) -> dict[str, object]:
    """The intervention's row of ``dvc metrics show``: its effect on trigger prompts, what leaks to the others."""
    trigger, other = summary["trigger"], summary["non_trigger"]
    return {
        "delta": rounded(trigger["delta"], 3),  # trait change on trigger prompts (intervened minus unsteered)
        "coherence": rounded(trigger["coherence"], 3),  # coherence of the intervened trigger answers
        "false_fire": rounded(other["fire_rate"], 3),  # share of non-trigger prompts where the gate fired (cap bound)
        "off_kl": rounded(other["kl"], 4),  # side effect on non-trigger prompts: mean next-token KL (nats)
    }


def metrics_of(record: InterventionRecord, summary: dict, judge: dict) -> dict[str, object]:
    def numbers(values: dict) -> dict:
        return {key: rounded(value, 4) if isinstance(value, float) else value for key, value in values.items()}

    return {
        "intervention": record.name, "kind": record.kind, "trait": record.trait,
        "layers": ",".join(map(str, record.layers)), "method": record.method, "site": record.site,
        "positions": record.positions, "coefficient": rounded(record.coefficient, 4),
        "gate": None if record.gate is None else numbers(record.gate.__dict__),
        "caps": [numbers(cap.__dict__) for cap in record.caps],
        "prompt_set": record.prompt_set, "trigger": numbers(summary["trigger"]),
        "non_trigger": numbers(summary["non_trigger"]), "judge": judge,
    }


@user_errors
def main(
    name: Annotated[str, typer.Option(help="The intervention's name (a key of interventions in params).")],
    prompt_set: Annotated[Path, typer.Option(help="The prompt set (.json) holding the trigger and non-trigger prompts.")],
    questions: Annotated[Path, typer.Option(help="The trait's steering.json (its eval_prompt, if any, judges).")],
    definition: Annotated[Path, typer.Option(help="The trait's definition.txt (judge rubric).")],
    vectors: Annotated[str, typer.Option(help="Each trait's vectors folder, a pattern with {trait}.")],
    evaluation: Annotated[str, typer.Option(help="Each trait's evaluation.csv (midpoints), a pattern with {trait}.")],
    best: Annotated[str, typer.Option(help="Each trait's steering best.json (default layers, coefficient), a pattern with {trait}.")],
    calibration: Annotated[
        str, typer.Option(help="The application model's monitoring responses.jsonl (percentiles), a pattern with {prompt_set}.")
    ],
    judge_cache: Annotated[Path, typer.Option(help="Judge cache (.jsonl, a persistent DVC output).")],
    responses: Annotated[Path, typer.Option(help="Answers table to write (.jsonl): unsteered and intervened, judged.")],
    trace: Annotated[Path, typer.Option(help="Per-position gate / cap record to write (.parquet).")],
    record: Annotated[Path, typer.Option(help="The intervention as run, thresholds resolved (.json).")],
    metrics: Annotated[Path, typer.Option(help="Metrics to write (.json): per group fire rate, trait, coherence, KL.")],
    headline: Annotated[Path, typer.Option(help="The intervention's headline (.json): delta, coherence, false_fire, off_kl.")],
    model: ModelRecordOption,
    judge_record: JudgeRecordOption,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Answer each prompt unsteered and intervened; judge both, fire rates, KL side effect, the gate's record."""
    import pandas as pd

    from schemas.evaluation import VectorEvaluation
    from schemas.inference import InferenceResponses
    from schemas.interventions import InterventionResponses, InterventionTrace
    from trait_interp.core.forward import token_sequences
    from trait_interp.core.models import context_limit, load_model, load_tokenizer
    from trait_interp.core.prompting import (
        PromptSpec,
        check_context,
        prompt_ids,
        token_strings,
        uses_chat_template,
    )
    from trait_interp.core.tables import read_table, write_table
    from trait_interp.extraction.vectors import load_vectors
    from trait_interp.judge.judge import steering_scores
    from trait_interp.judge.record import read_judge_record
    from trait_interp.judge.session import judge_summary, open_judge
    from trait_interp.judge.settings import JudgeSettings
    from trait_interp.steering.best import read_best
    from trait_interp.steering.evaluate import Decoder
    from trait_interp.steering.intervention_eval import (
        Sources,
        build_intervention,
        evaluate_intervention,
        parse_settings,
        select_prompts,
        trace_rows,
    )
    from trait_interp.steering.intervention_record import write_record

    p = stage_params(params, PARAMS, key=name)
    where = f"{params}:interventions.{name}"
    settings = parse_settings(p["interventions.{key}"], where)
    judge_settings = from_mapping(JudgeSettings, p["judge"], f"{params}:judge")
    max_new_tokens, batch_size = p["steering.max_new_tokens"], p["steering.batch_size"]
    app, spec, model_where = resolved_model(model)
    prompts = load_prompt_set(prompt_set)
    chosen = select_prompts(prompts, settings, where)
    steering_set = load_steering_questions(questions)
    rubric = read_definition(definition, settings.trait)
    best_record = read_best(fill_pattern(best, "best", trait=settings.trait))

    @cache
    def vector_set(trait: str, site: str, method: str):
        return load_vectors(fill_pattern(vectors, "vectors", trait=trait), site, method)

    def monitored(prompt_set_name: str):
        table = read_table(fill_pattern(calibration, "calibration", prompt_set=prompt_set_name), InferenceResponses)
        return token_sequences(table["prompt_ids"], table["response_ids"])

    sources = Sources(vector_set, lambda trait: read_table(fill_pattern(evaluation, "evaluation", trait=trait),
                                                           VectorEvaluation), monitored)
    with open_judge(judge_settings, read_judge_record(judge_record), judge_cache, f"{params}:judge", settings.trait) as judge:
        tokenizer = load_tokenizer(spec)
        chat = uses_chat_template(tokenizer, spec.prompt_mode)
        ids = [prompt_ids(tokenizer, PromptSpec(q.text, prompts.system_prompt), chat, spec.merge_system_prompt)
               for q in chosen]
        check_context(ids, [f"{prompt_set}: prompt id {q.prompt_id!r}" for q in chosen], max_new_tokens,
                      context_limit(spec), "steering.max_new_tokens")
        loaded = load_model(spec, model_where)
        run, row = build_intervention(loaded, app.key, name, settings, best_record, sources, tokenizer.pad_token_id,
                                      batch_size, where)
        decoder = Decoder(tokenizer.pad_token_id, app.eos_token_ids, lambda t: tokenizer.decode(t, skip_special_tokens=True))

        def score(qs, answers):
            return steering_scores(judge, trait_display_name(settings.trait), rubric, steering_set.eval_prompt, qs,
                                   answers, relevance_check=judge_settings.relevance_check)

        outcome = evaluate_intervention(loaded, chosen, ids, row, run, max_new_tokens, batch_size, decoder, score, True)
        stats = judge_summary(judge, judge_settings)
    touch_output(judge_cache)  # a DVC output, also when every answer came from the cache

    def strings(token_ids) -> list[str]:
        return token_strings(tokenizer, list(token_ids))

    by_id = {q.prompt_id: q for q in chosen}
    table = pd.DataFrame([
        {"intervention": name, "kind": run.kind, "trait": run.trait, "prompt_set": prompts.name, **r,
         "note": by_id[r["prompt_id"]].note, "extra": json.dumps(by_id[r["prompt_id"]].extra, ensure_ascii=False,
                                                                 sort_keys=True),
         "prompt_tokens": strings(r["prompt_ids"]), "response_tokens": strings(r["response_ids"])}
        for r in outcome.responses
    ])
    write_table(table, InterventionResponses, responses)
    traced = pd.DataFrame(trace_rows(outcome, chosen, ids, strings, run), columns=list(InterventionTrace.to_schema().columns))
    write_table(traced, InterventionTrace, trace)
    write_record(record, run)
    write_json(metrics, metrics_of(run, outcome.summary, stats))
    write_json(headline, headline_of(outcome.summary))
    trigger, other = outcome.summary["trigger"], outcome.summary["non_trigger"]
    typer.echo(
        f"{name} ({run.kind}, {run.trait}): trigger prompts fired {rounded(trigger['fire_rate'], 3)}, trait delta "
        f"{rounded(trigger['delta'], 3)}; non-trigger prompts fired {rounded(other['fire_rate'], 3)}, trait delta "
        f"{rounded(other['delta'], 3)}, KL {rounded(other['kl'], 4)}; judge calls {stats['calls']}, cache hits "
        f"{stats['cache_hits']}"
    )
