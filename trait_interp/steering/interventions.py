"""Activation steering and directional ablation, active only inside a ``with`` block.

Steering adds ``coefficient * vector`` to the output of a site (see ``trait_interp.core.sites``) at one
or more layers. ``batched_steering`` gives every row of a batch its own terms, so K steering
configurations can be generated in one ``generate`` call instead of K. ``response_only`` leaves
the prompt positions untouched and steers only the tokens the model generates.

The hooks are registered *in front of* any hook already on the module (``prepend=True``).
transformers 5 records ``output_hidden_states`` with forward hooks of its own, installed lazily
the first time hidden states are requested; appended after those, a steering hook would change
the model's computation while ``hidden_states`` kept reporting the unsteered value. In front,
every observer (HF's recorder, ``capture_pooled``) sees the steered output. Every hook is
removed in ``finally``, also when the forward pass raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from trait_interp.core.batching import BatchSize
from trait_interp.core.forward import Batch, TokenSequence, forward_batches
from trait_interp.core.generation import generate_greedy
from trait_interp.core.hooks import OutputHook, output_hooks
from trait_interp.core.layers import normalize_layer
from trait_interp.core.sites import module_device, num_layers, resolve_site, site_width

SteeringPositions = Literal["all", "response_only"]


@dataclass(frozen=True)
class SteeringTerm:
    """Add ``coefficient * vector`` to the site output of block ``layer`` (negative counts from the end)."""

    layer: int
    vector: torch.Tensor  # [width of the site]
    coefficient: float


# ---------------------------------------------------------------------------------------------
# hook plumbing


def _check_vector(vector: torch.Tensor, width: int, what: str) -> None:
    if not isinstance(vector, torch.Tensor) or vector.ndim != 1:
        shape = tuple(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
        raise ValueError(f"{what} must be a 1-D tensor of width {width}, got shape {shape}")
    if vector.shape[0] != width:
        raise ValueError(f"{what} has width {vector.shape[0]} but the site output has width {width}")


class _PositionGate:
    """Which positions of each forward pass to steer: all, or those at index >= ``prompt_length``.

    For ``response_only`` the gate counts the tokens its hook has seen: the prefill of a KV-cached
    ``generate`` sees the (padded) prompt, each later step one new token. A forward of several
    tokens after the first means the cache is not used (or a second ``generate`` runs in the same
    block), and token counts no longer say which positions are the response: that is an error.
    """

    def __init__(self, positions: SteeringPositions, prompt_length: int | None) -> None:
        if positions not in get_args(SteeringPositions):
            raise ValueError(f"unknown steering positions {positions!r}; use one of {get_args(SteeringPositions)}")
        if positions == "response_only":
            if prompt_length is None:
                raise ValueError("response_only steering needs prompt_length (the padded prompt width)")
            if prompt_length < 0:
                raise ValueError(f"prompt_length must be >= 0, got {prompt_length}")
        self.response_only = positions == "response_only"
        self.prompt_length = prompt_length or 0
        self.seen = 0

    def first_steered(self, seq_len: int) -> int:
        """Index (in this forward's sequence) of the first position to steer; >= seq_len = none."""
        if not self.response_only:
            return 0
        if self.seen > 0 and seq_len != 1:
            raise RuntimeError(
                f"response_only steering got a forward pass of {seq_len} tokens after {self.seen} tokens: "
                "it needs KV-cached generation (use_cache=True), one generate call per steering block"
            )
        first = max(0, self.prompt_length - self.seen)
        self.seen += seq_len
        return first


def _adder(delta: torch.Tensor, gate: _PositionGate, rows: int | None) -> OutputHook:
    """Hook adding ``delta`` ([width], or [rows, width] per batch row) at the gated positions."""
    cast: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def fn(hidden: torch.Tensor) -> torch.Tensor | None:  # hidden: [batch, seq, width]
        if rows is not None and hidden.shape[0] != rows:
            raise ValueError(
                f"batched steering was set up for {rows} rows but the forward pass has batch size {hidden.shape[0]}"
            )
        first = gate.first_steered(hidden.shape[1])
        if first >= hidden.shape[1]:
            return None
        key = (hidden.device, hidden.dtype)
        if key not in cast:
            cast[key] = delta.to(device=hidden.device, dtype=hidden.dtype)
        add = cast[key] if rows is None else cast[key][:, None, :]
        if first == 0:
            return hidden + add
        out = hidden.clone()
        out[:, first:] += add
        return out

    return fn


def _layer_deltas(model: nn.Module, site: str, rows: Sequence[Sequence[SteeringTerm]]) -> dict[int, torch.Tensor]:
    """Per normalised layer, the float32 ``[len(rows), width]`` sum of each row's ``coef * v``."""
    n_layers = num_layers(model)
    deltas: dict[int, torch.Tensor] = {}
    for row, terms in enumerate(rows):
        for term in terms:
            layer = normalize_layer(term.layer, n_layers)
            module = resolve_site(model, site, layer).module
            width = site_width(model, module)
            _check_vector(term.vector, width, f"steering vector for {site} layer {term.layer}")
            if layer not in deltas:
                deltas[layer] = torch.zeros(len(rows), width, dtype=torch.float32, device=module_device(model, module))
            # coef * v in float32: a bf16 model still gets the exact float32 product, rounded once
            deltas[layer][row] += float(term.coefficient) * term.vector.detach().to(deltas[layer].device, torch.float32)
    return deltas


# ---------------------------------------------------------------------------------------------
# public API


@contextmanager
def steering(
    model: nn.Module,
    site: str,
    terms: Sequence[SteeringTerm],
    positions: SteeringPositions = "all",
    prompt_length: int | None = None,
) -> Iterator[None]:
    """Add every term's ``coefficient * vector`` to ``site`` at its layer, for every row of every forward pass.

    Terms at the same layer sum. ``response_only`` steers only positions >= ``prompt_length``
    (``input_ids.shape[1]`` of the ``generate`` call), counting tokens across KV-cached steps.
    """
    _PositionGate(positions, prompt_length)  # validated even when there is no term
    deltas = _layer_deltas(model, site, [terms])
    hooks = [
        (resolve_site(model, site, layer).module, _adder(delta[0], _PositionGate(positions, prompt_length), None))
        for layer, delta in deltas.items()
    ]
    with output_hooks(hooks, prepend=True):
        yield


@contextmanager
def batched_steering(
    model: nn.Module,
    site: str,
    rows: Sequence[Sequence[SteeringTerm]],
    positions: SteeringPositions = "all",
    prompt_length: int | None = None,
) -> Iterator[None]:
    """Per-row steering: batch row ``i`` gets the sum of ``rows[i]``'s terms (none = unsteered).

    Rows may steer different layers with different vectors and coefficients; every forward pass
    inside the block must have batch size ``len(rows)``.
    """
    _PositionGate(positions, prompt_length)
    deltas = _layer_deltas(model, site, rows)
    hooks = [
        (resolve_site(model, site, layer).module, _adder(delta, _PositionGate(positions, prompt_length), len(rows)))
        for layer, delta in deltas.items()
    ]
    with output_hooks(hooks, prepend=True):
        yield


@contextmanager
def ablation(model: nn.Module, site: str, direction: torch.Tensor, layers: Sequence[int]) -> Iterator[None]:
    """Directional ablation ``h - (h . r) r``, ``r = direction / ||direction||``, at every position of ``layers``."""
    if not isinstance(direction, torch.Tensor) or direction.ndim != 1:
        shape = tuple(direction.shape) if isinstance(direction, torch.Tensor) else type(direction).__name__
        raise ValueError(f"ablation direction must be a 1-D tensor, got shape {shape}")
    unit = direction.detach().to(torch.float32)
    norm = float(unit.norm())
    if not norm >= 1e-8:  # also rejects NaN
        raise ValueError(f"ablation direction has norm {norm:.3g}; it must be non-zero")
    unit = unit / norm
    n_layers = num_layers(model)
    hooks = []
    for layer in sorted({normalize_layer(layer, n_layers) for layer in layers}):
        module = resolve_site(model, site, layer).module
        _check_vector(unit, site_width(model, module), f"ablation direction for {site} layer {layer}")
        hooks.append((module, _projector(unit.to(module_device(model, module)))))
    with output_hooks(hooks, prepend=True):
        yield


def _projector(unit: torch.Tensor) -> OutputHook:
    def fn(hidden: torch.Tensor) -> torch.Tensor:
        h = hidden.float()
        r = unit.to(h.device)
        return (h - (h @ r)[..., None] * r).to(hidden.dtype)

    return fn


@torch.no_grad()
def generate_steered(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    row_terms: Sequence[Sequence[SteeringTerm]],
    site: str,
    max_new_tokens: int,
    pad_id: int,
    eos_ids: Sequence[int],
    batch_size: BatchSize = 16,
    positions: SteeringPositions = "all",
    progress: bool = False,
) -> list[list[int]]:
    """Greedy continuations where prompt ``j`` is steered by its own ``row_terms[j]``.

    Same generation settings and trimming as ``generate_greedy``; one ``generate`` call per chunk
    of ``batch_size`` rows, whatever mix of steering configurations the chunk holds.
    """
    if len(row_terms) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(row_terms)} rows of steering terms")
    _layer_deltas(model, site, row_terms)  # every term checked before the first generate call
    _PositionGate(positions, 0)

    def steer(rows: Sequence[int], width: int) -> AbstractContextManager[None]:
        return batched_steering(model, site, [row_terms[i] for i in rows], positions, prompt_length=width)

    return generate_greedy(model, prompts, max_new_tokens, pad_id, eos_ids, batch_size, progress, context=steer)


