"""Two-trait decomposition: which share of responses sits in each quadrant of two thresholds.

A response is "high" on a trait when its mean projection is strictly above the threshold (the
same ``>`` rule as ``metrics.balanced_accuracy``). The natural thresholds are each vector's
train-set midpoint, so "high" means "closer to the positive class mean" as the vector was fitted.
Caveat: the midpoint is on the scale of the pooled extraction activations (e.g. the mean of the
first response tokens, uncleaned); per-response means at inference may sit on a shifted scale
(other position pooling, massive-dim cleaning), so read quadrant shares as relative, not absolute.

Layers: ``layer`` is where both traits are read; give ``layer_y`` too to read trait_y at another
layer (traits projected at their own layers, ``layer: best``; the stage pairs layers by
``trait_interp.analyses.pairing.layer_pairs``). The quadrant table then has ``layer_x`` and
``layer_y`` columns in place of ``layer``.
"""

from __future__ import annotations

import pandas as pd

from trait_interp.core.metrics import Scores, midpoint_threshold

QUADRANTS = ("high_x/high_y", "high_x/low_y", "low_x/high_y", "low_x/low_y")


def midpoint_from_train(pos_proj: Scores, neg_proj: Scores) -> float:
    """Threshold halfway between the train positive and negative mean projections."""
    return midpoint_threshold(pos_proj, neg_proj)


def assign_quadrants(
    means_df: pd.DataFrame,
    trait_x: str,
    trait_y: str,
    threshold_x: float,
    threshold_y: float,
    layer: int,
    method: str,
    site: str,
    layer_y: int | None = None,
) -> pd.DataFrame:
    """Per prompt with a mean for both traits: prompt_id, x, y, quadrant.

    x is trait_x at ``layer``; y is trait_y at ``layer_y`` (default: ``layer`` too).
    """
    if trait_x == trait_y:
        raise ValueError(f"trait_x and trait_y must differ; both are {trait_x!r}")
    layer_y = layer if layer_y is None else layer_y
    rows = means_df[(means_df["method"] == method) & (means_df["site"] == site)]
    sides = []
    for trait, at in ((trait_x, layer), (trait_y, layer_y)):
        side = rows[(rows["layer"] == at) & (rows["trait"] == trait)]
        if side.empty:
            raise ValueError(f"no response means for trait {trait!r} at layer {at}, {method}, {site}")
        sides.append(side.set_index("prompt_id")["mean_projection"].rename(trait))
    both = pd.concat(sides, axis=1).sort_index().dropna()
    x, y = both[trait_x], both[trait_y]
    quadrant = x.gt(threshold_x).map({True: "high_x", False: "low_x"}) + "/" + y.gt(threshold_y).map(
        {True: "high_y", False: "low_y"}
    )
    return pd.DataFrame(
        {"prompt_id": both.index.astype(str), "x": x.to_numpy(), "y": y.to_numpy(), "quadrant": quadrant.to_numpy()}
    )


def quadrants(
    means_df: pd.DataFrame,
    trait_x: str,
    trait_y: str,
    threshold_x: float,
    threshold_y: float,
    layer: int,
    method: str,
    site: str,
    layer_y: int | None = None,
) -> pd.DataFrame:
    """All four quadrants (zeros included), in a fixed order: count and share of responses.

    Columns: trait_x, trait_y, layer, method, site, threshold_x, threshold_y, quadrant, count, share;
    with ``layer_y`` given, layer_x (= ``layer``) and layer_y in place of layer.
    Raises ValueError when no prompt has a mean for both traits.
    """
    assigned = assign_quadrants(means_df, trait_x, trait_y, threshold_x, threshold_y, layer, method, site, layer_y)
    if assigned.empty:
        at = f"layer {layer}" if layer_y is None else f"layers {layer} and {layer_y}"
        raise ValueError(f"no prompt has response means for both {trait_x!r} and {trait_y!r} ({at})")
    counts = assigned["quadrant"].value_counts().reindex(list(QUADRANTS), fill_value=0)
    total = int(counts.sum())
    layers = {"layer": layer} if layer_y is None else {"layer_x": layer, "layer_y": layer_y}
    return pd.DataFrame(
        {
            "trait_x": trait_x,
            "trait_y": trait_y,
            **layers,
            "method": method,
            "site": site,
            "threshold_x": float(threshold_x),
            "threshold_y": float(threshold_y),
            "quadrant": list(QUADRANTS),
            "count": counts.to_numpy(dtype=int),
            "share": counts.to_numpy(dtype=float) / total,
        }
    )
