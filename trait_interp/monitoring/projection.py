"""Stream-through projection: token-by-token scalar projections onto trait vectors, one forward pass.

For every batch of exact prompt+response ids (left-padded, with ``position_ids``), hooks at each
needed (site, layer) compute on the device only ``h @ V_unit.T`` (all vectors of that site and
layer stacked, one matmul) and ``||h||`` per token. Only ``[batch, seq, n_vectors]`` scores and
``[batch, seq]`` norms ever leave the device, once per batch; the hidden states are never kept.

Projection = ``h . v / ||v||`` (scalar projection, not cosine); ``cosine = projection / ||h||``.

Massive-dim cleaning (``clean_dims``, reference §8.5) zeroes the given dims in both ``h`` and
``v`` before the dot product, but divides by the norm of the ORIGINAL vector, as the reference
formula does: ``proj' = proj - sum_d h[d] v[d] / ||v||`` and ``||h'|| = sqrt(||h||^2 - sum_d h[d]^2)``.
Both are computed directly by zeroing dims (no subtraction of large numbers).

Massive-dim components (``massive_sets``, named dim sets such as ``recommended`` and ``top_k``):
for each set, also ``sum_{d in set} h[d] v[d] / ||v||`` on the RAW ``h`` and ``v``, so a reader can
clean (or un-clean) afterwards: raw projection = cleaned projection + the component of the dims
that were cleaned. The dashboard uses them to switch cleaning on and off without activations.

The forward pass (``core.forward``) stops after the deepest decoder block that holds a hooked
site: blocks above it, the final norm and the LM head would only cost time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from trait_interp.core.batching import BatchSize
from trait_interp.core.forward import Batch, TokenSequence, forward_batches
from trait_interp.core.layers import normalize_layer
from trait_interp.core.sites import (
    input_device,
    module_device,
    num_layers,
    resolve_site,
    site_width,
)

COLUMNS = (
    "prompt_id", "frame", "token_index", "token", "layer", "trait", "method", "site", "projection", "token_norm",
)  # fmt: skip  # = schemas.projections.Projections, in order


@dataclass(frozen=True)
class TraitVector:
    """One direction to project on; ``vector`` may have any norm (it is normalised here)."""

    trait: str
    method: str
    site: str
    layer: int  # negative counts from the end
    vector: torch.Tensor  # [width of the site]


@dataclass(frozen=True)
class SequenceProjection:
    """One sequence's projections; token ``t`` is position ``t`` of ``prompt_ids + response_ids``."""

    scores: torch.Tensor  # [n_tokens, n_vectors] float32, columns in the order of the vectors given
    norms: dict[tuple[str, int], torch.Tensor]  # (site, normalised layer) -> [n_tokens] float32 ||h||
    # massive-dim set name -> [n_tokens, n_vectors] float32: the raw projection's part on those dims
    massive: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ProjectionResult:
    sequences: tuple[SequenceProjection, ...]  # one per input sequence, same order
    layers: tuple[int, ...]  # each vector's normalised layer (>= 0), in the order of the vectors

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> SequenceProjection:
        return self.sequences[index]


