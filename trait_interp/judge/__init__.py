"""LLM judge: logprob-weighted 0-100 scores, versioned templates, a content-addressed cache.

Modules: ``scoring`` (aggregation), ``templates`` (prompts, brace-safe filling, two-stage
coherence), ``cache`` (append-only JSONL cache), ``backends`` (the backend interface),
``openai_backend`` (any OpenAI-compatible API), ``local_backend`` (a local HF model),
``judge`` (cached batched scoring and the stage helpers), ``settings`` (``judge:`` params,
``make_backend``), ``session`` (a judge for one stage run). The toy world's oracle (planted words
and perplexity) is ``trait_interp.toy.lexicon_backend``, loaded by name for ``backend: lexicon``.

Only the light modules are re-exported here; ``local_backend`` and ``settings`` import torch and
transformers, so import them by their module path.
"""

from trait_interp.judge.backends import JudgeBackend, Reply
from trait_interp.judge.cache import JudgeCache, cache_key
from trait_interp.judge.judge import (
    Judge,
    JudgeRequest,
    JudgeScore,
    JudgeStats,
    scenario_scores,
    steering_scores,
    vet_scores,
)
from trait_interp.judge.openai_backend import OpenAIBackend, openai_backend_from_env
from trait_interp.judge.scoring import (
    COHERENCE_MIN_MASS,
    TRAIT_MIN_MASS,
    aggregate_logprob_score,
)
from trait_interp.judge.templates import (
    Template,
    combine_coherence,
    custom_eval_template,
)

__all__ = [
    "COHERENCE_MIN_MASS",
    "TRAIT_MIN_MASS",
    "Judge",
    "JudgeBackend",
    "JudgeCache",
    "JudgeRequest",
    "JudgeScore",
    "JudgeStats",
    "OpenAIBackend",
    "Reply",
    "Template",
    "aggregate_logprob_score",
    "cache_key",
    "combine_coherence",
    "custom_eval_template",
    "openai_backend_from_env",
    "scenario_scores",
    "steering_scores",
    "vet_scores",
]
