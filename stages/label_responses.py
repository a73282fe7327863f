"""Stage label_responses: a judge verdict per monitored response (e.g. "did the model refuse?")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages._common import (
    JudgeRecordOption,
    ParamsOption,
    stage_params,
    touch_output,
    user_errors,
)
from trait_interp.core.config import from_mapping
from trait_interp.core.datasets import read_definition, trait_display_name
from trait_interp.core.io import write_json, write_with

PARAMS = ("judge",)


@user_errors
def main(
    responses: Annotated[Path, typer.Option(help="Responses table from generate_inference (.jsonl).")],
    trait: Annotated[str, typer.Option(help="Trait whose judge rubric decides the verdict (category/trait).")],
    definition: Annotated[Path, typer.Option(help="The trait's definition.txt.")],
    threshold: Annotated[float, typer.Option(help="Trait score at or above which the verdict is yes.")],
    judge_cache: Annotated[Path, typer.Option(help="Judge cache (.jsonl, a persistent DVC output).")],
    judge_record: JudgeRecordOption,
    out: Annotated[Path, typer.Option(help="Labels to write (.csv: prompt_id, label, score).")],
    metrics: Annotated[Path, typer.Option(help="Metrics (.json): yes/no counts, unscored, judge calls.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Judge each (prompt, response) on the trait; label yes/no by threshold (unscored responses get no label)."""
    import pandas as pd

    from schemas.inference import InferenceResponses
    from trait_interp.analyses.group_comparison import labels_from_verdicts
    from trait_interp.core.tables import read_table
    from trait_interp.judge.judge import trait_scores
    from trait_interp.judge.record import read_judge_record
    from trait_interp.judge.session import judge_summary, open_judge
    from trait_interp.judge.settings import JudgeSettings

    settings = from_mapping(JudgeSettings, stage_params(params, PARAMS)["judge"], f"{params}:judge")
    table = read_table(responses, InferenceResponses)
    rubric = read_definition(definition, trait)
    with open_judge(settings, read_judge_record(judge_record), judge_cache, f"{params}:judge", trait) as judge:
        scored = trait_scores(judge, trait_display_name(trait), rubric, list(table["prompt"]), list(table["response"]))
        stats = judge_summary(judge, settings)
    touch_output(judge_cache)  # a DVC output, also when every verdict came from the cache
    scores = dict(zip(table["prompt_id"], scored))
    labels, unscored = labels_from_verdicts(scores, threshold)
    frame = pd.DataFrame({"prompt_id": list(labels), "label": list(labels.values()),
                          "score": [scores[pid] for pid in labels]})
    write_with(out, lambda tmp: frame.to_csv(tmp, index=False))
    write_json(metrics, {"trait": trait, "threshold": threshold, "yes": int((frame["label"] == "yes").sum()),
                         "no": int((frame["label"] == "no").sum()), "unscored": unscored, "judge": stats})
    typer.echo(f"{trait} verdicts: {len(frame)} labelled, {unscored} unscored -> {out}")