@dataclass(frozen=True)
class _Group:
    """All vectors hooked at one (site, layer): their columns and the stacked unit matrix."""

    site: str
    layer: int
    module: nn.Module
    columns: tuple[int, ...]  # indices into the vectors given
    unit: torch.Tensor  # [n, width] float32: v / ||v|| (cleaned dims zeroed, norm of the original v)
    keep: torch.Tensor | None  # [width] float32 0/1 mask of the dims kept, None = no cleaning
    # massive-dim set name -> (dims [k] long, raw unit vectors on those dims [n, k]); k may be 0
    massive: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def float32_products(hidden: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """``hidden @ unit.T`` in float32 (``[..., width] x [n, width] -> [..., n]``), without a float32 copy
    of ``hidden`` where the device can avoid one.

    A float32 ``hidden`` is multiplied as it is. On CUDA a bf16/fp16 ``hidden`` goes through one GEMM
    with float32 output (``torch.mm(..., out_dtype=float32)``; the unit vectors are rounded to the
    model's dtype, an error below 2^-8 of ``|h|`` per projection). Elsewhere (CPU) ``hidden`` is upcast.
    """
    if hidden.dtype == torch.float32:
        return hidden @ unit.T
    if hidden.is_cuda:
        flat = hidden.reshape(-1, hidden.shape[-1])  # [batch * seq, width]
        out = torch.mm(flat, unit.to(hidden.dtype).T, out_dtype=torch.float32)  # [batch * seq, n]
        return out.reshape(*hidden.shape[:-1], unit.shape[0])
    return hidden.float() @ unit.T


def _width_error(vector: TraitVector, layer: int, width: int, expected: int) -> ValueError:
    return ValueError(
        f"vector for trait '{vector.trait}' ({vector.method}) has width {width} but site '{vector.site}' "
        f"at layer {layer} has width {expected}"
    )


def _dims_by_layer(dims_by_layer: Mapping[int, Sequence[int]] | None, n_layers: int) -> dict[int, list[int]]:
    return {
        normalize_layer(int(layer), n_layers): sorted({int(d) for d in dims}) for layer, dims in (dims_by_layer or {}).items()
    }


def _check_dims(dims: list[int], layer: int, site: str, width: int) -> None:
    if dims and (dims[0] < 0 or dims[-1] >= width):
        raise ValueError(f"massive dims {dims} at layer {layer} are out of range for site '{site}' (width {width})")


def _groups(
    model: nn.Module,
    vectors: Sequence[TraitVector],
    clean_dims: Mapping[int, Sequence[int]] | None,
    massive_sets: Mapping[str, Mapping[int, Sequence[int]]] | None = None,
) -> tuple[list[_Group], tuple[int, ...]]:
    n_layers = num_layers(model)
    clean = _dims_by_layer(clean_dims, n_layers)
    sets = {name: _dims_by_layer(dims, n_layers) for name, dims in (massive_sets or {}).items()}
    layers = tuple(normalize_layer(v.layer, n_layers) for v in vectors)
    by_key: dict[tuple[str, int], list[int]] = {}
    for column, (vector, layer) in enumerate(zip(vectors, layers)):
        if not isinstance(vector.vector, torch.Tensor) or vector.vector.ndim != 1:
            raise ValueError(f"vector for trait '{vector.trait}' at {vector.site} layer {layer} must be a 1-D tensor")
        by_key.setdefault((vector.site, layer), []).append(column)
    groups = []
    for (site, layer), columns in by_key.items():
        module = resolve_site(model, site, layer).module
        width = site_width(model, module)
        rows = []
        for column in columns:
            v = vectors[column].vector.detach().to(torch.float32).cpu()
            if v.shape[0] != width:
                raise _width_error(vectors[column], layer, v.shape[0], width)
            norm = float(v.norm())
            if not norm > 0:  # also NaN
                raise ValueError(f"vector for trait '{vectors[column].trait}' at {site} layer {layer} has norm {norm}")
            rows.append(v / norm)
        unit = torch.stack(rows)  # [n, width]
        device = module_device(model, module)
        massive = {}
        for name, by_layer in sets.items():  # a layer without an entry has no massive dims in that set
            dims = by_layer.get(layer, [])
            _check_dims(dims, layer, site, width)
            index = torch.tensor(dims, dtype=torch.long)
            massive[name] = (index.to(device), unit[:, index].to(device))  # [k], [n, k]
        keep = None
        if clean.get(layer):
            dims = clean[layer]
            _check_dims(dims, layer, site, width)
            keep = torch.ones(width)
            keep[dims] = 0.0
            unit = unit * keep  # zeroed dims, still divided by the ORIGINAL ||v||
        groups.append(
            _Group(site, layer, module, tuple(columns), unit.to(device), None if keep is None else keep.to(device),
                   massive)
        )
    return groups, layers


def project_sequences(
    model: nn.Module,
    sequences: Sequence[TokenSequence],
    vectors: Sequence[TraitVector],
    pad_id: int,
    batch_size: BatchSize = 8,
    clean_dims: Mapping[int, Sequence[int]] | None = None,
    progress: bool = False,
    massive_sets: Mapping[str, Mapping[int, Sequence[int]]] | None = None,
) -> ProjectionResult:
    """Scalar projection of every token's site output onto every vector, plus ``||h||`` per (site, layer).

    ``clean_dims`` maps a layer to the massive dims removed from ``h`` and ``v`` at that layer (for
    every site hooked at it; calibrate on the same site). ``massive_sets`` names dim sets (layer ->
    dims) whose part of the RAW projection is returned too (``SequenceProjection.massive``). A
    vector whose width differs from its site's width is a ``ValueError`` naming the trait, site,
    layer and both widths.
    """
    if not vectors:
        raise ValueError("no vector to project on")
    groups, layers = _groups(model, vectors, clean_dims, massive_sets)
    set_names = list(massive_sets or {})
    order = torch.tensor([c for g in groups for c in g.columns])  # group-major column -> vector index
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))  # vector index -> group-major column
    device = input_device(model)
    results: list[SequenceProjection | None] = [None] * len(sequences)

    def attach(_batch: Batch):
        scores: list[torch.Tensor | None] = [None] * len(groups)
        norms: list[torch.Tensor | None] = [None] * len(groups)
        parts: dict[str, list[torch.Tensor | None]] = {name: [None] * len(groups) for name in set_names}

        def projector(index: int):
            group = groups[index]

            def fn(hidden: torch.Tensor) -> None:  # [batch, seq, width]
                if hidden.shape[-1] != group.unit.shape[1]:  # a site whose declared width was wrong
                    column = group.columns[0]
                    raise _width_error(vectors[column], group.layer, group.unit.shape[1], hidden.shape[-1])
                for name, (dims, unit_on_dims) in group.massive.items():  # raw h on the set's dims
                    parts[name][index] = (hidden[..., dims].float() @ unit_on_dims.T).to(device)  # [batch, seq, n]
                h = hidden if group.keep is None else hidden.float() * group.keep
                # stays on the device; one transfer per batch after the forward pass
                scores[index] = float32_products(h, group.unit).to(device)
                norms[index] = torch.linalg.vector_norm(h, dim=-1, dtype=torch.float32).to(device)

            return fn

        return [(group.module, projector(i)) for i, group in enumerate(groups)], (scores, norms, parts)

    # batches of similar lengths waste less compute on padding; results go back to the input order
    for batch, (scores, norms, parts) in forward_batches(
        model, sequences, attach, max(layers), batch_size, pad_id, by_length=True, desc="project", progress=progress
    ):
        if any(s is None for s in scores):
            raise RuntimeError("a projection hook did not run during the forward pass")
        batch_scores = torch.cat(scores, dim=-1)[..., inverse].cpu()  # type: ignore[arg-type]  # [b, s, n_vectors]
        batch_norms = torch.stack(norms, dim=-1).cpu()  # type: ignore[arg-type]  # [b, s, n_groups]
        batch_parts = {name: torch.cat(p, dim=-1)[..., inverse].cpu() for name, p in parts.items()}  # type: ignore[arg-type]
        for row, index in enumerate(batch.rows):
            pad = batch.padding(row)
            results[index] = SequenceProjection(
                scores=batch_scores[row, pad:].contiguous(),
                norms={(g.site, g.layer): batch_norms[row, pad:, i].contiguous() for i, g in enumerate(groups)},
                massive={name: part[row, pad:].contiguous() for name, part in batch_parts.items()},
            )
    done = tuple(r for r in results if r is not None)
    assert len(done) == len(sequences)
    return ProjectionResult(sequences=done, layers=layers)


