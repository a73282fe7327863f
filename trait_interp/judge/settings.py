"""``judge:`` params and the one place a backend is built from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trait_interp.errors import UserInputError
from trait_interp.judge.backends import JudgeBackend
from trait_interp.judge.openai_backend import openai_backend_from_env
from trait_interp.models import ModelSpec, check_spec


@dataclass(frozen=True)
class JudgeSettings:
    """``judge:`` in params.yaml.

    ``backend: openai`` talks to ``model`` on the OpenAI API, or on any OpenAI-compatible server
    at ``base_url`` (e.g. vLLM); the key comes from ``OPENAI_API_KEY``. ``backend: local`` runs
    ``local_model`` (a model entry: path or hub_id, revision, dtype, device, ...) in-process.
    Prices (USD per million tokens) only feed the cost estimate in the metrics.
    """

    backend: Literal["local", "openai"] = "local"
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


def make_backend(settings: JudgeSettings, where: str = "params.yaml:judge") -> JudgeBackend:
    """The configured backend. For openai the key is checked first, before any model loads."""
    if settings.max_concurrency < 1 or settings.batch_size < 1 or settings.max_retries < 0:
        raise UserInputError(f"{where}: max_concurrency and batch_size must be >= 1 and max_retries >= 0")
    if settings.timeout_s <= 0:
        raise UserInputError(f"{where}.timeout_s: must be > 0, got {settings.timeout_s}")
    if settings.backend == "openai":
        return openai_backend_from_env(
            settings.model, settings.base_url, settings.max_concurrency, settings.max_retries, settings.timeout_s
        )
    spec = check_local_spec(settings.local_model, f"{where}.local_model")
    from trait_interp.judge.local_backend import LocalBackend  # torch/transformers only when needed

    return LocalBackend(spec, batch_size=settings.batch_size)


def check_local_spec(spec: ModelSpec | None, where: str) -> ModelSpec:
    """The checks ``models.model_spec`` makes for a registry entry, for the judge's model."""
    if spec is None:
        raise UserInputError(f"{where}: judge.backend is local but no local_model is set; add one (path or hub_id)")
    return check_spec(spec, where)
