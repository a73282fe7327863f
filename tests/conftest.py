"""Shared fixtures: tiny models built from configs and a tokenizer trained here (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from trait_interp.toy.models import ToyModelSettings, build_model, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "datasets" / "toy" / "tokenizer_corpus.txt"
TINY_TRAINING = {
    "examples_per_side": 20,
    "base": {"steps": 12, "batch_size": 8, "lr": 0.003},
    "chat": {"steps": 6, "batch_size": 8, "lr": 0.0015},
}
"""``toy_models`` overrides for tests that need toy models but not trained ones: seconds, not minutes."""

_COMMON = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)
ARCHITECTURES = {
    "llama": (LlamaConfig, LlamaForCausalLM, {}),
    "gemma2": (Gemma2Config, Gemma2ForCausalLM, {"head_dim": 8, "sliding_window": 64}),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),
    "mistral": (MistralConfig, MistralForCausalLM, {}),
}


def tiny_model(arch: str, seed: int = 0) -> PreTrainedModel:
    """A 3-layer float32 model of the given architecture with random (seeded) weights."""
    config_cls, model_cls, extra = ARCHITECTURES[arch]
    config = config_cls(**_COMMON, **extra)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():  # larger weights than the default init, so differences are visible
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0, 0.2)
    return model


@pytest.fixture(params=sorted(ARCHITECTURES))
def any_model(request: pytest.FixtureRequest) -> PreTrainedModel:
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def corpus_lines() -> list[str]:
    return [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def base_tokenizer(corpus_lines):
    return train_tokenizer(corpus_lines, 400, chat=False)


@pytest.fixture(scope="session")
def chat_tokenizer(corpus_lines):
    return train_tokenizer(corpus_lines, 400, chat=True)


@pytest.fixture(scope="session")
def toy_model(base_tokenizer):
    return build_model(ToyModelSettings(vocab_size=400, hidden_size=32, intermediate_size=48, num_layers=3), base_tokenizer)


@pytest.fixture(scope="session")
def reproduced_toy(tmp_path_factory) -> tuple[Path, str]:
    """The reduced toy project after one `dvc repro` (see tests/toy_project.py), and repro's output.
    Read-only: take a copy with ``toy_project.copy_project`` before changing anything.

    Built once per test run: under pytest-xdist (scripts/test.sh runs the suite on every core) the
    first worker that needs it builds it in the run's shared temp folder while holding a lock, and
    the others wait for it and read it (a repro costs minutes)."""
    from tests.toy_project import reproduce

    return _built_once(tmp_path_factory, "toy-reproduced", lambda root: reproduce(REPO, root))


def _built_once(tmp_path_factory, name: str, build) -> tuple[Path, str]:
    """``build(root)`` (returns text) once per run, shared by the xdist workers through a file lock."""
    import fcntl
    import os

    if os.environ.get("PYTEST_XDIST_WORKER") is None:  # one process: the session fixture is enough
        root = tmp_path_factory.mktemp(name) / "project"
        root.mkdir()
        return root, build(root)
    shared = tmp_path_factory.getbasetemp().parent  # the run's folder, above every worker's own
    root, done = shared / name / "project", shared / name / "built.txt"
    (shared / name).mkdir(exist_ok=True)
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.is_file():
            if root.exists():  # a worker that failed half-way: start again
                import shutil

                shutil.rmtree(root)
            root.mkdir()
            text = build(root)
            done.write_text(text, encoding="utf-8")
        return root, done.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def built_hub(tmp_path_factory):
    """The session's offline fake Hugging Face hub (tests/fake_hub.py): tiny random-weight models with the
    real architectures, configs, chat templates and generation configs under the real hub ids, and the
    RM-sycophancy LoRA. Read-only: a test that publishes a new snapshot works on a ``copy_hub`` copy."""
    from tests.fake_hub import build_fake_hub, no_network

    with no_network():
        return build_fake_hub(tmp_path_factory.mktemp("fake-hub") / "hub")
