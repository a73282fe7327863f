"""A judge for one stage run: backend from params, cache from the stage's persistent output."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from trait_interp.core.resolution import pinned
from trait_interp.judge.cache import JudgeCache
from trait_interp.judge.judge import Judge
from trait_interp.judge.record import JudgeRecord
from trait_interp.judge.settings import JudgeSettings, make_backend, toy_module


@contextmanager
def open_judge(
    settings: JudgeSettings, record: JudgeRecord, cache_path: Path, where: str, trait: str | None = None
) -> Iterator[Judge]:
    """Build the backend first (an openai backend checks its key before anything loads), then the cache.

    The judge's model and lexicon come from its resolved ``record`` (the model pinned to what was
    resolved); ``trait`` is read only by the lexicon backend (the toy world's oracle).
    """
    planted = None
    if settings.backend == "lexicon" and trait is not None and record.lexicon is not None:
        planted = (trait, toy_module(where, "lexicon").lexicon_for(Path(record.lexicon), trait))
    if record.local_model is not None:
        settings = replace(settings, local_model=pinned(record.local_model))
    backend = make_backend(settings, where, planted)
    with JudgeCache.open(Path(cache_path)) as cache:
        yield Judge(backend, cache)


def judge_summary(judge: Judge, settings: JudgeSettings) -> dict[str, Any]:
    """Judge traffic for the metrics: calls vs cache hits, failures, and tokens and cost for OpenAI."""
    stats = judge.stats
    summary: dict[str, Any] = {
        "backend": settings.backend,
        "calls": stats.calls,
        "cache_hits": stats.cache_hits,
        "retries": stats.retries,
        "failures": stats.failures,
        "none_scores": stats.none_scores,
    }
    if settings.backend == "openai":
        summary["prompt_tokens"] = stats.prompt_tokens
        summary["completion_tokens"] = stats.completion_tokens
        cost = stats.estimated_cost_usd(settings.price_input_per_million, settings.price_output_per_million)
        summary["estimated_cost_usd"] = round(cost, 6)
    return summary