@torch.no_grad()
def mean_activation_norm(
    model: nn.Module,
    site: str,
    layers: Sequence[int],
    sequences: Sequence[TokenSequence],
    pad_id: int,
    positions: SteeringPositions = "all",
    batch_size: BatchSize = 16,
) -> dict[int, float]:
    """Mean L2 norm of ``site``'s output per layer over the tokens steering would touch.

    ``all`` = every real token of prompt + response, ``response_only`` = response tokens. Each
    sequence's first token is always left out: the BOS / attention-sink position has an outsized
    norm in real models and would inflate ``coef = ratio * mean ||h||``. Keys are the layers as
    given (a negative layer stays negative).
    """
    if positions not in get_args(SteeringPositions):
        raise ValueError(f"unknown steering positions {positions!r}; use one of {get_args(SteeringPositions)}")
    n_layers = num_layers(model)
    targets = {layer: normalize_layer(layer, n_layers) for layer in layers}
    totals = {layer: torch.zeros((), dtype=torch.float64) for layer in set(targets.values())}
    count = 0

    def attach(batch: Batch):
        mask = _norm_mask(batch.sequences, batch.width, positions).to(batch.input_ids.device)
        sums: dict[int, torch.Tensor] = {}

        def accumulate(layer: int) -> OutputHook:
            def fn(hidden: torch.Tensor) -> None:  # [batch, seq, width]
                sums[layer] = hidden.float().norm(dim=-1)[mask].double().sum().cpu()

            return fn

        hooks = [(resolve_site(model, site, layer).module, accumulate(layer)) for layer in totals]
        return hooks, (int(mask.sum()), sums)

    for _batch, (n_batch, sums) in forward_batches(
        model, sequences, attach, max(totals), batch_size, pad_id, desc="activation norm"
    ):
        count += n_batch
        for layer, total in sums.items():
            totals[layer] += total
    if count == 0:
        raise ValueError(f"no token to average over for positions={positions!r} (empty responses or sequences?)")
    return {layer: float(totals[normalized]) / count for layer, normalized in targets.items()}


def _norm_mask(batch: Sequence[TokenSequence], width: int, positions: SteeringPositions) -> torch.Tensor:
    """``[batch, width]`` bool: the positions ``mean_activation_norm`` averages over."""
    mask = torch.zeros(len(batch), width, dtype=torch.bool)
    for row, seq in enumerate(batch):
        pad = width - len(seq.ids)
        first = max(1, len(seq.prompt_ids) if positions == "response_only" else 0)
        mask[row, pad + first :] = True
    return mask
