"""Stage resolve_models: one small record per model the experiment uses (and the judge's), without weights.

Each record (``trait_interp.core.resolution.ResolvedModel``) holds the entry, the commit sha its hub
revision resolves to now (or a local folder's content hash), the adapter's likewise, the
architecture, layer count, hidden size and end-of-generation ids. The stages that use a model
depend on its record alone, so a new upload under the same hub id (a moved ``main``) re-runs exactly
that model's stages, and an unchanged one re-runs nothing. Offline (``HF_HUB_OFFLINE=1``) hub ids
resolve from the local Hugging Face cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages._common import ParamsOption, stage_params, user_errors
from trait_interp.core.config import from_mapping
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import atomic_dir

PARAMS = ("models", "extraction_model", "application_model", "monitor_models", "diff_model", "judge")
JUDGE_RECORD = "judge.json"


def used_models(p: dict) -> list[str]:
    """Every registry key a stage uses: the roles, the monitored models and the diff model, once each."""
    keys = [p["extraction_model"], p["application_model"], *(p["monitor_models"] or []), p["diff_model"]]
    return list(dict.fromkeys(str(k) for k in keys if k is not None))


@user_errors
def main(
    out: Annotated[Path, typer.Option(help="Folder to write: <model key>.json per model used, judge.json.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Resolve every model the experiment uses (hub revision -> commit sha, local folder -> content hash)."""
    from trait_interp.core.models import ModelSpec
    from trait_interp.core.resolution import resolve_model, write_model_record
    from trait_interp.judge.record import resolve_judge, write_judge_record
    from trait_interp.judge.settings import JudgeSettings

    p = stage_params(params, PARAMS)
    registry = p["models"] or {}
    records = []
    for key in used_models(p):
        if key not in registry:
            raise UserInputError(f"{params}: unknown model '{key}'; models defined: {', '.join(registry) or 'none'}")
        where = f"{params}:models.{key}"
        records.append(resolve_model(key, from_mapping(ModelSpec, registry[key], where), where))
    judge = resolve_judge(from_mapping(JudgeSettings, p["judge"], f"{params}:judge"), f"{params}:judge")
    with atomic_dir(out) as tmp:
        for record in records:
            write_model_record(tmp / f"{record.key}.json", record)
        write_judge_record(tmp / JUDGE_RECORD, judge)
    for record in records:
        pinned_at = record.sha or (f"sha256:{record.content[:12]}" if record.content else "")
        adapter = f" + {record.adapter_label}" if record.adapter_label else ""
        typer.echo(f"{record.key}: {record.source}@{pinned_at}{adapter} ({record.architecture}, "
                   f"{record.num_layers} layers, hidden {record.hidden_size}, on {record.device})")
    typer.echo(f"judge: {judge.backend}" + (f" {judge.model}" if judge.model else "") + f" -> {out}")
