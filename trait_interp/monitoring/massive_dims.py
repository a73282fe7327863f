"""Massive-activation calibration: which hidden dims carry huge, nearly constant values.

Over the RESPONSE tokens of all given sequences, per layer: the mean activation vector
``mean_L`` (hooks accumulate sums on the device; nothing per token is kept), its top-k dims by
``|mean_L[d]|``, each candidate dim's magnitude ratio ``|mean_L[d]| / mean_d(|mean_L|)`` and
the mean token norm ``||h||`` (reference §8.5, aggregate mode). The recommended cleaning set is
the dims in the top-k at >= ``min_layers`` layers ("Top 5, 3+ layers" in the reference dashboard).

The reference wrote and read the calibration at two different paths and shelled out to scripts
that did not exist; here it is a plain dict (``to_json``) that a stage writes where it is told.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn

from trait_interp.core.batching import BatchSize
from trait_interp.core.forward import Batch, TokenSequence, forward_batches
from trait_interp.core.layers import normalize_layer
from trait_interp.core.sites import input_device, num_layers, resolve_site

CleanMode = Literal["none", "recommended", "top_k"]
CLEAN_MODES: tuple[CleanMode, ...] = get_args(CleanMode)
CLEANING_PARTS: tuple[CleanMode, ...] = ("recommended", "top_k")  # the modes that remove dims (all but none)


@dataclass(frozen=True)
class Calibration:
    model: str
    site: str
    layers: tuple[int, ...]  # normalised (>= 0), sorted
    top_k: int
    n_sequences: int
    n_tokens: int  # response tokens averaged over
    top_dims_by_layer: dict[int, tuple[int, ...]]  # layer -> top-k dims by |mean|, largest first
    dim_magnitude_by_layer: dict[int, tuple[float, ...]]  # candidate dim -> ratio at each of ``layers``
    layer_norms: dict[int, float]  # layer -> mean ||h|| over the response tokens
    min_layers: int = 3  # a dim is recommended when in the top-k at >= this many layers

    @property
    def recommended(self) -> list[int]:
        return recommended_dims(self, self.min_layers)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "site": self.site,
            "layers": list(self.layers),
            "top_k": self.top_k,
            "n_sequences": self.n_sequences,
            "n_tokens": self.n_tokens,
            "top_dims_by_layer": {str(layer): list(dims) for layer, dims in self.top_dims_by_layer.items()},
            "dim_magnitude_by_layer": {str(dim): list(r) for dim, r in self.dim_magnitude_by_layer.items()},
            "layer_norms": {str(layer): norm for layer, norm in self.layer_norms.items()},
            "min_layers": self.min_layers,
            "recommended": self.recommended,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        try:
            calibration = cls(
                model=str(data["model"]),
                site=str(data["site"]),
                layers=tuple(int(layer) for layer in data["layers"]),
                top_k=int(data["top_k"]),
                n_sequences=int(data["n_sequences"]),
                n_tokens=int(data["n_tokens"]),
                top_dims_by_layer={int(k): tuple(int(d) for d in v) for k, v in data["top_dims_by_layer"].items()},
                dim_magnitude_by_layer={
                    int(k): tuple(float(r) for r in v) for k, v in data["dim_magnitude_by_layer"].items()
                },
                layer_norms={int(k): float(v) for k, v in data["layer_norms"].items()},
                min_layers=int(data.get("min_layers", 3)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"not a massive-dims calibration: {err!r}") from None
        if "recommended" in data and list(data["recommended"]) != calibration.recommended:
            raise ValueError(
                f"calibration lists recommended dims {data['recommended']} "
                f"but its top dims give {calibration.recommended}"
            )
        return calibration


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


@torch.no_grad()
def calibrate(
    model: nn.Module,
    sequences: Sequence[TokenSequence],
    layers: Sequence[int],
    pad_id: int,
    site: str = "residual",
    top_k: int = 5,
    batch_size: BatchSize = 8,
    min_layers: int = 3,
    model_name: str | None = None,
    progress: bool = False,
) -> Calibration:
    """Mean activation per layer over the response tokens of ``sequences``, and its massive dims."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    n_layers = num_layers(model)
    targets = sorted({normalize_layer(layer, n_layers) for layer in layers})
    if not targets:
        raise ValueError("no layer to calibrate")
    modules = {layer: resolve_site(model, site, layer).module for layer in targets}
    device = input_device(model)
    dtype = _accumulator_dtype(device)
    sums: dict[int, torch.Tensor] = {}
    norm_sums = {layer: torch.zeros((), dtype=dtype, device=device) for layer in targets}
    n_tokens = 0

    def attach(batch: Batch):
        mask = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
        for row, seq in enumerate(batch.sequences):  # response positions only (left padding shifts them)
            mask[row, batch.width - len(seq.response_ids) :] = bool(seq.response_ids)
        weights = mask.to(device=device, dtype=torch.float32)
        totals: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def accumulate(layer: int):
            def fn(hidden: torch.Tensor) -> None:  # [batch, seq, width]
                h = hidden.float()
                w = weights.to(h.device)
                total = torch.einsum("bs,bsw->w", w, h).to(device=device, dtype=dtype)
                norm = (torch.linalg.vector_norm(h, dim=-1) * w).sum().to(device=device, dtype=dtype)
                totals[layer] = (total, norm)

            return fn

        return [(module, accumulate(layer)) for layer, module in modules.items()], (int(mask.sum()), totals)

    # less padding; sums do not depend on order. No block above the deepest calibrated layer runs.
    for _batch, (n_batch, totals) in forward_batches(
        model, sequences, attach, max(targets), batch_size, pad_id, by_length=True, desc="calibrate", progress=progress
    ):
        if n_batch == 0:
            continue
        n_tokens += n_batch
        for layer, (total, norm) in totals.items():
            sums[layer] = sums[layer] + total if layer in sums else total
            norm_sums[layer] += norm
    if n_tokens == 0:
        raise ValueError("no response token to calibrate on (all responses are empty)")
    means = {layer: (sums[layer] / n_tokens).cpu() for layer in targets}
    k = min(top_k, next(iter(means.values())).shape[0])
    top = {layer: tuple(int(d) for d in torch.topk(means[layer].abs(), k).indices) for layer in targets}
    candidates = sorted({d for dims in top.values() for d in dims})
    magnitude = {
        dim: tuple(float(means[layer][dim].abs() / means[layer].abs().mean()) for layer in targets)
        for dim in candidates
    }
    return Calibration(
        model=model_name if model_name is not None else str(getattr(model.config, "_name_or_path", "")),
        site=site,
        layers=tuple(targets),
        top_k=k,
        n_sequences=len(sequences),
        n_tokens=n_tokens,
        top_dims_by_layer=top,
        dim_magnitude_by_layer=magnitude,
        layer_norms={layer: float(norm_sums[layer].cpu()) / n_tokens for layer in targets},
        min_layers=min_layers,
    )


def recommended_dims(calibration: Calibration, min_layers: int = 3) -> list[int]:
    """Dims in the top-k at >= ``min_layers`` of the calibrated layers, sorted."""
    if min_layers < 1:
        raise ValueError(f"min_layers must be >= 1, got {min_layers}")
    counts: dict[int, int] = {}
    for dims in calibration.top_dims_by_layer.values():
        for dim in set(dims):
            counts[dim] = counts.get(dim, 0) + 1
    return sorted(dim for dim, count in counts.items() if count >= min_layers)


def clean_dims_for(calibration: Calibration, mode: CleanMode) -> dict[int, list[int]]:
    """Per layer, the dims to remove: none, the recommended set at every layer, or each layer's own top-k.

    Only calibrated layers get an entry (a layer projected but not calibrated is left uncleaned),
    so calibrate every layer that is projected.
    """
    if mode == "none":
        return {}
    if mode == "recommended":
        dims = calibration.recommended
        return {layer: list(dims) for layer in calibration.layers} if dims else {}
    if mode == "top_k":
        return {layer: sorted(dims) for layer, dims in calibration.top_dims_by_layer.items()}
    raise ValueError(f"unknown massive-dim cleaning mode {mode!r}; use one of {get_args(CleanMode)}")
