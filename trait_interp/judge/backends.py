"""The interface every judge backend implements, and the reply it returns.

A backend answers chat requests with the top-20 logprobs of the judge's first token. It knows
nothing about templates, scores or the cache; ``Judge`` does. Two implementations: an
OpenAI-compatible HTTP API (``openai_backend``) and a local Hugging Face causal LM
(``local_backend``).

A ``FieldBackend`` is an oracle rather than a reader: it gets each request's template name and
the values filled into it (e.g. the answer), not the rendered prompt, and replies in the same
form, so its answers go through the same scoring and cache. The toy world's lexicon judge
(``lexicon_backend``) is one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from trait_interp.judge.templates import Messages

TOP_LOGPROBS = 20


@dataclass(frozen=True)
class Reply:
    """One request's outcome. ``top_logprobs`` is None when there is no usable answer (``error`` says why)."""

    top_logprobs: dict[str, float] | None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0  # transport retries spent on this request (not counted as extra calls)


OnReply = Callable[[int, Reply], None]
"""Called with (request index, reply) as soon as each reply is in, before the batch finishes."""


class JudgeBackend(Protocol):
    @property
    def identity(self) -> str:
        """Who answers, e.g. ``openai:gpt-4.1-mini``; part of every cache key."""
        ...

    def top_logprobs_many(
        self, messages: Sequence[Messages], progress: bool, on_reply: OnReply | None = None
    ) -> list[Reply]:
        """One reply per request, in order. ``on_reply`` fires as each reply arrives."""
        ...


@dataclass(frozen=True)
class FieldRequest:
    """What a field backend judges: the template's name and the values filled into it."""

    template: str
    values: dict[str, str]


@runtime_checkable
class FieldBackend(Protocol):
    @property
    def identity(self) -> str:
        """Who answers, including everything its answers depend on; part of every cache key."""
        ...

    def judge_fields_many(
        self, requests: Sequence[FieldRequest], progress: bool, on_reply: OnReply | None = None
    ) -> list[Reply]:
        """One reply per request, in order, as top logprobs over the numbers 0..100."""
        ...


def score_as_logprobs(score: float) -> dict[str, float]:
    """An exact score in [0, 100] as a reply's top logprobs: mass on the two integers around it.

    ``aggregate_logprob_score`` of the result is ``score`` again (up to float rounding).
    """
    if not 0.0 <= score <= 100.0 or math.isnan(score):
        raise ValueError(f"score must be in [0, 100], got {score}")
    low = min(int(math.floor(score)), 99)
    weight = score - low  # probability of low + 1
    pairs = {str(low): 1.0 - weight, str(low + 1): weight}
    return {token: math.log(p) for token, p in pairs.items() if p > 0.0}


def merge_top_logprobs(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    """``{token: logprob}``; distinct tokens that decode to the same text add their probabilities."""
    merged: dict[str, float] = {}
    for token, logprob in pairs:
        if token in merged:
            a, b = merged[token], logprob
            high = max(a, b)
            if high != -math.inf:
                merged[token] = high + math.log(math.exp(a - high) + math.exp(b - high))
        else:
            merged[token] = float(logprob)
    return merged
