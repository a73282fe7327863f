"""Stage vet_responses: the judge scores every extraction response; extraction keeps those that pass."""

from __future__ import annotations

import dataclasses
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
from trait_interp.core.io import write_json
from trait_interp.extraction.vetting import VettingSettings, check_enough, verdicts

PARAMS = ("vetting", "judge", "extraction.paired")
# the options whose paths this stage writes, one trait at a time (stages/for_each_trait.py)
TRAIT_OUTPUTS = ("out", "metrics", "judge_cache")
TRAIT_CACHES = ("judge_cache",)  # content-addressed answers: present or not, not their bytes


@user_errors
def main(
    trait: Annotated[str, typer.Option(help="Trait name, category/trait.")],
    responses: Annotated[Path, typer.Option(help="Responses table from generate_responses (.jsonl).")],
    definition: Annotated[Path, typer.Option(help="The trait's definition.txt (judge rubric).")],
    judge_cache: Annotated[Path, typer.Option(help="Judge cache (.jsonl, a persistent DVC output).")],
    judge_record: JudgeRecordOption,
    out: Annotated[Path, typer.Option(help="Vetting table to write (.jsonl): score, passed, kept per response.")],
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: pass counts and judge calls.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Score positive and negative responses with the judge; keep pairs whose both sides pass."""
    import pandas as pd

    from schemas.responses import Responses
    from schemas.vetting import VettingScores
    from trait_interp.core.tables import read_table, write_table
    from trait_interp.judge.judge import vet_scores
    from trait_interp.judge.record import read_judge_record
    from trait_interp.judge.session import judge_summary, open_judge
    from trait_interp.judge.settings import JudgeSettings

    p = stage_params(params, PARAMS)
    settings = from_mapping(VettingSettings, p["vetting"], f"{params}:vetting")
    # paired filtering needs real pairs: without them, each side is filtered on its own
    settings = dataclasses.replace(settings, paired_filter=settings.paired_filter and bool(p["extraction.paired"]))
    judge_settings = from_mapping(JudgeSettings, p["judge"], f"{params}:judge")
    table = read_table(responses, Responses)
    text = read_definition(definition, trait)

    if settings.enabled:
        with open_judge(judge_settings, read_judge_record(judge_record), judge_cache, f"{params}:judge", trait) as judge:
            scores = vet_scores(judge, trait_display_name(trait), text, list(table["response"]), settings.response_words)
            stats = judge_summary(judge, judge_settings)
    else:
        scores = [None] * len(table)
        stats = {"calls": 0}
    touch_output(judge_cache)  # the (persistent) output exists even when nothing is judged
    verdict = verdicts(list(table["pair_index"]), list(table["polarity"]), scores, settings)
    if settings.enabled:  # with vetting off nothing was judged, so nothing "passes vetting" or fails it
        check_enough(verdict, settings, trait, str(params))

    vetting = pd.DataFrame(
        {"pair_index": table["pair_index"], "polarity": table["polarity"], "score": scores,
         "passed": verdict.passed, "kept": verdict.kept}
    )
    write_table(vetting, VettingScores, out)
    summary = {
        "enabled": settings.enabled,
        "kept_pairs": verdict.n_kept_pairs,
        "n_responses": len(table),
    }
    for side in ("positive", "negative"):
        rows = vetting[vetting["polarity"] == side]
        summary[f"{side}_passed"] = int(rows["passed"].sum())
        summary[f"{side}_unscored"] = int(rows["score"].isna().sum()) if settings.enabled else 0
    write_json(metrics, {"trait": trait, **summary, "judge": stats})
    if not settings.enabled:
        typer.echo(f"{trait}: vetting is off (vetting.enabled: false): all {len(table)} responses kept, "
                   f"nothing judged -> {out}")
        return
    typer.echo(
        f"{trait}: kept {verdict.n_kept_pairs} pairs of {table['pair_index'].nunique()} "
        f"(judge calls {stats.get('calls', 0)}, cache hits {stats.get('cache_hits', 0)}) -> {out}"
    )
