"""The judge: cached, batched scoring of templated requests, and the helpers stages call.

``Judge.score_many`` looks every request up in the cache, sends only the misses (each distinct
request once) to the backend in ONE batch, so the backend sees all of them at once and can run
them concurrently, and appends each usable reply to the cache the moment it arrives. A run that
is killed therefore loses only the requests still in flight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from trait_interp.judge.backends import FieldBackend, FieldRequest, JudgeBackend, Reply
from trait_interp.judge.cache import JudgeCache, cache_key, new_entry
from trait_interp.judge.scoring import (
    COHERENCE_MIN_MASS,
    TRAIT_MIN_MASS,
    aggregate_logprob_score,
)
from trait_interp.judge.templates import (
    COHERENCE,
    MAX_JUDGED_CHARS,
    RELEVANCE,
    RESPONSE_VETTING,
    SCENARIO_VETTING,
    STEERING_TRAIT,
    Messages,
    Template,
    combine_coherence,
    custom_eval_template,
    first_words,
    truncate,
)

SCORE_DECIMALS = 3  # far below any meaningful difference on a 0-100 scale


@dataclass(frozen=True)
class JudgeRequest:
    """A templated request. ``values`` (what was filled in) is for field backends; the key uses ``messages``."""

    template: str
    version: int
    messages: Messages
    min_mass: float
    values: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, template: Template, values: Mapping[str, str], min_mass: float) -> JudgeRequest:
        return cls(template.name, template.version, template.render(values), min_mass, tuple(sorted(values.items())))


@dataclass(frozen=True)
class JudgeScore:
    """``score`` is None when ``failed`` (no usable reply) or when the numeric mass was too low."""

    score: float | None
    cached: bool
    failed: bool


@dataclass
class JudgeStats:
    """Accumulated over a Judge's life.

    ``calls``, ``retries`` and the token counts describe backend traffic (one call per distinct
    request sent; retries of it are counted apart). ``cache_hits``, ``failures`` and
    ``none_scores`` count request outcomes: a failure has no usable reply (not cached, asked again
    next run); a None score is a real reply with too little mass on numbers (cached).
    """

    calls: int = 0
    retries: int = 0
    cache_hits: int = 0
    failures: int = 0
    none_scores: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def estimated_cost_usd(self, price_in_per_m: float, price_out_per_m: float) -> float:
        return (self.prompt_tokens * price_in_per_m + self.completion_tokens * price_out_per_m) / 1e6

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Judge:
    def __init__(self, backend: JudgeBackend | FieldBackend, cache: JudgeCache | None = None) -> None:
        self.backend = backend
        self.cache = cache if cache is not None else JudgeCache.in_memory()
        self.stats = JudgeStats()

    def score_many(self, requests: Sequence[JudgeRequest], progress: bool = True) -> list[JudgeScore]:
        identity = self.backend.identity
        keys = [cache_key(identity, r.template, r.version, r.messages) for r in requests]
        results: list[JudgeScore | None] = [None] * len(requests)
        pending: dict[str, list[int]] = {}  # key -> indices of the requests waiting for it
        for index, (request, key) in enumerate(zip(requests, keys, strict=True)):
            entry = self.cache.get(key)
            if entry is None:
                pending.setdefault(key, []).append(index)
                continue
            self.stats.cache_hits += 1
            results[index] = self._outcome(aggregate_logprob_score(entry.top_logprobs, request.min_mass), True, False)

        unique = list(pending)
        seen: set[int] = set()

        def on_reply(position: int, reply: Reply) -> None:
            """Record one reply as soon as it is in: cache it (if usable) and count it."""
            if position in seen:
                return
            seen.add(position)
            key = unique[position]
            first = requests[pending[key][0]]
            self.stats.calls += 1
            self.stats.retries += reply.retries
            self.stats.prompt_tokens += reply.prompt_tokens
            self.stats.completion_tokens += reply.completion_tokens
            if reply.top_logprobs is not None:
                score = aggregate_logprob_score(reply.top_logprobs, first.min_mass)
                self.cache.put(new_entry(key, first.template, first.version, identity, reply.top_logprobs, score))
            for index in pending[key]:
                if reply.top_logprobs is None:
                    results[index] = self._outcome(None, False, True)
                else:
                    score = aggregate_logprob_score(reply.top_logprobs, requests[index].min_mass)
                    results[index] = self._outcome(score, False, False)

        if unique:
            firsts = [requests[pending[key][0]] for key in unique]
            if isinstance(self.backend, FieldBackend):
                fields = [FieldRequest(r.template, dict(r.values)) for r in firsts]
                replies = self.backend.judge_fields_many(fields, progress, on_reply)
            else:
                replies = self.backend.top_logprobs_many([r.messages for r in firsts], progress, on_reply)
            if len(replies) != len(unique):
                raise RuntimeError(f"judge backend returned {len(replies)} replies for {len(unique)} requests")
            for position, reply in enumerate(replies):  # a backend that did not report as it went
                on_reply(position, reply)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _outcome(self, score: float | None, cached: bool, failed: bool) -> JudgeScore:
        if failed:
            self.stats.failures += 1
        elif score is None:
            self.stats.none_scores += 1
        else:
            # a local judge's logprobs vary in the 7th digit with batch composition (padding, matmul
            # shapes), so a score depends on which requests shared its batch; rounding keeps tables
            # byte-identical whether a score came from the cache or from a fresh batch
            score = round(score, SCORE_DECIMALS)
        return JudgeScore(score, cached, failed)


def vet_scores(
    judge: Judge,
    trait_name: str,
    definition: str,
    texts: Sequence[str],
    words: int = 16,
    progress: bool = True,
) -> list[float | None]:
    """Response vetting: how much the first ``words`` words of each text express the trait.

    The prompt that produced a text is deliberately not shown: the words are judged alone.
    """
    requests = [
        JudgeRequest.of(
            RESPONSE_VETTING,
            {"trait_name": trait_name, "definition": definition, "response": truncate(first_words(text, words))},
            TRAIT_MIN_MASS,
        )
        for text in texts
    ]
    return [s.score for s in judge.score_many(requests, progress)]


def scenario_scores(
    judge: Judge, trait_name: str, definition: str, scenarios: Sequence[str], progress: bool = True
) -> list[float | None]:
    """Scenario vetting: how likely a completion of each prefix is to express the trait."""
    requests = [
        JudgeRequest.of(
            SCENARIO_VETTING,
            {"trait_name": trait_name, "definition": definition, "scenario": truncate(scenario)},
            TRAIT_MIN_MASS,
        )
        for scenario in scenarios
    ]
    return [s.score for s in judge.score_many(requests, progress)]


def steering_requests(
    trait_name: str,
    definition: str,
    eval_prompt: str | None,
    questions: Sequence[str],
    answers: Sequence[str],
    relevance_check: bool = True,
) -> list[JudgeRequest]:
    """The requests judging each (question, answer): trait, grammar and (``relevance_check``) relevance, in that order."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    custom = custom_eval_template(eval_prompt) if eval_prompt is not None else None
    requests: list[JudgeRequest] = []
    for question, answer in zip(questions, answers, strict=True):
        q, a = truncate(question, MAX_JUDGED_CHARS), truncate(answer, MAX_JUDGED_CHARS)
        if custom is not None:
            requests.append(JudgeRequest.of(custom, {"question": q, "answer": a}, TRAIT_MIN_MASS))
        else:
            values = {"trait_name": trait_name, "definition": definition, "question": q, "answer": a}
            requests.append(JudgeRequest.of(STEERING_TRAIT, values, TRAIT_MIN_MASS))
        requests.append(JudgeRequest.of(COHERENCE, {"answer": a}, COHERENCE_MIN_MASS))
        if relevance_check:
            requests.append(JudgeRequest.of(RELEVANCE, {"question": q, "answer": a}, TRAIT_MIN_MASS))
    return requests


