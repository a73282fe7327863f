"""A judge for one stage run: backend from params, cache from the stage's persistent output."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trait_interp.judge.cache import JudgeCache
from trait_interp.judge.judge import Judge
from trait_interp.judge.lexicon import lexicon_for
from trait_interp.judge.settings import JudgeSettings, make_backend


@contextmanager
def open_judge(
    settings: JudgeSettings, cache_path: Path, where: str, trait: str | None = None, lexicon: Path | None = None
) -> Iterator[Judge]:
    """Build the backend first (an openai backend checks its key before anything loads), then the cache.

    ``trait`` and the ``lexicon`` file are read only by the lexicon backend (the toy world's oracle).
    The cache file always exists afterwards (DVC requires its outputs), also when nothing was judged.
    """
    planted = None
    if settings.backend == "lexicon" and trait is not None and lexicon is not None:
        planted = (trait, lexicon_for(lexicon, trait))
    backend = make_backend(settings, where, planted)
    cache_path = Path(cache_path)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with JudgeCache.open(cache_path) as cache:
        yield Judge(backend, cache)
    cache_path.touch(exist_ok=True)


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
