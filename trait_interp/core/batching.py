"""Batch sizes from the FREE accelerator memory, and halving on out-of-memory.

``batch_size_for`` plans a batch from what ``torch.cuda.mem_get_info`` reports as free right now
(not the card's total: another process, the weights and the allocator's cache already hold their
share), divided by an estimate of what one sequence of ``seq_len`` tokens needs. On CPU (or when
the model has no CUDA layer) ``cpu_batch_size`` (16) decides; a fixed int is used as it is
(``resolve_batch_size``). ``run_chunks`` runs the work chunk by chunk and, when CUDA still runs out
of memory, frees the cache and runs the failing chunk again in halves, down to 1. The forward loop
(``core.forward``) and generation (``core.generation``, steered generation) go through both, so
every ``batch_size`` param of a model stage takes ``auto``.

Per-sequence estimate (bytes), for the layers held by one device::

    kv_cache    = 2 * layers_on_device * kv_heads * head_dim * seq_len * dtype_bytes
    activations = seq_len * (4 * hidden + 3 * intermediate) * dtype_bytes
                  + heads * seq_len**2 * dtype_bytes          (eager attention scores: upper bound)
    logits      = vocab * 4 * logit_positions                 (float32 logits, on the head's device)
    per_seq     = (kv_cache + activations + logits) * safety

``kv_cache``: keys and values of every layer on that device, grouped-query heads counted once per
KV head. ``activations``: what one layer keeps alive at its peak (the residual stream, the norm
output, the attention output and a few hidden-sized temporaries; the MLP's gate, up and their
product); only one layer runs at a time, so it is counted once per device. ``logit_positions`` is
1 for capture, projection and generation (``logits_to_keep=1`` / one new token per step).
The batch for a device is ``floor(free * memory_fraction / per_seq)``; with a device map the
smallest over the model's GPUs wins; the result is clamped to ``[1, max_batch_size]``.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

# BatchSize (the param type) lives in a light module so stage modules can import it; re-exported here
from trait_interp.core.batch_size import BatchSize
from trait_interp.core.errors import UserInputError
from trait_interp.core.sites import decoder_layers, text_config

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSettings:
    """How batch sizes are chosen (a params section or part of one).

    ``batch_size``: ``auto`` (from free CUDA memory; on CPU ``cpu_batch_size``) or a fixed int used
    everywhere. ``max_batch_size`` caps ``auto``; ``memory_fraction`` is the share of the free
    memory a batch may plan to use; ``safety`` multiplies the per-sequence estimate.
    """

    batch_size: BatchSize = "auto"
    cpu_batch_size: int = 16
    max_batch_size: int = 256
    memory_fraction: float = 0.85
    safety: float = 1.5
    logit_positions: int = 1


def compute_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a model computes its activations in (``model.dtype``; for quantized weights the
    first floating-point parameter's, e.g. bf16 norms beside int8 weights; float32 if none)."""
    dtype = getattr(model, "dtype", None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return dtype


def model_dtype_bytes(model: nn.Module) -> int:
    """Bytes per element of activations and KV cache (the compute dtype, also for quantized weights)."""
    return torch.empty((), dtype=compute_dtype(model)).element_size()


def bytes_per_sequence(model: nn.Module, seq_len: int, layers: int | None = None, logits: bool = True,
                       settings: BatchSettings = BatchSettings()) -> int:
    """The per-sequence estimate of the module docstring for ``layers`` decoder layers (default: all)."""
    config = text_config(model)
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    intermediate = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    n_layers = int(config.num_hidden_layers) if layers is None else layers
    dtype_bytes = model_dtype_bytes(model)
    kv_cache = 2 * n_layers * kv_heads * head_dim * seq_len * dtype_bytes
    activations = seq_len * (4 * hidden + 3 * intermediate) * dtype_bytes + heads * seq_len * seq_len * dtype_bytes
    logit_bytes = vocab * 4 * settings.logit_positions if logits else 0
    return int((kv_cache + activations + logit_bytes) * settings.safety)


def layer_devices(model: nn.Module) -> Counter[torch.device]:
    """How many decoder layers each device holds (a device map may spread them over GPUs)."""
    _, blocks = decoder_layers(model)
    counts: Counter[torch.device] = Counter()
    for block in blocks:
        param = next(block.parameters(), None)
        if param is not None:
            counts[param.device] += 1
    return counts


def _head_device(model: nn.Module) -> torch.device | None:
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if isinstance(head, nn.Module):
        for param in head.parameters():
            return param.device
    return None


def batch_size_for(model: nn.Module, seq_len: int, settings: BatchSettings) -> int:
    """The batch size for sequences of up to ``seq_len`` tokens (prompt plus new tokens)."""
    if settings.batch_size != "auto":
        return max(1, int(settings.batch_size))
    if not torch.cuda.is_available():
        return max(1, settings.cpu_batch_size)
    devices = {d: n for d, n in layer_devices(model).items() if d.type == "cuda"}
    if not devices:
        return max(1, settings.cpu_batch_size)
    head = _head_device(model)
    best = settings.max_batch_size
    for device, n_layers in devices.items():
        free, _total = torch.cuda.mem_get_info(device)
        per_seq = bytes_per_sequence(model, max(1, seq_len), n_layers, logits=head is None or head == device, settings=settings)
        fits = int(free * settings.memory_fraction) // max(1, per_seq)
        best = min(best, fits)
    return max(1, min(best, settings.max_batch_size))


def resolve_batch_size(model: nn.Module, batch_size: BatchSize, seq_len: int) -> int:
    """A ``batch_size`` param as an int: itself, or for ``auto`` the plan of ``batch_size_for``."""
    if batch_size == "auto":
        return batch_size_for(model, seq_len, BatchSettings(batch_size="auto"))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserInputError(f"batch_size must be a positive integer or auto, got {batch_size!r}")
    return batch_size


def _free_cuda_cache() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_chunks(
    items: Sequence[T], batch_size: int, run: Callable[[Sequence[T]], R], what: str = "batch",
    progress: tqdm | None = None,
) -> Iterator[tuple[Sequence[T], R]]:
    """``run`` on consecutive chunks of ``batch_size`` items, yielding ``(chunk, result)`` in order.

    A chunk that runs out of CUDA memory is split in halves, which are run in its place (down to
    one item): ``run`` must keep nothing of a failed call. When one item does not fit, a one-line
    ``UserInputError`` says what to change. ``progress`` (a tqdm bar) advances by each chunk's size.
    """
    size = max(1, int(batch_size))
    pending = deque(items[start : start + size] for start in range(0, len(items), size))
    while pending:
        chunk = pending.popleft()
        try:
            result = run(chunk)
        except torch.cuda.OutOfMemoryError as err:
            if len(chunk) == 1:
                raise UserInputError(
                    f"{what}: CUDA out of memory even at batch size 1; shorten the sequences (max_new_tokens), "
                    "quantize the model (quantization: int8/int4) or spread it (device_map: auto)"
                ) from err
            half = (len(chunk) + 1) // 2
            pending.appendleft(chunk[half:])
            pending.appendleft(chunk[:half])
        else:
            if progress is not None:
                progress.update(len(chunk))
            yield chunk, result
            continue
        # outside the except block: its traceback would pin the failed batch's tensors
        _free_cuda_cache()
        log.warning("%s: CUDA out of memory, retrying %d items in halves", what, len(pending[0]) + len(pending[1]))
