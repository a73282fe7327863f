"""Which layers two traits are compared at, when traits may have been projected at different layers.

A layer choice such as ``layer: best`` projects each trait at its own layer, so one projection table
can hold trait A only at layer 1 and trait B only at layer 3. The analyses that pair two traits
(decomposition, trait correlation) use one rule, per (method, site):

- the two traits share layers: they are compared at each shared layer, that layer for both (as with
  ``layer: 2``, a list or ``all``, where every trait has every layer); layers only one of them has
  are not paired;
- they share none: each is read at its own layers, every combination (with ``best`` one layer
  each: A@1 against B@3).

A pair of readings is (trait_a, layer_a, trait_b, layer_b). The tables say where each side was
read: a table whose pairs are all at a shared layer has one ``layer`` column (exactly as before
the rule existed); a table with any pair across layers has ``layer_a`` and ``layer_b`` (or
``layer_x`` and ``layer_y``) on every row instead, equal on the shared-layer rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import product

import pandas as pd

Reading = tuple[str, int]  # (trait, layer)


def trait_layers(df: pd.DataFrame, method: str, site: str) -> dict[str, list[int]]:
    """trait -> the sorted layers it has rows at, for one (method, site) of a projections or means table."""
    rows = df[(df["method"] == method) & (df["site"] == site)]
    pairs = rows[["trait", "layer"]].drop_duplicates()
    out: dict[str, list[int]] = {}
    for trait, layer in sorted((str(t), int(la)) for t, la in zip(pairs["trait"], pairs["layer"])):
        out.setdefault(trait, []).append(layer)
    return out


def layer_pairs(layers_a: Iterable[int], layers_b: Iterable[int]) -> list[tuple[int, int]]:
    """The (layer_a, layer_b) a pair of traits is compared at: each shared layer, else every combination."""
    a, b = sorted({int(x) for x in layers_a}), sorted({int(x) for x in layers_b})
    shared = sorted(set(a) & set(b))
    if shared:
        return [(layer, layer) for layer in shared]
    return list(product(a, b))


def reading_pairs(layers_by_trait: Mapping[str, Sequence[int]]) -> list[tuple[Reading, Reading]]:
    """Every ordered pair of readings to correlate, the diagonal included, in a fixed order.

    Two different traits are paired at ``layer_pairs`` of their layers. A reading is paired with
    itself (the diagonal) when it is paired with another trait's reading, so a layer where a trait
    was projected alone adds nothing, as before. Sorted by (layer_a, layer_b, trait_a, trait_b):
    with shared layers only, that is per layer the trait matrix in sorted order.
    """
    traits = sorted(layers_by_trait)
    found: set[tuple[Reading, Reading]] = set()
    for ta in traits:
        for tb in traits:
            if ta == tb:
                continue
            for la, lb in layer_pairs(layers_by_trait[ta], layers_by_trait[tb]):
                found.update({((ta, la), (tb, lb)), ((ta, la), (ta, la)), ((tb, lb), (tb, lb))})
    return sorted(found, key=lambda p: (p[0][1], p[1][1], p[0][0], p[1][0]))


def describe(layers_by_trait: Mapping[str, Sequence[int]]) -> str:
    """What was projected, for an error message: ``a/x at layers 1, 2; b/y at layer 3``."""
    if not layers_by_trait:
        return "no trait"
    parts = []
    for trait, layers in sorted(layers_by_trait.items()):
        listed = ", ".join(str(la) for la in sorted(layers))
        parts.append(f"{trait} at layer{'s' if len(layers) > 1 else ''} {listed}")
    return "; ".join(parts)


def one_layer_column(table: pd.DataFrame, a: str = "layer_a", b: str = "layer_b") -> pd.DataFrame:
    """The table with one ``layer`` column (in ``a``'s place) when every row has ``a == b``, else as it is."""
    if not (table[a] == table[b]).all():
        return table
    columns = ["layer" if c == a else c for c in table.columns if c != b]
    return table.rename(columns={a: "layer"})[columns]