@dataclass(frozen=True)
class SteeringJudgement:
    """One answer's steering scores: the trait, two-stage coherence, and relevance (None when not asked)."""

    trait: float | None
    coherence: float | None
    relevance: float | None


def steering_judgements(
    judge: Judge,
    trait_name: str,
    definition: str,
    eval_prompt: str | None,
    questions: Sequence[str],
    answers: Sequence[str],
    relevance_check: bool = True,
    progress: bool = True,
) -> list[SteeringJudgement]:
    """Trait score, two-stage coherence and relevance for each (question, answer).

    The trait is judged with the trait's own ``eval_prompt`` when given (a prompt without
    ``{answer}`` raises ValueError before anything is sent), else with ``steering_trait``.
    Every request of every row goes to the judge in one batch.
    """
    requests = steering_requests(trait_name, definition, eval_prompt, questions, answers, relevance_check)
    scores = [s.score for s in judge.score_many(requests, progress)]
    per_row = 3 if relevance_check else 2
    out: list[SteeringJudgement] = []
    for row in range(len(questions)):
        trait, grammar, *rest = scores[row * per_row : (row + 1) * per_row]
        relevance = rest[0] if rest else None
        out.append(SteeringJudgement(trait, combine_coherence(grammar, relevance), relevance))
    return out


def steering_scores(
    judge: Judge,
    trait_name: str,
    definition: str,
    eval_prompt: str | None,
    questions: Sequence[str],
    answers: Sequence[str],
    relevance_check: bool = True,
    progress: bool = True,
) -> list[tuple[float | None, float | None]]:
    """(trait score, two-stage coherence) for each (question, answer): ``steering_judgements`` without relevance."""
    judged = steering_judgements(judge, trait_name, definition, eval_prompt, questions, answers, relevance_check,
                                 progress)
    return [(j.trait, j.coherence) for j in judged]


def trait_scores(
    judge: Judge,
    trait_name: str,
    definition: str,
    questions: Sequence[str],
    answers: Sequence[str],
    progress: bool = True,
) -> list[float | None]:
    """The steering trait score of each (question, answer) alone (no coherence), e.g. for verdicts."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    requests = [
        JudgeRequest.of(
            STEERING_TRAIT,
            {"trait_name": trait_name, "definition": definition, "question": truncate(q), "answer": truncate(a)},
            TRAIT_MIN_MASS,
        )
        for q, a in zip(questions, answers, strict=True)
    ]
    return [s.score for s in judge.score_many(requests, progress)]
