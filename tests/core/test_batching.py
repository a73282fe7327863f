"""Batch sizes from free CUDA memory (simulated), and halving on out-of-memory (simulated)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import trait_interp.core.batching as batching
from tests.conftest import tiny_model
from trait_interp.core.batching import (
    BatchSettings,
    batch_size_for,
    bytes_per_sequence,
    resolve_batch_size,
    run_chunks,
)
from trait_interp.core.config import from_mapping
from trait_interp.core.errors import UserInputError

GIB = 1 << 30


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")  # hidden 32, 4 heads, 2 KV heads, head_dim 8, intermediate 48, vocab 96, 3 layers


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch):
    """Pretend CUDA is there; ``set(layers={device: n}, free={device: bytes}, total=...)`` shapes it."""
    state: dict = {"layers": {torch.device("cuda:0"): 3}, "free": {torch.device("cuda:0"): GIB}, "total": 80 * GIB}

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (state["free"][torch.device(device)], state["total"]))
    monkeypatch.setattr(batching, "layer_devices", lambda model: Counter(state["layers"]))
    monkeypatch.setattr(batching, "_head_device", lambda model: torch.device("cuda:0"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    return state


def test_estimate_follows_the_documented_formula(model) -> None:
    seq, layers, dtype_bytes = 100, 3, 4  # float32
    kv = 2 * layers * 2 * 8 * seq * dtype_bytes
    activations = seq * (4 * 32 + 3 * 48) * dtype_bytes + 4 * seq * seq * dtype_bytes
    logits = 96 * 4 * 1
    settings = BatchSettings(safety=1.0)
    assert bytes_per_sequence(model, seq, settings=settings) == kv + activations + logits
    assert bytes_per_sequence(model, seq, layers=1, logits=False, settings=settings) == kv // 3 + activations
    assert bytes_per_sequence(model, seq) == int((kv + activations + logits) * 1.5)
    half = tiny_model("llama").to(torch.bfloat16)
    assert bytes_per_sequence(half, seq, settings=settings) == (kv + activations) // 2 + logits


def test_cpu_uses_the_param(model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def never(*args, **kwargs):
        raise AssertionError("no CUDA query on CPU")

    monkeypatch.setattr(torch.cuda, "mem_get_info", never)
    assert batch_size_for(model, 512, BatchSettings(cpu_batch_size=7)) == 7
    assert batch_size_for(model, 512, BatchSettings(batch_size=3)) == 3


def test_model_on_cpu_of_a_gpu_machine_uses_the_param(model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert batch_size_for(model, 512, BatchSettings(cpu_batch_size=5)) == 5  # the real layer_devices: all on cpu


def test_batch_size_comes_from_free_memory_not_total(model, fake_gpus) -> None:
    settings = BatchSettings(max_batch_size=10**9)
    per_seq = bytes_per_sequence(model, 256, layers=3, settings=settings)
    fake_gpus["free"] = {torch.device("cuda:0"): GIB}
    one = batch_size_for(model, 256, settings)
    assert one == int(GIB * settings.memory_fraction) // per_seq
    fake_gpus["total"] = 1000 * GIB  # a bigger card with the same free memory: no change
    assert batch_size_for(model, 256, settings) == one
    fake_gpus["free"] = {torch.device("cuda:0"): 4 * GIB}
    assert batch_size_for(model, 256, settings) in range(4 * one, 4 * one + 4)
    assert batch_size_for(model, 1024, settings) < batch_size_for(model, 256, settings)  # longer sequences, fewer


def test_batch_size_is_clamped(model, fake_gpus) -> None:
    fake_gpus["free"] = {torch.device("cuda:0"): 1000 * GIB}
    assert batch_size_for(model, 64, BatchSettings(max_batch_size=32)) == 32
    fake_gpus["free"] = {torch.device("cuda:0"): 10}
    assert batch_size_for(model, 64, BatchSettings()) == 1


def test_device_map_the_tightest_gpu_decides(model, fake_gpus) -> None:
    a, b = torch.device("cuda:0"), torch.device("cuda:1")
    fake_gpus["layers"] = {a: 2, b: 1}
    settings = BatchSettings(max_batch_size=10**9)
    fake_gpus["free"] = {a: 8 * GIB, b: GIB // 4}
    per_b = bytes_per_sequence(model, 128, layers=1, logits=False, settings=settings)  # head on cuda:0
    assert batch_size_for(model, 128, settings) == int(GIB // 4 * settings.memory_fraction) // per_b


def test_settings_parse_from_params() -> None:
    assert from_mapping(BatchSettings, {"batch_size": "auto"}, "p").batch_size == "auto"
    assert from_mapping(BatchSettings, {"batch_size": 8, "cpu_batch_size": 4}, "p").batch_size == 8
    with pytest.raises(UserInputError):
        from_mapping(BatchSettings, {"batch_size": "many"}, "p")


def _chunked(items: list[int], batch_size: int, fits: int, tried: list[int]) -> list[tuple[list[int], int]]:
    """run_chunks where a chunk of more than ``fits`` items runs out of (simulated) CUDA memory."""

    def run(chunk):
        tried.append(len(chunk))
        if len(chunk) > fits:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory at {len(chunk)}")
        return sum(chunk)

    return [(list(chunk), result) for chunk, result in run_chunks(items, batch_size, run)]


def test_oom_splits_the_failing_chunk_until_it_fits(fake_gpus) -> None:
    tried: list[int] = []
    done = _chunked(list(range(48)), 48, 5, tried)
    assert tried[:5] == [48, 24, 12, 6, 3]
    # every item once, in order, each chunk's result computed on that chunk alone
    assert [i for chunk, _ in done for i in chunk] == list(range(48))
    assert all(result == sum(chunk) and len(chunk) <= 5 for chunk, result in done)


def test_chunks_that_fit_are_not_split(fake_gpus) -> None:
    tried: list[int] = []
    done = _chunked(list(range(10)), 4, 4, tried)
    assert [chunk for chunk, _ in done] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and tried == [4, 4, 2]


def test_oom_frees_the_cache_between_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    freed: list[int] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(1))
    tried: list[int] = []
    done = _chunked(list(range(9)), 9, 2, tried)
    assert tried[:3] == [9, 5, 3] and len(freed) == sum(size > 2 for size in tried)
    assert [i for chunk, _ in done for i in chunk] == list(range(9))


def test_oom_at_batch_size_one_is_a_clear_error(fake_gpus) -> None:
    tried: list[int] = []

    def run(chunk) -> None:
        tried.append(len(chunk))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(UserInputError) as err:
        list(run_chunks([1, 2, 3, 4], 4, run, what="capture"))
    assert tried == [4, 2, 1]
    message = str(err.value)
    assert "\n" not in message and message.startswith("capture: CUDA out of memory even at batch size 1")
    assert isinstance(err.value.__cause__, torch.cuda.OutOfMemoryError)


def test_other_errors_are_not_retried() -> None:
    tried: list[int] = []

    def run(chunk) -> None:
        tried.append(len(chunk))
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        list(run_chunks(list(range(16)), 16, run))
    assert tried == [16]


def test_auto_batch_size_on_cpu_and_fixed_sizes(model) -> None:
    assert resolve_batch_size(model, 7, 100) == 7
    assert resolve_batch_size(model, "auto", 100) == BatchSettings().cpu_batch_size  # no CUDA here
    with pytest.raises(UserInputError, match="positive integer or auto"):
        resolve_batch_size(model, 0, 100)