def to_long_rows(
    result: ProjectionResult,
    prompt_ids: Sequence[str],
    sequences: Sequence[TokenSequence],
    token_strings: Sequence[Sequence[str]],
    vectors: Sequence[TraitVector],
) -> pd.DataFrame:
    """The long table of ``schemas.projections.Projections``: one row per (prompt, vector, token).

    ``token_strings[i]`` has one string per id of ``sequences[i].ids`` (prompt then response).
    Rows are ordered by prompt, then vector, then token, so each trajectory is contiguous.
    Each massive-dim set of the result adds a column ``massive_<name>``.
    """
    if not len(result) == len(prompt_ids) == len(sequences) == len(token_strings):
        raise ValueError(
            f"lengths differ: {len(result)} results, {len(prompt_ids)} prompt ids, "
            f"{len(sequences)} sequences, {len(token_strings)} token lists"
        )
    if len(vectors) != len(result.layers):
        raise ValueError(f"{len(vectors)} vectors but the result has {len(result.layers)} columns")
    n_vectors = len(vectors)
    for pid, seq, tokens, proj in zip(prompt_ids, sequences, token_strings, result.sequences):
        if len(tokens) != len(seq.ids) or proj.scores.shape != (len(seq.ids), n_vectors):
            raise ValueError(
                f"prompt {pid}: {len(seq.ids)} ids, {len(tokens)} token strings, "
                f"scores of shape {tuple(proj.scores.shape)}"
            )
    # every column is built from small pools and integer codes: no per-row Python objects
    lengths = np.asarray([len(seq.ids) for seq in sequences], dtype=np.int64)
    n_prompt = np.asarray([len(seq.prompt_ids) for seq in sequences], dtype=np.int64)
    seq_code = np.repeat(np.arange(len(sequences)), lengths * n_vectors)
    vector_code = np.concatenate([np.repeat(np.arange(n_vectors), n) for n in lengths] or [np.empty(0, np.int64)])
    token_index = np.concatenate([np.tile(np.arange(n), n_vectors) for n in lengths] or [np.empty(0, np.int64)])
    first_token = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    scores = [proj.scores.numpy().T.reshape(-1) for proj in result.sequences]  # vector-major per sequence
    norms = [
        np.stack([proj.norms[(v.site, layer)].numpy() for v, layer in zip(vectors, result.layers)]).reshape(-1)
        for proj in result.sequences
    ]
    massive = {
        f"massive_{name}": np.concatenate(
            [proj.massive[name].numpy().T.reshape(-1) for proj in result.sequences] or [np.empty(0)]
        ).astype(np.float32)
        for name in (result.sequences[0].massive if result.sequences else {})
    }
    return pd.DataFrame(
        {
            "prompt_id": _strings([str(pid) for pid in prompt_ids], seq_code),
            "frame": _strings(["prompt", "response"], (token_index >= n_prompt[seq_code]).astype(np.int64)),
            "token_index": token_index.astype(np.int64),
            "token": _strings([t for tokens in token_strings for t in tokens], first_token[seq_code] + token_index),
            "layer": np.asarray(result.layers, dtype=np.int64)[vector_code],
            "trait": _strings([v.trait for v in vectors], vector_code),
            "method": _strings([v.method for v in vectors], vector_code),
            "site": _strings([v.site for v in vectors], vector_code),
            "projection": np.concatenate(scores or [np.empty(0)]).astype(np.float32),
            "token_norm": np.concatenate(norms or [np.empty(0)]).astype(np.float32),
            **massive,
        }
    )


def _strings(pool: Sequence[str], codes: np.ndarray) -> pd.Series:
    """``pool[codes]`` as a string column (one string object per distinct value, not per row)."""
    return pd.Series(pd.array(list(pool), dtype="str").take(codes))
