"""What judging a batch of steered answers would cost an API judge, before anything is generated.

The answers do not exist yet, so each is stood in for by a placeholder of ``answer_tokens`` tokens;
the requests are the real templates filled with the real questions and definition
(``judge.steering_requests``). Tokens are counted at ``CHARS_PER_TOKEN`` characters per token plus
``TOKENS_PER_MESSAGE`` for each chat message (the role and separators), and every request asks for
one completion token (``cache.REQUEST_SETTINGS``). An estimate, not a bill: the actual tokens and
cost (from the API's usage fields) are in the stage's metrics after the run, and answers already in
the judge cache cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trait_interp.judge.judge import steering_requests

CHARS_PER_TOKEN = 4.0
TOKENS_PER_MESSAGE = 4
COMPLETION_TOKENS = 1  # max_tokens of every judge request


@dataclass(frozen=True)
class JudgeEstimate:
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


def estimate_steering_judging(
    trait_name: str,
    definition: str,
    eval_prompt: str | None,
    questions: Sequence[str],
    answers_per_question: int,
    answer_tokens: int,
    relevance_check: bool,
    price_input_per_million: float,
    price_output_per_million: float,
) -> JudgeEstimate:
    """Requests, tokens and USD for judging ``answers_per_question`` answers of each question (none cached)."""
    placeholder = "x" * int(answer_tokens * CHARS_PER_TOKEN)
    requests = steering_requests(trait_name, definition, eval_prompt, list(questions), [placeholder] * len(questions),
                                 relevance_check)
    per_round = sum(
        round(sum(len(m["content"]) for m in r.messages) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(r.messages)
        for r in requests
    )
    n_requests = len(requests) * answers_per_question
    prompt_tokens = per_round * answers_per_question
    completion_tokens = COMPLETION_TOKENS * n_requests
    cost = (prompt_tokens * price_input_per_million + completion_tokens * price_output_per_million) / 1e6
    return JudgeEstimate(n_requests, prompt_tokens, completion_tokens, cost)
