"""Cross-trait evaluation: how well each trait's vector separates every other trait's held-out data.

Threshold choice. By default (``refit=False``) a source vector keeps its *own* decision threshold,
the midpoint of its own train set's class means: a fair transfer test, since nothing is fitted on
the target trait, and the diagonal equals the vector's own held-out accuracy. Its weakness is
scale: if the target's activations sit elsewhere along the direction (another trait's prompts
shift the mean), a well-aligned vector can score ~0.5 only because the threshold is off. With
``refit=True`` the threshold is the midpoint of the *target's* train set projected on the source
vector — still never fitted on the held-out rows scored — which measures whether the direction
separates the target at all, independent of offset. ``cohens_d`` (signed, positive minus negative,
on the held-out rows) is threshold-free, and a negative d / accuracy below 0.5 means the vector
reads the target trait with the opposite sign.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from trait_interp.core.metrics import (
    balanced_accuracy,
    cohens_d,
    midpoint_threshold,
    scalar_projection,
)

Labelled = tuple[torch.Tensor, object]  # (acts [n, n_layers, hidden], polarity per row)
NAN = float("nan")


def polarity_mask(labels: object, n: int) -> np.ndarray:
    """Boolean "is positive" per row, from bools/0-1 or "positive"/"negative" strings."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.shape != (n,):
        raise ValueError(f"expected {n} polarity labels; got shape {array.shape}")
    if array.dtype.kind in ("U", "S", "O"):
        text = array.astype(str)
        unknown = sorted(set(text) - {"positive", "negative"})
        if unknown:
            raise ValueError(f"polarity labels must be 'positive' or 'negative'; got {unknown}")
        return text == "positive"
    return array.astype(bool)


def _split(data: Labelled, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    acts, labels = data
    acts = torch.as_tensor(acts)
    if acts.ndim != 3:
        raise ValueError(f"{name}: activations must be [n, n_layers, hidden]; got {tuple(acts.shape)}")
    mask = torch.from_numpy(polarity_mask(labels, acts.shape[0]))
    return acts[mask], acts[~mask]  # positive rows, negative rows


def train_midpoints(train: Labelled, vectors: torch.Tensor) -> torch.Tensor:
    """Per layer row: midpoint of the train positive and negative mean projections on ``vectors[row]``."""
    pos, neg = _split(train, "train")
    if pos.shape[1] != vectors.shape[0]:
        raise ValueError(f"train activations have {pos.shape[1]} layers; vectors have {vectors.shape[0]}")
    return torch.tensor(
        [
            midpoint_threshold(
                scalar_projection(pos[:, row], vectors[row]), scalar_projection(neg[:, row], vectors[row])
            )
            for row in range(vectors.shape[0])
        ],
        dtype=torch.float64,
    )


def cross_accuracy(
    vectors: Mapping[str, torch.Tensor],
    heldout: Mapping[str, Labelled],
    layers: Sequence[int],
    thresholds: Mapping[str, torch.Tensor] | None = None,
    train: Mapping[str, Labelled] | None = None,
    refit: bool = False,
) -> pd.DataFrame:
    """Balanced accuracy and signed Cohen's d of every source vector on every target's held-out data.

    vectors: trait -> ``[n_layers, hidden]`` (rows = ``layers``, the layer index of each row);
    heldout / train: trait -> (acts ``[n, n_layers, hidden]`` at the same site and rows, polarity).
    Thresholds when ``refit`` is False: ``thresholds[source]`` (``[n_layers]``, e.g. recomputed by
    ``train_midpoints``), or, when not given, computed from ``train[source]``. When ``refit`` is
    True: the midpoint of ``train[target]`` on the source vector (``train`` required).

    Columns: source_trait, target_trait, layer, threshold_from ("source" | "target"), threshold,
    accuracy, cohens_d (NaN when a class has < 2 held-out rows), n_positive, n_negative.
    """
    layer_ids = [int(x) for x in layers]
    for trait, vec in vectors.items():
        if vec.ndim != 2 or vec.shape[0] != len(layer_ids):
            raise ValueError(f"vectors for {trait!r} are {tuple(vec.shape)}; expected [{len(layer_ids)}, hidden]")
    if refit or thresholds is None:
        needed = set(heldout) if refit else set(vectors)
        missing = sorted(needed - set(train or {}))
        if missing:
            raise ValueError(f"train activations needed for thresholds of: {', '.join(missing)}")
    split = {trait: _split(data, f"heldout[{trait!r}]") for trait, data in heldout.items()}
    records = []
    for source, vec in vectors.items():
        vec = torch.as_tensor(vec).float()
        own = None
        if not refit:
            own = thresholds[source] if thresholds is not None and source in thresholds else None
            if own is None:
                if train is None or source not in train:
                    raise ValueError(f"no threshold and no train activations for {source!r}")
                own = train_midpoints(train[source], vec)
            own = torch.as_tensor(own, dtype=torch.float64).reshape(-1)
            if own.shape[0] != len(layer_ids):
                raise ValueError(f"thresholds for {source!r} have {own.shape[0]} entries; expected {len(layer_ids)}")
        for target, (pos, neg) in split.items():
            if pos.shape[1:] != vec.shape:
                raise ValueError(
                    f"held-out {target!r} acts are {tuple(pos.shape[1:])} per row; vectors are {tuple(vec.shape)}"
                )
            if pos.shape[0] == 0 or neg.shape[0] == 0:
                raise ValueError(f"held-out {target!r} needs positive and negative rows")
            limits = own if own is not None else train_midpoints(train[target], vec)
            for row, layer in enumerate(layer_ids):
                pos_s = scalar_projection(pos[:, row], vec[row])
                neg_s = scalar_projection(neg[:, row], vec[row])
                threshold = float(limits[row])
                d = cohens_d(pos_s, neg_s) if min(pos_s.shape[0], neg_s.shape[0]) >= 2 else NAN
                records.append(
                    {
                        "source_trait": source,
                        "target_trait": target,
                        "layer": layer,
                        "threshold_from": "target" if refit else "source",
                        "threshold": threshold,
                        "accuracy": balanced_accuracy(pos_s, neg_s, threshold),
                        "cohens_d": d,
                        "n_positive": int(pos_s.shape[0]),
                        "n_negative": int(neg_s.shape[0]),
                    }
                )
    columns = ["source_trait", "target_trait", "layer", "threshold_from", "threshold", "accuracy",
               "cohens_d", "n_positive", "n_negative"]
    return pd.DataFrame.from_records(records, columns=columns)
