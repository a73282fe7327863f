"""``judge:`` params and the one place a backend is built from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from trait_interp.core.errors import UserInputError
from trait_interp.core.models import ModelSpec, check_spec
from trait_interp.judge.backends import FieldBackend, JudgeBackend
from trait_interp.judge.openai_backend import openai_backend_from_env

if TYPE_CHECKING:  # the toy world's package is loaded only for the lexicon backend
    from trait_interp.toy.lexicon import Lexicon


@dataclass(frozen=True)
class JudgeSettings:
    """``judge:`` in params.yaml.

    ``backend: openai`` talks to ``model`` on the OpenAI API, or on any OpenAI-compatible server
    at ``base_url`` (e.g. vLLM); the key comes from ``OPENAI_API_KEY``. ``backend: local`` runs
    ``local_model`` (a model entry: path or hub_id, revision, dtype, device, ...) in-process.
    ``backend: lexicon`` is the toy world's oracle (``lexicon_backend``): trait scores from the
    planted vocabulary in ``lexicon`` (a file), coherence from ``local_model``'s perplexity of the
    answer; it judges no relevance, so it needs ``relevance_check: false``.
    Prices (USD per million tokens) only feed the cost estimate in the metrics.
    """

    backend: Literal["local", "openai", "lexicon"] = "local"
    model: str = "gpt-4.1-mini"
    base_url: str | None = None
    local_model: ModelSpec | None = None
    max_concurrency: int = 20
    max_retries: int = 4
    timeout_s: float = 30.0
    batch_size: int = 16
    relevance_check: bool = True
    price_input_per_million: float = 0.40
    price_output_per_million: float = 1.60
    lexicon: str | None = None  # the lexicon backend's planted vocabulary (datasets/toy/lexicon.json)


def make_backend(
    settings: JudgeSettings, where: str = "params.yaml:judge", lexicon: tuple[str, Lexicon] | None = None
) -> JudgeBackend | FieldBackend:
    """The configured backend. For openai the key is checked first, before any model loads.

    ``lexicon`` is ``(trait, its lexicon)``, needed by (and only by) the lexicon backend.
    """
    if settings.max_concurrency < 1 or settings.batch_size < 1 or settings.max_retries < 0:
        raise UserInputError(f"{where}: max_concurrency and batch_size must be >= 1 and max_retries >= 0")
    if settings.timeout_s <= 0:
        raise UserInputError(f"{where}.timeout_s: must be > 0, got {settings.timeout_s}")
    if settings.backend == "openai":
        return openai_backend_from_env(
            settings.model, settings.base_url, settings.max_concurrency, settings.max_retries, settings.timeout_s
        )
    if settings.backend == "lexicon":
        if settings.relevance_check:
            raise UserInputError(
                f"{where}.relevance_check: the lexicon judge has no oracle for relevance; set it to false"
            )
        if lexicon is None:
            raise UserInputError(
                f"{where}.lexicon: the lexicon backend needs the planted vocabulary; "
                "set it to datasets/toy/lexicon.json (the toy world's planted words)"
            )
        LexiconBackend = toy_module(where, "lexicon_backend").LexiconBackend  # torch only when needed
        scorer = check_local_spec(settings.local_model, f"{where}.local_model")
        return LexiconBackend(lexicon[0], lexicon[1], scorer, batch_size=settings.batch_size)
    spec = check_local_spec(settings.local_model, f"{where}.local_model")
    from trait_interp.judge.local_backend import (
        LocalBackend,  # torch/transformers only when needed
    )

    return LocalBackend(spec, batch_size=settings.batch_size)


def toy_module(where: str, name: str):
    """A module of the toy world's package, which the lexicon backend lives in (it may be deleted)."""
    import importlib

    try:
        return importlib.import_module(f"trait_interp.toy.{name}")
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("trait_interp.toy"):
            raise
        raise UserInputError(
            f"{where}.backend: lexicon is the toy world's oracle and trait_interp/toy is not installed; "
            "use backend: local or openai"
        ) from None


def check_local_spec(spec: ModelSpec | None, where: str) -> ModelSpec:
    """The checks ``models.model_spec`` makes for a registry entry, for the judge's model."""
    if spec is None:
        raise UserInputError(
            f"{where}: no local_model is set, but the local backend (its judge) and the lexicon backend (its "
            "coherence scorer) need one; add one (path or hub_id)"
        )
    return check_spec(spec, where)
