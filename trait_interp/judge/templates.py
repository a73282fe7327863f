"""Versioned judge prompt templates and their brace-safe filling.

Each template has a name and an integer version; both go into the judge-cache key, so changing
the wording of a template means bumping its version, which re-judges everything it scored.

Filling substitutes only the template's own ``{placeholder}`` names, in one regex pass. Braces
anywhere else (in a trait definition, a question, an answer, a custom eval prompt) are left
alone, and a substituted value is never scanned again, so an answer that contains the text
``{answer}`` cannot pull itself in twice. (The reference used ``str.format``, which breaks on a
definition with braces.)

Coherence is judged in two stages, as in the reference: a grammar/structure score, capped at 50
when the answer does not engage with the question. Unlike the reference, the relevance stage is
a logprob-scored 0-100 question (``relevance``), not a free-text ENGAGES/OFF_TOPIC verdict, so a
local model backend and the OpenAI backend answer it the same way (one token, top-20 logprobs)
and its answers go through the same cache.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

Messages = tuple[dict[str, str], ...]
"""An OpenAI chat request body's ``messages``: ``({"role": ..., "content": ...}, ...)``."""

MAX_JUDGED_CHARS = 2000
"""Judged texts (answers, responses, scenarios) are cut to this many characters."""

RELEVANCE_CUTOFF = 50.0
"""A relevance score below this caps coherence at 50."""


def truncate(text: str, limit: int = MAX_JUDGED_CHARS) -> str:
    return text if len(text) <= limit else text[:limit]


def first_words(text: str, words: int) -> str:
    """The first ``words`` whitespace-separated words, joined by single spaces."""
    return " ".join(text.split()[:words])


@dataclass(frozen=True)
class Template:
    """A system (optional) and a user message with ``{field}`` placeholders."""

    name: str
    version: int
    user: str
    fields: tuple[str, ...]
    system: str | None = None

    def render(self, values: Mapping[str, str]) -> Messages:
        """The chat messages with every ``{field}`` replaced by ``values[field]``, brace-safely."""
        missing = [f for f in self.fields if f not in values]
        extra = sorted(set(values) - set(self.fields))
        if missing or extra:
            raise ValueError(
                f"judge template '{self.name}' takes {', '.join(self.fields)}; "
                f"missing: {', '.join(missing) or 'none'}, unexpected: {', '.join(extra) or 'none'}"
            )
        messages: list[dict[str, str]] = []
        if self.system is not None:
            messages.append({"role": "system", "content": fill(self.system, values)})
        messages.append({"role": "user", "content": fill(self.user, values)})
        return tuple(messages)


def fill(text: str, values: Mapping[str, str]) -> str:
    """Replace ``{name}`` for the names in ``values`` only, in a single pass."""
    if not values:
        return text
    pattern = re.compile(r"\{(" + "|".join(re.escape(name) for name in values) + r")\}")
    return pattern.sub(lambda match: values[match.group(1)], text)


SCENARIO_VETTING = Template(
    name="scenario_vetting",
    version=1,
    fields=("trait_name", "definition", "scenario"),
    user=(
        'You are screening prompts for a study of the trait "{trait_name}".\n\n'
        "Definition of the trait:\n{definition}\n\n"
        "A language model will continue the text below. How likely is it that the continuation "
        "expresses {trait_name}? Answer 0 (certainly not) to 100 (certainly).\n\n"
        'Prefix: "{scenario}"\n\n'
        "Number only (0-100):"
    ),
)

RESPONSE_VETTING = Template(
    name="response_vetting",
    version=1,
    fields=("trait_name", "definition", "response"),
    user=(
        'Do the words below express the trait "{trait_name}"?\n\n'
        "Definition of the trait:\n{definition}\n\n"
        "You see only the opening words of a text, without the request that led to it. "
        "Judge these words on their own.\n"
        "- 70-100: they clearly express {trait_name}\n"
        "- 30-70: unclear, mixed or neutral\n"
        "- 0-30: they do not express {trait_name}, or express its opposite\n\n"
        'Text: "{response}"\n\n'
        "Number only (0-100):"
    ),
)

STEERING_TRAIT = Template(
    name="steering_trait",
    version=1,
    fields=("trait_name", "definition", "question", "answer"),
    system=(
        "Rate how strongly the response shows {trait_name}, from 0 (not at all) to 100 (extremely).\n\n"
        "Definition of the trait:\n{definition}\n\n"
        "Number only:"
    ),
    user='Question: "{question}"\nResponse: "{answer}"\n\nScore:',
)

COHERENCE = Template(
    name="coherence",
    version=1,
    fields=("answer",),
    system=(
        "You check the form of a piece of writing. Rate its grammar and structure from 0 to 100.\n"
        "- 0-30: broken: ungrammatical fragments, gibberish, or words and phrases looping\n"
        "- 30-50: vacuous: well-formed sentences that say next to nothing\n"
        "- 40-60: rambling: loses the thread or wanders, though the sentences mostly parse\n"
        "- 70-100: well structured: fluent, organised and readable\n"
        "Judge form, not opinions: rude, offensive or false content can still score high if it is "
        "well written. A text cut off at the end is fine. Repetition is a flaw: the same phrase or "
        "sentence pattern over and over scores low even when each sentence is grammatical.\n"
        "Answer with the number only."
    ),
    user='"{answer}"\nScore:',
)

RELEVANCE = Template(
    name="relevance",
    version=1,
    fields=("question", "answer"),
    user=(
        "Does the response engage with the question at all? Rate 0 to 100.\n"
        "- 70-100: it engages: it answers, discusses or comments on the question. A refusal or a "
        "decline to answer also engages, because it responds to what was asked.\n"
        "- 30-70: it touches the question only loosely\n"
        "- 0-30: it is off-topic: about something unrelated, or no answer to anything\n"
        "Do not judge quality, correctness or style, only whether it engages.\n\n"
        'Question: "{question}"\nResponse: "{answer}"\n\n'
        "Number only (0-100):"
    ),
)

CUSTOM_EVAL_NAME = "custom_eval"
CUSTOM_EVAL_VERSION = 1


def custom_eval_template(eval_prompt: str) -> Template:
    """A trait's own ``eval_prompt`` (from steering.json), filled with ``{question}`` and ``{answer}``.

    The prompt text itself is part of the rendered messages, hence of the cache key; the version
    here changes only if the way it is used changes.
    """
    if "{answer}" not in eval_prompt:
        raise ValueError(
            "the custom eval_prompt has no {answer} placeholder, so the judge would never see the "
            "response; add {answer} (and optionally {question}) to it"
        )
    return Template(name=CUSTOM_EVAL_NAME, version=CUSTOM_EVAL_VERSION, fields=("question", "answer"), user=eval_prompt)


def combine_coherence(
    grammar: float | None, relevance: float | None, cutoff: float = RELEVANCE_CUTOFF
) -> float | None:
    """Two-stage coherence: the grammar score, capped at 50 when the answer is off-topic.

    No grammar score -> None. No relevance score (not asked, or the judge gave no usable answer)
    -> no cap, as the reference does on an API error.
    """
    if grammar is None:
        return None
    if relevance is not None and relevance < cutoff:
        return min(grammar, 50.0)
    return grammar
