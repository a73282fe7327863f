"""Stage report: the dashboard's data and pages, built from the pipeline's tables (no activations read)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from stages._common import (
    ParamsOption,
    fill_pattern,
    per_trait,
    stage_params,
    user_errors,
)
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import read_json
from trait_interp.dashboard.site import write_site

PARAMS = (
    "experiment", "traits", "application_model", "monitor_models", "prompt_sets", "diff_model",
    "monitoring.clean_massive_dims", "analyses.judge_labels", "interventions",
)


def judge_labels(value: Any, params: Path) -> dict[str, str]:
    """``analyses.judge_labels`` -> {label name: prompt set it labels}."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) and "prompt_set" in v for v in value.values()):
        raise UserInputError(f"{params}:analyses.judge_labels: expected name -> {{prompt_set, trait, threshold}}")
    return {str(name): str(item["prompt_set"]) for name, item in value.items()}


def prompt_set_pages(
    key: str, model: str, responses_file: Path, projections_file: Path, calibration_file: Path,
    labels: dict[str, dict[str, str]], traits: list[str], centers: dict[tuple[str, str, str, int], float],
    cleaned_with: str,
) -> dict[str, Any]:
    """The picker index (``<key>/prompts``) and one token file per prompt (``<key>/p<row>``)."""
    from schemas.inference import InferenceResponses
    from schemas.projections import Projections
    from trait_interp.core.tables import read_table
    from trait_interp.dashboard.monitoring import (
        cleaning_info,
        prompt_index,
        series_of,
        token_files,
    )

    responses = read_table(responses_file, InferenceResponses)
    projections = read_table(projections_file, Projections)
    calibration = read_json(calibration_file) if calibration_file.is_file() else None
    series = series_of(projections, traits)
    cleaning = cleaning_info(projections, cleaned_with, calibration)
    if cleaned_with != "none" and cleaned_with not in cleaning["available"]:
        raise UserInputError(f"{projections_file}: written without massive_{cleaned_with}; re-run the project stage")
    pages: dict[str, Any] = {
        f"{key}/prompts": {"model": model, **prompt_index(responses, labels, series, centers, cleaning, key)}
    }
    for row, tokens in enumerate(token_files(responses, projections, series, cleaned_with, str(projections_file))):
        pages[f"{key}/p{row}"] = tokens
    return pages


def sweep_pages(traits: list[str], evaluations: dict[str, Path], results: str | None, responses: str | None,
                best: str | None) -> dict[str, Any]:
    """``sweep/<i>`` (grids, comparison) and ``sweep/<i>/a/<k>`` (answers of method k) for every trait; none without a sweep."""
    from schemas.evaluation import VectorEvaluation
    from schemas.sweep import SweepResponses, SweepResults
    from trait_interp.analyses.steering_predictors import predictor_rows
    from trait_interp.core.tables import read_table
    from trait_interp.dashboard.sweep import sweep_data
    from trait_interp.steering.sweep_results import read_best_layers

    given = [x is not None for x in (results, responses, best)]
    if not any(given):
        return {}
    if not all(given):
        raise UserInputError("--sweep-results, --sweep-responses and --sweep-best go together; give all three or none")
    tables = per_trait(results, "sweep-results", traits)  # type: ignore[arg-type]
    answers = per_trait(responses, "sweep-responses", traits)  # type: ignore[arg-type]
    records = per_trait(best, "sweep-best", traits)  # type: ignore[arg-type]
    pages: dict[str, Any] = {}
    for i, trait in enumerate(traits):
        table = read_table(tables[trait], SweepResults)
        predictors = predictor_rows(trait, read_table(evaluations[trait], VectorEvaluation), table)
        page, answer_pages = sweep_data(trait, table, read_table(answers[trait], SweepResponses),
                                        read_best_layers(records[trait]).min_coherence, predictors, f"sweep/{i}/a")
        pages[f"sweep/{i}"] = page
        pages.update(answer_pages)
    return pages


