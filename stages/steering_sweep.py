"""Stage steering_sweep: one trait's layers x methods x ratios grid, per-row batched, judged, with side effects."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    load_prompt_set,
    load_steering_questions,
    read_definition,
    trait_display_name,
)
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import write_json

if TYPE_CHECKING:
    from trait_interp.judge.estimate import JudgeEstimate
    from trait_interp.judge.settings import JudgeSettings
    from trait_interp.steering.sweep import SweepPlan

PARAMS = ("sweep", "steering.min_coherence", "judge")
# the options whose paths this stage writes, one trait at a time (stages/for_each_trait.py)
TRAIT_OUTPUTS = ("results", "responses", "best_layers", "metrics", "plot", "judge_cache")
TRAIT_CACHES = ("judge_cache",)  # content-addressed answers: present or not, not their bytes


def min_coherence_of(value: Any, params: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise UserInputError(f"{params}:steering.min_coherence: expected a number in 0-100, got {value!r}")
    return float(value)


def announce(trait: str, plan: SweepPlan, n_questions: int, estimate: JudgeEstimate, judge: JudgeSettings) -> str:
    """The line printed before anything runs: generations, judge requests and what an API judge would cost."""
    n = len(plan.configs)
    return (
        f"{trait}: sweep of {n} configurations ({len(plan.methods)} methods x layers/windows x ratios) x "
        f"{n_questions} questions = {(n + 1) * n_questions} generations with the baseline; up to "
        f"{estimate.requests} judge requests (cached ones are free), about {estimate.prompt_tokens:,} prompt + "
        f"{estimate.completion_tokens:,} completion tokens = ${estimate.cost_usd:.4f} for an API judge at "
        f"judge.price_input_per_million {judge.price_input_per_million:g} / "
        f"judge.price_output_per_million {judge.price_output_per_million:g}"
    )


def best_summary(best: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    keep = ("layers", "kind", "ratio", "coefficient", "delta", "effect", "coherence_mean", "side_effect", "composite")
    return {method: None if row is None else {k: rounded(row[k], 4) if isinstance(row[k], float) else row[k]
                                               for k in keep}
            for method, row in best.items()}


def best_line(best: dict[str, dict[str, Any] | None]) -> str:
    parts = []
    for method, row in best.items():
        if row is None:
            parts.append(f"{method}: none coherent")
        else:
            parts.append(f"{method}: layers {row['layers']} at ratio {row['ratio']:+g} (delta "
                         f"{rounded(row['delta'], 1)}, coherence {rounded(row['coherence_mean'], 1)})")
    return ", ".join(parts)


@user_errors
def main(
    trait: Annotated[str, typer.Option(help="Trait name, category/trait.")],
    questions: Annotated[Path, typer.Option(help="The trait's steering.json.")],
    definition: Annotated[Path, typer.Option(help="The trait's definition.txt (judge rubric).")],
    neutral_prompts: Annotated[Path, typer.Option(help="The prompt set of the side-effect measure (sweep.side_effect_prompt_set).")],
    vectors: Annotated[Path, typer.Option(help="Vectors folder of the trait (from extract_vectors).")],
    judge_cache: Annotated[Path, typer.Option(help="Judge cache (.jsonl, a persistent DVC output).")],
    results: Annotated[Path, typer.Option(help="The long table to write (.csv): one row per configuration.")],
    responses: Annotated[Path, typer.Option(help="Every judged answer to write (.jsonl).")],
    best_layers: Annotated[Path, typer.Option(help="Best coherent single layer per method to write (.json).")],
    metrics: Annotated[Path, typer.Option(help="Sweep metrics to write (.json).")],
    plot: Annotated[Path, typer.Option(help="Heatmap data for dvc plots (.csv).")],
    model: ModelRecordOption,
    judge_record: JudgeRecordOption,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Steer every (method, layer or window, ratio) of sweep: in batched generate calls; judge; KL on neutral prompts."""
    import pandas as pd

    from schemas.sweep import SweepPlot, SweepResponses, SweepResults
    from trait_interp.core.forward import TokenSequence
    from trait_interp.core.generation import generate_greedy
    from trait_interp.core.models import context_limit, load_model, load_tokenizer
    from trait_interp.core.prompting import (
        PromptSpec,
        check_context,
        prompt_ids,
        uses_chat_template,
    )
    from trait_interp.core.sites import check_site
    from trait_interp.core.tables import write_table
    from trait_interp.extraction.vectors import load_vectors
    from trait_interp.judge.estimate import estimate_steering_judging
    from trait_interp.judge.judge import steering_judgements
    from trait_interp.judge.record import read_judge_record
    from trait_interp.judge.session import judge_summary, open_judge
    from trait_interp.judge.settings import JudgeSettings
    from trait_interp.judge.templates import custom_eval_template
    from trait_interp.steering.side_effects import next_token_kl
    from trait_interp.steering.sweep import (
        SweepSettings,
        config_terms,
        generate_sweep,
        plan_sweep,
        planned_generate_calls,
    )
    from trait_interp.steering.sweep_results import (
        best_layers_of,
        best_per_method,
        response_rows,
        result_rows,
        write_best_layers,
    )

    p = stage_params(params, PARAMS)
    record, spec, where = resolved_model(model)
    settings = from_mapping(SweepSettings, p["sweep"], f"{params}:sweep")
    judge_settings = from_mapping(JudgeSettings, p["judge"], f"{params}:judge")
    min_coherence = min_coherence_of(p["steering.min_coherence"], params)
    site = check_site(settings.site, "sweep.site")
    plan = plan_sweep(settings, record.num_layers, f"{params}:sweep")
    steering_set = load_steering_questions(questions)
    asked = steering_set.questions[: settings.subset] if settings.subset else steering_set.questions
    rubric = read_definition(definition, trait)
    neutral_set = load_prompt_set(neutral_prompts)
    if len(neutral_set.prompts) < settings.side_effect_prompts:
        raise UserInputError(f"{params}:sweep.side_effect_prompts: {settings.side_effect_prompts} but {neutral_prompts} "
                             f"has {len(neutral_set.prompts)} prompts; lower it or pick a larger prompt set")
    neutral = neutral_set.prompts[: settings.side_effect_prompts]
    if steering_set.eval_prompt is not None:
        try:
            custom_eval_template(steering_set.eval_prompt)
        except ValueError as err:
            raise UserInputError(f"{questions}: eval_prompt: {err}") from None
    by_method = {method: load_vectors(vectors, site, method) for method in plan.methods}
    lookup = {(method, layer): by_method[method].layer(layer) for method in plan.methods for layer in plan.layers}
    name = trait_display_name(trait)
    estimate = estimate_steering_judging(name, rubric, steering_set.eval_prompt, asked, len(plan.configs) + 1,
                                         settings.max_new_tokens, judge_settings.relevance_check,
                                         judge_settings.price_input_per_million,
                                         judge_settings.price_output_per_million)
    typer.echo(announce(trait, plan, len(asked), estimate, judge_settings))

    # the judge first: an openai key is checked before any model loads
    with open_judge(judge_settings, read_judge_record(judge_record), judge_cache, f"{params}:judge", trait) as judge:
        tokenizer = load_tokenizer(spec)
        chat = uses_chat_template(tokenizer, spec.prompt_mode)
        prompts = [prompt_ids(tokenizer, PromptSpec(q), chat, spec.merge_system_prompt) for q in asked]
        neutral_ids = [prompt_ids(tokenizer, PromptSpec(q.text, neutral_set.system_prompt), chat,
                                  spec.merge_system_prompt) for q in neutral]
        labels = [f"{questions}: questions[{i}]" for i in range(len(asked))]
        labels += [f"{neutral_prompts}: prompt {q.id}" for q in neutral]
        check_context(prompts + neutral_ids, labels, settings.max_new_tokens, context_limit(spec),
                      "sweep.max_new_tokens")
        loaded = load_model(spec, where)
        rows = len(plan.configs) * len(asked)
        longest = max(len(x) for x in prompts) + settings.max_new_tokens
        calls = planned_generate_calls(loaded, rows, settings.batch_size, longest)
        typer.echo(f"{trait}: {rows} steered rows in {calls} generate calls (+ the baseline's "
                   f"{planned_generate_calls(loaded, len(asked), settings.batch_size, longest)})")
        pad, eos = tokenizer.pad_token_id, record.eos_token_ids
        generation = generate_sweep(loaded, prompts, plan, lookup, settings.max_new_tokens, pad, eos,
                                    settings.batch_size, progress=True)
        neutral_answers = generate_greedy(loaded, neutral_ids, settings.max_new_tokens, pad, eos, settings.batch_size)
        sequences = [TokenSequence(tuple(q), tuple(a)) for q, a in zip(neutral_ids, neutral_answers)]
        terms = [config_terms(c, k, lookup) for c, k in zip(plan.configs, generation.coefficients)]
        side = next_token_kl(loaded, site, sequences, terms, pad, plan.positions, settings.batch_size)
        ids = [generation.baseline_ids, *generation.ids]
        answers = [[tokenizer.decode(r, skip_special_tokens=True) for r in block] for block in ids]
        flat = steering_judgements(judge, name, rubric, steering_set.eval_prompt, list(asked) * len(ids),
                                   [a for block in answers for a in block], judge_settings.relevance_check)
        judged = [flat[i * len(asked) : (i + 1) * len(asked)] for i in range(len(ids))]
        stats = judge_summary(judge, judge_settings)
    touch_output(judge_cache)  # a DVC output, also when every answer came from the cache

    direction = steering_set.direction
    answer_rows = response_rows(trait, plan, generation.coefficients, asked, answers, ids, judged, direction)
    write_table(pd.DataFrame(answer_rows), SweepResponses, responses)
    table = write_table(pd.DataFrame(result_rows(trait, plan, generation.coefficients, judged, side, direction,
                                                 min_coherence)), SweepResults, results)
    write_table(table.rename(columns={"coherence_mean": "coherence"})[list(SweepPlot.to_schema().columns)],
                SweepPlot, plot)
    record_best = best_layers_of(trait, table, site, min_coherence, plan.methods)
    write_best_layers(best_layers, record_best)
    best = best_per_method(table)
    baseline = table.iloc[0]
    write_json(metrics, {
        "trait": trait,
        "site": site,
        "positions": plan.positions,
        "direction": direction,
        "min_coherence": min_coherence,
        "methods": list(plan.methods),
        "layers": list(plan.layers),
        "ratios": sorted({c.ratio for c in plan.configs}),
        "n_configs": len(plan.configs),
        "n_questions": len(asked),
        "generations": len(ids) * len(asked),
        "generate_calls": calls,
        "side_effect_prompts": len(neutral),
        "baseline_trait": rounded(baseline["baseline_trait_mean"], 3),
        "baseline_coherence": rounded(baseline["baseline_coherence_mean"], 3),
        "activation_norms": {str(layer): rounded(norm, 4) for layer, norm in generation.norms.items()},
        "n_coherent": int(table["coherent"].sum()),
        "best": best_summary(best),
        "best_layer": {m.method: m.layer for m in record_best.methods},
        "estimate": {"judge_requests": estimate.requests, "prompt_tokens": estimate.prompt_tokens,
                     "completion_tokens": estimate.completion_tokens, "cost_usd": round(estimate.cost_usd, 6)},
        "judge": stats,
    })
    typer.echo(f"{trait}: best coherent per method: {best_line(best)}; judge calls {stats['calls']}, "
               f"cache hits {stats['cache_hits']}")
