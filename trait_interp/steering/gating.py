"""Monitor-gated steering and activation capping, active only inside a ``with`` block.

Beside plain additive steering (:mod:`trait_interp.steering.interventions`), a batch row may get:

- a **gate**: its steering terms are added only where the projection ``h . u`` (``u = vector /
  ||vector||``, the monitor's own units, as in the projection tables) of a site output at the gate's
  layer crosses a threshold: on the tokens that cross (``mode: token``), on every token from the
  first one that crosses (``mode: latch``), or on the whole sequence when the mean projection over
  the prompt's tokens crosses (``mode: prompt``, IBM's conditional activation steering: decided once,
  in the prefill, before any position is steered). The gate reads its layer before anything of this
  block changes that module's output, so it sees the value a monitor would see there; it must read at
  or before every layer the row steers (equal layer: the same site), so the decision for a token is
  known when it is steered.
- **caps**: at each capped layer the projection on ``u`` is clamped into ``[low, high]``
  (``h + (clamp(h . u) - h . u) u``): the part of ``h`` orthogonal to ``u`` is left untouched.

The gate never reads left padding, nor (``skip_first_token``, the default) the first real token of a
sequence: the BOS / attention-sink position has an outsized norm in real models and would fire (or
never fire) a gate on every prompt alike. Positions it does not read never fire. ``positions``
(``all`` | ``response_only``) restricts steering and caps as for plain steering.

Rows are independent: every row of one ``generate`` call has its own terms, gate and caps, so a
batched call equals each row alone. Per row and read (the gate's layer, each capped layer), the
block can record every position's projection, whether the gate fired (the cap bound) there and
whether the row was steered (capped) there (:class:`Recorder`); recording stays on the device until
the block ends. In ``generate`` the prefill sees the (left-padded) prompt and every later forward one
new token (KV-cached); a later forward of several tokens is an error, as for ``response_only``.

Within one module's hook the order is: the gate reads, the caps clamp, the steering terms add.
Every hook is registered in front of other hooks (``prepend``) and removed in ``finally``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import nn

from trait_interp.core.batching import BatchSize
from trait_interp.core.generation import ChunkContext, generate_greedy
from trait_interp.core.hooks import OutputHook, output_hooks
from trait_interp.core.layers import normalize_layer
from trait_interp.core.sites import (
    check_site,
    module_device,
    num_layers,
    resolve_site,
    site_width,
)
from trait_interp.steering.interventions import SteeringPositions, SteeringTerm

GateWhen = Literal["above", "below"]  # fire where the projection is > threshold | < threshold
# steer the firing tokens | every token from the first firing one on | the whole sequence when the prompt's mean fires
GateMode = Literal["token", "latch", "prompt"]


@dataclass(frozen=True)
class Gate:
    """Steer a row only where ``h . vector / ||vector||`` at ``site``, block ``layer``, crosses ``threshold``."""

    layer: int  # negative counts from the end
    vector: torch.Tensor  # [width of the site]: the monitor's direction (any norm)
    threshold: float  # in the monitor's units (a projection on the unit vector); +-inf allowed
    site: str = "residual"
    when: GateWhen = "above"
    mode: GateMode = "prompt"
    skip_first_token: bool = True  # the first real token is never read (attention sink)


@dataclass(frozen=True)
class CapTerm:
    """Clamp ``h . u`` (``u = vector / ||vector||``) into ``[low, high]`` at block ``layer``; None = open side."""

    layer: int
    vector: torch.Tensor
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class RowIntervention:
    """One batch row: steering terms (gated when ``gate`` is set, else everywhere) and caps."""

    terms: tuple[SteeringTerm, ...] = ()
    gate: Gate | None = None
    caps: tuple[CapTerm, ...] = ()


@dataclass(frozen=True)
class ReadTrace:
    """What one read (a gate or a cap) saw in one row, one entry per position the model read.

    Positions are those of the row's real tokens in order (padding removed): the prompt, then each
    generated token that was fed back (a ``generate`` never reads the last token it produces).
    """

    kind: Literal["gate", "cap"]
    layer: int  # normalised
    projection: torch.Tensor  # [n] float32: h . u before this block changed the module's output
    # [n] bool: the gate crossed its threshold there (prompt mode: at the last prompt token, when the prompt's
    # mean crossed) / the projection was outside the cap
    fired: torch.Tensor
    steered: torch.Tensor  # [n] bool: the row was steered (gate) / capped (cap) at this position


# ---------------------------------------------------------------------------------------------
# checks


def _unit(vector: torch.Tensor, width: int, what: str) -> torch.Tensor:
    """``vector / ||vector||`` in float32, checked: 1-D, the site's width, non-zero and finite."""
    if not isinstance(vector, torch.Tensor) or vector.ndim != 1:
        shape = tuple(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
        raise ValueError(f"{what} must be a 1-D tensor of width {width}, got shape {shape}")
    if vector.shape[0] != width:
        raise ValueError(f"{what} has width {vector.shape[0]} but the site output has width {width}")
    v = vector.detach().to(torch.float32)
    norm = float(v.norm())
    if not (norm >= 1e-8 and math.isfinite(norm)):
        raise ValueError(f"{what} has norm {norm:.3g}; it must be non-zero and finite")
    return v / norm


def _check_gate(gate: Gate, n_layers: int) -> None:
    if gate.when not in get_args(GateWhen):
        raise ValueError(f"unknown gate condition {gate.when!r}; use one of {get_args(GateWhen)}")
    if gate.mode not in get_args(GateMode):
        raise ValueError(f"unknown gate mode {gate.mode!r}; use one of {get_args(GateMode)}")
    if math.isnan(float(gate.threshold)):
        raise ValueError("the gate threshold is NaN")
    check_site(gate.site)
    normalize_layer(gate.layer, n_layers)


def _check_order(row: int, gate: Gate, site: str, terms: Sequence[SteeringTerm], n_layers: int) -> None:
    """The gate must have read a token before any of the row's terms steers it (same forward pass)."""
    gate_layer = normalize_layer(gate.layer, n_layers)
    for term in terms:
        layer = normalize_layer(term.layer, n_layers)
        if gate_layer > layer or (gate_layer == layer and gate.site != site):
            raise ValueError(
                f"row {row}: the gate reads {gate.site} at layer {gate_layer}, after the steered {site} at layer {layer}; "
                "a gate must read at or before every steered layer (the same layer only at the same site)"
            )


def _check_cap(cap: CapTerm) -> None:
    low = -math.inf if cap.low is None else float(cap.low)
    high = math.inf if cap.high is None else float(cap.high)
    if math.isnan(low) or math.isnan(high) or low > high:
        raise ValueError(f"cap at layer {cap.layer}: the range [{cap.low}, {cap.high}] is empty or NaN; need low <= high")


# ---------------------------------------------------------------------------------------------
# the per-module plan


@dataclass
class _Reads:
    """Per forward pass, what one read recorded: [rows, seq] tensors, kept on the device until the block ends."""

    kind: Literal["gate", "cap"]
    layer: int
    rows: tuple[int, ...]  # the batch rows this read applies to
    projection: list[torch.Tensor] = field(default_factory=list)
    fired: list[torch.Tensor] = field(default_factory=list)
    steered: list[torch.Tensor] = field(default_factory=list)


@dataclass
class _GateGroup:
    """The gates read at one module: per row its unit vector, threshold, sign and mode; the running state."""

    unit: torch.Tensor  # [rows, width] float32, zero for rows without a gate here
    threshold: torch.Tensor  # [rows] float32
    sign: torch.Tensor  # [rows] +1 above, -1 below
    latch: torch.Tensor  # [rows] bool: mode latch
    prompt: torch.Tensor  # [rows] bool: mode prompt
    skip: torch.Tensor  # [rows] long: 1 = the first real token never fires
    member: torch.Tensor  # [rows] bool: the row's gate is read here
    steers: torch.Tensor  # [rows] bool: the row has steering terms (else the gate only observes)
    latched: torch.Tensor  # [rows] bool, carried across the forward passes of the block
    rows: list[int] = field(default_factory=list)
    mask: torch.Tensor | None = None  # [rows, seq] bool: where the gate is open, for the current forward pass
    offset: int = -1  # absolute position of the current forward's first token
    reads: _Reads | None = None


@dataclass
class _CapGroup:
    unit: torch.Tensor  # [rows, width] float32, zero for rows without a cap at this module
    low: torch.Tensor  # [rows] (-inf: no lower bound)
    high: torch.Tensor  # [rows] (+inf: no upper bound)
    rows: list[int] = field(default_factory=list)
    reads: _Reads | None = None


@dataclass
class _SteerGroup:
    delta: torch.Tensor  # [rows, width] float32: each row's sum of coef * v at this module
    gates: list[tuple[_GateGroup, torch.Tensor]] = field(default_factory=list)  # (gate group, [rows] bool gated by it)


@dataclass
class _ModulePlan:
    module: nn.Module
    layer: int
    device: torch.device
    gate: _GateGroup | None = None
    cap: _CapGroup | None = None
    steer: _SteerGroup | None = None


class _Counter:
    """Positions of one module's forward passes: the prefill sees the padded prompt, later ones 1 token."""

    def __init__(self) -> None:
        self.seen = 0

    def advance(self, seq_len: int) -> int:
        if self.seen > 0 and seq_len != 1:
            raise RuntimeError(
                f"gated or capped steering got a forward pass of {seq_len} tokens after {self.seen} tokens: it needs "
                "KV-cached generation (use_cache=True), one generate call (or one forward pass) per block"
            )
        offset = self.seen
        self.seen += seq_len
        return offset


class Recorder:
    """Collects each row's reads during a block; ``traces()`` after it (one list of ReadTrace per row)."""

    def __init__(self) -> None:
        self._reads: list[_Reads] = []
        self._padding: tuple[int, ...] = ()

    def _start(self, reads: list[_Reads], padding: tuple[int, ...]) -> None:
        self._reads, self._padding = reads, padding

    def traces(self) -> list[list[ReadTrace]]:
        """Per row, its reads (its gate, then its caps by layer), padding removed; one device sync per read."""
        out: list[list[ReadTrace]] = [[] for _ in self._padding]
        for reads in self._reads:
            if not reads.projection:
                continue
            projection = torch.cat(reads.projection, dim=1).float().cpu()
            fired = torch.cat(reads.fired, dim=1).cpu()
            steered = torch.cat(reads.steered, dim=1).cpu()
            for row in reads.rows:
                pad = self._padding[row]
                out[row].append(ReadTrace(reads.kind, reads.layer, projection[row, pad:].contiguous(),
                                          fired[row, pad:].contiguous(), steered[row, pad:].contiguous()))
        return out


def _plan(model: nn.Module, site: str, rows: Sequence[RowIntervention], record: bool) -> tuple[list[_ModulePlan], list[_Reads]]:
    """Every module this block hooks, with its rows' gates, caps and steering deltas, all checked."""
    check_site(site)
    n_layers, n_rows = num_layers(model), len(rows)
    plans: dict[tuple[str, int], _ModulePlan] = {}

    def plan_at(where: str, layer: int) -> _ModulePlan:
        key = (where, normalize_layer(layer, n_layers))
        if key not in plans:
            module = resolve_site(model, where, key[1]).module
            plans[key] = _ModulePlan(module, key[1], module_device(model, module))
        return plans[key]

    gate_of: dict[int, _GateGroup] = {}
    for row, intervention in enumerate(rows):
        gate = intervention.gate
        if gate is None:
            continue
        _check_gate(gate, n_layers)
        _check_order(row, gate, site, intervention.terms, n_layers)
        plan = plan_at(gate.site, gate.layer)
        width = site_width(model, plan.module)
        if plan.gate is None:
            def zeros(*shape: int, dtype: torch.dtype = torch.float32, device: torch.device = plan.device) -> torch.Tensor:
                return torch.zeros(*shape, dtype=dtype, device=device)

            plan.gate = _GateGroup(
                unit=zeros(n_rows, width), threshold=zeros(n_rows), sign=zeros(n_rows),
                latch=zeros(n_rows, dtype=torch.bool), prompt=zeros(n_rows, dtype=torch.bool),
                skip=zeros(n_rows, dtype=torch.long),
                member=zeros(n_rows, dtype=torch.bool), steers=zeros(n_rows, dtype=torch.bool),
                latched=zeros(n_rows, dtype=torch.bool),
            )
        group = plan.gate
        group.unit[row] = _unit(gate.vector, width, f"gate vector of row {row} ({gate.site} layer {gate.layer})").to(plan.device)
        group.threshold[row] = float(gate.threshold)
        group.sign[row] = 1.0 if gate.when == "above" else -1.0
        group.latch[row] = gate.mode == "latch"
        group.prompt[row] = gate.mode == "prompt"
        group.skip[row] = int(gate.skip_first_token)
        group.member[row] = True
        group.steers[row] = bool(intervention.terms)
        group.rows.append(row)
        gate_of[row] = group

    for row, intervention in enumerate(rows):
        for cap in intervention.caps:
            _check_cap(cap)
            plan = plan_at(site, cap.layer)
            width = site_width(model, plan.module)
            if plan.cap is None:
                plan.cap = _CapGroup(torch.zeros(n_rows, width, device=plan.device),
                                     torch.full((n_rows,), -math.inf, device=plan.device),
                                     torch.full((n_rows,), math.inf, device=plan.device))
            if row in plan.cap.rows:
                raise ValueError(f"row {row} has two caps at layer {plan.layer}; give each layer one range")
            plan.cap.rows.append(row)
            plan.cap.unit[row] = _unit(cap.vector, width, f"cap vector of row {row} ({site} layer {cap.layer})").to(plan.device)
            plan.cap.low[row] = -math.inf if cap.low is None else float(cap.low)
            plan.cap.high[row] = math.inf if cap.high is None else float(cap.high)

    for row, intervention in enumerate(rows):
        for term in intervention.terms:
            plan = plan_at(site, term.layer)
            width = site_width(model, plan.module)
            v = term.vector
            if not isinstance(v, torch.Tensor) or v.ndim != 1 or v.shape[0] != width:
                shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(f"steering vector of row {row} ({site} layer {term.layer}) must be 1-D of width "
                                 f"{width}, got shape {shape}")
            if plan.steer is None:
                plan.steer = _SteerGroup(torch.zeros(n_rows, width, device=plan.device))
            steer = plan.steer
            # coef * v in float32, as plain steering: the same rounding, so an always-open gate steers identically
            steer.delta[row] += float(term.coefficient) * v.detach().to(plan.device, torch.float32)
            group = gate_of.get(row)
            if group is None:
                continue
            for known, gated_rows in steer.gates:
                if known is group:
                    gated_rows[row] = True
                    break
            else:
                gated_rows = torch.zeros(n_rows, dtype=torch.bool, device=plan.device)
                gated_rows[row] = True
                steer.gates.append((group, gated_rows))

    reads: list[_Reads] = []
    if record:
        ordered = sorted(plans.values(), key=lambda p: p.layer)
        reads += [_attach(p.gate, _Reads("gate", p.layer, tuple(p.gate.rows))) for p in ordered if p.gate is not None]
        reads += [_attach(p.cap, _Reads("cap", p.layer, tuple(p.cap.rows))) for p in ordered if p.cap is not None]
    return list(plans.values()), reads


def _attach(group: _GateGroup | _CapGroup, reads: _Reads) -> _Reads:
    group.reads = reads
    return reads


# ---------------------------------------------------------------------------------------------
# the hook


def _hook(
    plan: _ModulePlan, n_rows: int, positions: SteeringPositions, prompt_length: int, padding: torch.Tensor | None,
    prompt_ends: torch.Tensor | None,
) -> OutputHook:
    """One hook per module: the gate reads, the caps clamp, the steering terms add (each where set up)."""
    counter = _Counter()
    cast: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
    response_only = positions == "response_only"

    def fn(hidden: torch.Tensor) -> torch.Tensor | None:  # [rows, seq, width]
        if hidden.shape[0] != n_rows:
            raise ValueError(
                f"gated or capped steering was set up for {n_rows} rows but the forward pass has batch size {hidden.shape[0]}"
            )
        seq = hidden.shape[1]
        offset = counter.advance(seq)
        index = torch.arange(offset, offset + seq, device=hidden.device)  # absolute positions of this forward
        allowed = (index >= prompt_length)[None, :] if response_only else None  # [1, seq]: may be steered
        out = hidden
        gate = plan.gate
        if gate is not None:
            projection = torch.bmm(hidden.float(), gate.unit[:, :, None])[..., 0]  # [rows, seq]
            crossed = (projection - gate.threshold[:, None]) * gate.sign[:, None] > 0
            first = gate.skip if padding is None else padding + gate.skip  # [rows] first position that is read
            read = (index[None, :] >= first[:, None]) & gate.member[:, None]
            fired = crossed & read & ~gate.prompt[:, None]
            if offset == 0:  # the prefill holds the prompt: prompt-mode rows decide once, from its mean
                ends = prompt_ends if prompt_ends is not None else torch.full_like(first, seq)
                in_prompt = read & (index[None, :] < ends[:, None])
                count = in_prompt.sum(dim=1)
                mean = (projection * in_prompt).sum(dim=1) / count.clamp(min=1)
                decided = ((mean - gate.threshold) * gate.sign > 0) & (count > 0) & gate.prompt
                fired = fired | (decided[:, None] & (index[None, :] == ends[:, None] - 1))
                gate.latched = gate.latched | decided
            since = (torch.cumsum(fired, dim=1) > 0) | gate.latched[:, None]
            gate.latched = since[:, -1]
            is_open = torch.where(gate.latch[:, None] | gate.prompt[:, None], since, fired)
            gate.mask = is_open if allowed is None else is_open & allowed
            gate.offset = offset
            if gate.reads is not None:
                gate.reads.projection.append(projection)
                gate.reads.fired.append(fired)
                gate.reads.steered.append(gate.mask & gate.steers[:, None])
        cap = plan.cap
        if cap is not None:
            h = out.float()
            projection = torch.bmm(h, cap.unit[:, :, None])[..., 0]
            clamped = torch.clamp(projection, cap.low[:, None], cap.high[:, None])
            shift = clamped - projection if allowed is None else (clamped - projection) * allowed
            out = (h + shift[..., None] * cap.unit[:, None, :]).to(hidden.dtype)
            if cap.reads is not None:
                outside = clamped != projection
                cap.reads.projection.append(projection)
                cap.reads.fired.append(outside)
                cap.reads.steered.append(outside if allowed is None else outside & allowed)
        steer = plan.steer
        if steer is not None:
            key = (hidden.device, hidden.dtype)
            if key not in cast:
                cast[key] = steer.delta.to(device=hidden.device, dtype=hidden.dtype)
            delta = cast[key][:, None, :]
            if not steer.gates and allowed is None:
                out = out + delta  # plain steering, as interventions.batched_steering
            else:
                mask = allowed.expand(n_rows, seq) if allowed is not None else torch.ones(
                    n_rows, seq, dtype=torch.bool, device=hidden.device)
                for group, gated_rows in steer.gates:
                    if group.offset != offset or group.mask is None:
                        raise RuntimeError(f"steering at layer {plan.layer} ran before its gate read this forward pass")
                    mask = torch.where(gated_rows[:, None], group.mask, mask)
                out = out + mask[..., None].to(out.dtype) * delta
        return None if out is hidden else out

    return fn


# ---------------------------------------------------------------------------------------------
# public API


@contextmanager
def intervening(
    model: nn.Module,
    site: str,
    rows: Sequence[RowIntervention],
    positions: SteeringPositions = "all",
    prompt_length: int | None = None,
    padding: Sequence[int] | None = None,
    recorder: Recorder | None = None,
    prompt_ends: Sequence[int] | None = None,
) -> Iterator[None]:
    """Per-row gated steering and caps at ``site``: row ``i`` of every forward pass gets ``rows[i]``.

    ``padding[i]``: the left padding of row ``i`` (its first real token), default none. ``prompt_length``:
    the padded prompt width, needed for ``response_only``. ``prompt_ends[i]``: where row ``i``'s prompt
    ends in the first forward pass (prompt-mode gates average the positions before it), default that
    pass's length (a ``generate`` prefill); a forward over prompt + response (a replay) must give it.
    ``recorder``, when given, receives every gate's and cap's per-position record (read it after the block).
    """
    if positions not in get_args(SteeringPositions):
        raise ValueError(f"unknown steering positions {positions!r}; use one of {get_args(SteeringPositions)}")
    if positions == "response_only" and (prompt_length is None or prompt_length < 0):
        raise ValueError("response_only steering needs prompt_length (the padded prompt width, >= 0)")
    for name, values in (("padding", padding), ("prompt_ends", prompt_ends)):
        if values is not None and len(values) != len(rows):
            raise ValueError(f"{len(rows)} rows but {len(values)} {name} entries")
    plans, reads = _plan(model, site, rows, record=recorder is not None)
    if recorder is not None:
        recorder._start(reads, tuple(int(p) for p in padding) if padding is not None else (0,) * len(rows))
    hooks = []
    for plan in plans:
        pads = None if padding is None else torch.tensor(list(padding), dtype=torch.long, device=plan.device)
        ends = None if prompt_ends is None else torch.tensor(list(prompt_ends), dtype=torch.long, device=plan.device)
        hooks.append((plan.module, _hook(plan, len(rows), positions, prompt_length or 0, pads, ends)))
    with output_hooks(hooks, prepend=True):
        yield


def chunk_context(
    model: nn.Module,
    site: str,
    rows: Sequence[RowIntervention],
    prompts: Sequence[Sequence[int]],
    positions: SteeringPositions = "all",
    traces: dict[int, list[ReadTrace]] | None = None,
) -> ChunkContext:
    """What a chunk of prompts (left-padded to one width) runs under: ``rows[i]`` for prompt ``i``.

    The layout of ``generate_greedy`` and of a replay that pads prompts the same way (responses after
    them, padded on the right): every prompt ends at the chunk's width. With ``traces``, each finished
    chunk adds its prompts' records (a chunk that fails and is retried in halves records again).
    """

    @contextmanager
    def chunk(indices: Sequence[int], width: int) -> Iterator[None]:
        recorder = Recorder() if traces is not None else None
        padding = [width - len(prompts[i]) for i in indices]
        with intervening(model, site, [rows[i] for i in indices], positions, width, padding, recorder,
                         prompt_ends=[width] * len(indices)):
            yield
        if recorder is not None and traces is not None:  # only a chunk that finished
            for i, row_traces in zip(indices, recorder.traces()):
                traces[i] = row_traces

    return chunk


@dataclass(frozen=True)
class IntervenedGeneration:
    responses: list[list[int]]  # one per prompt: greedy ids, trimmed after the first EOS
    traces: list[list[ReadTrace]]  # one per prompt: its reads, cut to the positions of prompt + response


@torch.no_grad()
def generate_intervened(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    rows: Sequence[RowIntervention],
    site: str,
    max_new_tokens: int,
    pad_id: int,
    eos_ids: Sequence[int],
    batch_size: BatchSize = 16,
    positions: SteeringPositions = "all",
    progress: bool = False,
    record: bool = True,
) -> IntervenedGeneration:
    """Greedy continuations where prompt ``j`` gets ``rows[j]`` (gate, caps, terms), batched as ``generate_steered``.

    With ``record``, each prompt's traces cover its prompt tokens and every generated token that was
    fed back (all but the last token of its response).
    """
    if len(rows) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(rows)} rows of interventions")
    _plan(model, site, rows, record=False)  # every row checked before the first generate call
    traces: dict[int, list[ReadTrace]] = {}
    context = chunk_context(model, site, rows, prompts, positions, traces if record else None)
    responses = generate_greedy(model, prompts, max_new_tokens, pad_id, eos_ids, batch_size, progress, context=context)
    cut = []
    for j, (prompt, response) in enumerate(zip(prompts, responses)):
        read = len(prompt) + max(0, len(response) - 1)  # the last generated token is never fed back
        cut.append([ReadTrace(t.kind, t.layer, t.projection[:read], t.fired[:read], t.steered[:read])
                    for t in traces.get(j, [])])
    return IntervenedGeneration(responses, cut)