@user_errors
def main(
    evaluation: Annotated[str, typer.Option(help="Each trait's evaluation.csv, a pattern with {trait}.")],
    steering_responses: Annotated[str, typer.Option(help="Each trait's steering responses.jsonl, a pattern with {trait}.")],
    best: Annotated[str, typer.Option(help="Each trait's steering best.json, a pattern with {trait}.")],
    responses: Annotated[
        str, typer.Option(help="Each monitored model's responses.jsonl, a pattern with {model} and {prompt_set}.")
    ],
    projections: Annotated[
        str, typer.Option(help="Each monitored model's projections.parquet, a pattern with {model} and {prompt_set}.")
    ],
    calibration: Annotated[str, typer.Option(help="Each monitored model's massive_dims.json, a pattern with {model}.")],
    labels: Annotated[str, typer.Option(help="Judge labels of the application model's responses, a pattern with {name}.")],
    out: Annotated[Path, typer.Option(help="Dashboard folder to write (replaced whole).")],
    diff_paired: Annotated[Path | None, typer.Option(help="model_diff's paired.csv.")] = None,
    diff_cosines: Annotated[Path | None, typer.Option(help="model_diff's cosines.csv.")] = None,
    diff_clauses: Annotated[Path | None, typer.Option(help="model_diff's clauses.jsonl.")] = None,
    sweep_results: Annotated[str | None, typer.Option(help="Each trait's sweep results.csv, a pattern with {trait}.")] = None,
    sweep_responses: Annotated[
        str | None, typer.Option(help="Each trait's sweep responses.jsonl, a pattern with {trait}.")
    ] = None,
    sweep_best: Annotated[str | None, typer.Option(help="Each trait's sweep best_layers.json, a pattern with {trait}.")] = None,
    intervention_responses: Annotated[
        str | None, typer.Option(help="Each intervention's responses.jsonl, a pattern with {name}.")] = None,
    intervention_trace: Annotated[str | None, typer.Option(help="Each intervention's trace.parquet, a pattern with {name}.")] = None,
    intervention_record: Annotated[
        str | None, typer.Option(help="Each intervention's intervention.json, a pattern with {name}.")] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Compact per-view data (data/*.js) plus the static pages; open index.html or run `trait-interp serve`."""
    from schemas.analyses import ClauseDiff, DiffCosine, ModelDiff
    from schemas.evaluation import VectorEvaluation
    from schemas.interventions import InterventionResponses, InterventionTrace
    from schemas.steering import SteeringResponses
    from trait_interp.analyses.group_comparison import read_labels
    from trait_interp.core.tables import read_table
    from trait_interp.dashboard.extraction import extraction_data, midpoints
    from trait_interp.dashboard.interventions import intervention_pages
    from trait_interp.dashboard.model_diff import model_diff_data
    from trait_interp.dashboard.steering import steering_data
    from trait_interp.monitoring.massive_dims import CLEAN_MODES
    from trait_interp.steering.best import read_best
    from trait_interp.steering.intervention_record import read_record

    p = stage_params(params, PARAMS)
    traits, cleaned_with = [str(t) for t in p["traits"]], p["monitoring.clean_massive_dims"]
    if cleaned_with not in CLEAN_MODES:
        raise UserInputError(f"{params}:monitoring.clean_massive_dims: {cleaned_with!r} is not one of {CLEAN_MODES}")
    labelled = judge_labels(p["analyses.judge_labels"], params)
    evaluations = per_trait(evaluation, "evaluation", traits)
    steered_files, best_files = per_trait(steering_responses, "steering-responses", traits), per_trait(best, "best", traits)
    data: dict[str, Any] = {}
    centers: dict[tuple[str, str, str, int], float] = {}
    from tqdm.auto import (
        tqdm,  # progress on stderr: every trait's tables, then every prompt set's projections
    )

    # each bar in a with block: an error mid-loop closes it, so the error line stands on its own line
    with tqdm(traits, desc="report: traits", unit="trait") as trait_bar:
        for i, trait in enumerate(trait_bar):
            table = read_table(evaluations[trait], VectorEvaluation)
            centers.update({(trait, *where): value for where, value in midpoints(table).items()})
            data[f"extraction/{i}"] = extraction_data(trait, table)
            steered = read_table(steered_files[trait], SteeringResponses)
            data[f"steering/{i}"] = steering_data(trait, steered, asdict(read_best(best_files[trait])))
    swept = sweep_pages(traits, evaluations, sweep_results, sweep_responses, sweep_best)
    data.update(swept)
    sets = []
    with tqdm(total=len(p["monitor_models"]) * len(p["prompt_sets"]), desc="report: prompt sets", unit="set") as bar:
        for model in p["monitor_models"]:
            for prompt_set in p["prompt_sets"]:
                key = f"sets/{len(sets)}"
                set_labels = {
                    name: read_labels(fill_pattern(labels, "labels", name=name))
                    for name, labelled_set in labelled.items()
                    if labelled_set == prompt_set and model == p["application_model"]
                }
                pages = prompt_set_pages(
                    key, model, fill_pattern(responses, "responses", model=model, prompt_set=prompt_set),
                    fill_pattern(projections, "projections", model=model, prompt_set=prompt_set),
                    fill_pattern(calibration, "calibration", model=model), set_labels, traits, centers, cleaned_with,
                )
                data.update(pages)
                sets.append({"key": key, "model": model, "prompt_set": prompt_set,
                             "n_prompts": pages[f"{key}/prompts"]["n_prompts"]})
                bar.update(1)
    names = [str(name) for name in (p["interventions"] or {})]
    patterns = (intervention_responses, intervention_trace, intervention_record)
    if names and not all(patterns):
        raise UserInputError(f"{params}:interventions names {', '.join(names)}: give --intervention-responses, "
                             "--intervention-trace and --intervention-record (patterns with {name})")
    for name in names:
        key = f"sets/{len(sets)}"
        record = read_record(fill_pattern(intervention_record, "intervention-record", name=name))
        trace_file = fill_pattern(intervention_trace, "intervention-trace", name=name)
        pages = intervention_pages(
            key, read_table(fill_pattern(intervention_responses, "intervention-responses", name=name), InterventionResponses),
            read_table(trace_file, InterventionTrace), asdict(record), centers, str(trace_file),
        )
        data.update(pages)
        sets.append({"key": key, "model": record.model, "prompt_set": record.prompt_set, "intervention": name,
                     "kind": record.kind, "n_prompts": pages[f"{key}/prompts"]["n_prompts"]})
    diff = None
    diff_files = (diff_paired, diff_cosines, diff_clauses)
    if any(f is not None for f in diff_files):
        if not all(f is not None for f in diff_files):
            raise UserInputError("--diff-paired, --diff-cosines and --diff-clauses go together; give all three or none")
        data["model_diff"] = model_diff_data(
            p["application_model"], p["diff_model"], read_table(diff_paired, ModelDiff),
            read_table(diff_cosines, DiffCosine), read_table(diff_clauses, ClauseDiff),
        )
        diff = {"key": "model_diff", "a": p["application_model"], "b": p["diff_model"]}
    data["index"] = {
        "experiment": p["experiment"],
        "traits": traits,
        "extraction": [{"trait": t, "key": f"extraction/{i}"} for i, t in enumerate(traits)],
        "steering": [{"trait": t, "key": f"steering/{i}"} for i, t in enumerate(traits)],
        "sweep": [{"trait": t, "key": f"sweep/{i}"} for i, t in enumerate(traits) if f"sweep/{i}" in swept],
        "sets": sets,
        "model_diff": diff,
    }
    write_site(out, data)
    n_prompts = sum(s["n_prompts"] for s in sets)
    typer.echo(f"dashboard: {len(traits)} traits, {len(sets)} prompt sets ({n_prompts} responses) -> {out}")
