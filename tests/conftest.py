"""Shared fixtures: tiny models built from configs and a tokenizer trained here (no downloads)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from stages._cpu_kernels import pin_cpu_kernels

pin_cpu_kernels()  # before torch loads, as in every stage process: in-process stage runs compute the same
import torch  # noqa: E402
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

    Built once per test run: scripts/test.sh runs two pytest processes side by side and names a
    shared folder (``TRAIT_INTERP_TEST_SHARED``); the first that needs the project builds it there
    while holding a lock, and the other waits for it and reads it (a repro costs minutes)."""
    from tests.toy_project import reproduce

    return _built_once(tmp_path_factory, "toy-reproduced", lambda root: reproduce(REPO, root))


def _built_once(tmp_path_factory, name: str, build) -> tuple[Path, str]:
    """``build(root)`` (returns text) once per run, shared by the test processes through a file lock."""
    import fcntl
    import os

    if not os.environ.get("TRAIT_INTERP_TEST_SHARED"):  # one process: the session fixture is enough
        root = tmp_path_factory.mktemp(name) / "project"
        root.mkdir()
        return root, build(root)
    shared = Path(os.environ["TRAIT_INTERP_TEST_SHARED"])
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


# --- two shards side by side (scripts/test.sh) ---------------------------------------------------
# Most of the suite's time is a few tests that each run `dvc repro` on a project (minutes each).
# scripts/test.sh runs `pytest --shard 0/2` and `pytest --shard 1/2` at once, one per core. Each shard
# runs, in this order, the long tests placed here by hand (measured: docs/testing.md), then its share
# of the rest, whole modules, split by test count. Shard 0 starts with the tests that build the
# shared reduced toy project, so it is ready when shard 1's remote tests need it.
_HEAVY_SHARDS: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("tests/pipeline/test_dvc_pipeline.py", "tests/dashboard/test_browser.py",
     "tests/pipeline/test_real_models.py::test_gemma_2_2b_by_params_alone", "tests/toy/test_world_trained.py"),
    ("tests/pipeline/test_real_models.py::test_llama_70b_rm_sycophancy_by_params_alone",
     "tests/pipeline/test_remote.py"),
)
_LIGHT_SHARE_OF_SHARD_0 = 0.25  # shard 0's long tests take longer: it gets a quarter of the rest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shard", default=None, metavar="K/2",
                     help="run only shard K (0 or 1) of the suite's two (scripts/test.sh runs both side by side)")


def _heavy_place(nodeid: str) -> tuple[int, int] | None:
    for shard, prefixes in enumerate(_HEAVY_SHARDS):
        for rank, prefix in enumerate(prefixes):
            if nodeid == prefix or nodeid.startswith(prefix + "::"):
                return shard, rank
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--shard K/2``: keep shard K's tests (long ones first), deselect the others."""
    option = config.getoption("--shard")
    if option is None:
        return
    if option not in ("0/2", "1/2"):
        raise pytest.UsageError(f"--shard {option}: use 0/2 or 1/2")
    wanted = int(option[0])
    counts = Counter(item.nodeid.split("::")[0] for item in items if _heavy_place(item.nodeid) is None)
    light_shard, seen = {}, 0
    for module in sorted(counts):  # whole modules, in order, until shard 0 holds its share of the light tests
        light_shard[module] = 0 if seen < _LIGHT_SHARE_OF_SHARD_0 * counts.total() else 1
        seen += counts[module]
    order, kept, dropped = {}, [], []
    for index, item in enumerate(items):
        place = _heavy_place(item.nodeid)
        shard = place[0] if place else light_shard[item.nodeid.split("::")[0]]
        (kept if shard == wanted else dropped).append(item)
        order[item.nodeid] = (place[1] if place else len(_HEAVY_SHARDS[shard]), index)
    kept.sort(key=lambda item: order[item.nodeid])
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept
