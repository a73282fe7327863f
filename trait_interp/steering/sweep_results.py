"""A judged sweep as tables: every answer, one row per configuration, and the best coherent configurations.

``effect`` is the trait delta (configuration minus unsteered baseline) in the trait's steering
direction: ``delta`` for ``direction: positive``, ``-delta`` for ``negative``; "best" always means
the largest effect among *coherent* configurations (mean coherence >= ``min_coherence``), ties to
the smaller |ratio|, then single layers before windows, then the lower layer.

The composite is AxBench's harmonic mean, per answer: of the trait score in the steering direction
(``trait / 100``, or ``1 - trait / 100`` for a negative direction), coherence / 100 and, when the
judge scored it, relevance / 100; 0 when any of them is 0, None when the trait or coherence is
unscored. A configuration's composite is the mean over its scored answers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from trait_interp.core.config import from_mapping
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import read_json, write_json
from trait_interp.steering.coefficient_search import Direction, sign_of

if TYPE_CHECKING:  # reading the tables needs neither torch nor the judge (the analyses and the report)
    from trait_interp.judge.judge import SteeringJudgement
    from trait_interp.steering.sweep import SweepConfig, SweepPlan

BASELINE = 0  # the ``config`` id of the unsteered answers; configurations are 1..N in plan order


def composite_score(trait: float | None, coherence: float | None, relevance: float | None,
                    direction: Direction) -> float | None:
    """AxBench-style harmonic mean of the 0-1 scaled scores (see the module docstring)."""
    if trait is None or coherence is None:
        return None
    toward = trait / 100.0 if direction != "negative" else 1.0 - trait / 100.0
    parts = [toward, coherence / 100.0] + ([relevance / 100.0] if relevance is not None else [])
    if any(p <= 0 for p in parts):
        return 0.0
    return len(parts) / sum(1.0 / p for p in parts)


def _mean(values: Sequence[float | None]) -> float | None:
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _kind(config: SweepConfig | None) -> str:
    return "baseline" if config is None else ("window" if config.is_window else "layer")


def response_rows(
    trait: str,
    plan: SweepPlan,
    coefficients: Sequence[float],
    questions: Sequence[str],
    answers: Sequence[Sequence[str]],
    ids: Sequence[Sequence[Sequence[int]]],
    judged: Sequence[Sequence[SteeringJudgement]],
    direction: Direction,
) -> list[dict[str, Any]]:
    """``schemas.sweep.SweepResponses`` rows. Index 0 of ``answers``/``ids``/``judged`` is the baseline."""
    configs: list[SweepConfig | None] = [None, *plan.configs]
    rows = []
    for index, config in enumerate(configs):
        for q, question in enumerate(questions):
            j = judged[index][q]
            rows.append({
                "trait": trait,
                "config": index,
                "kind": _kind(config),
                "method": config.method if config else "none",
                "site": plan.site,
                "layers": config.label if config else "",
                "ratio": config.ratio if config else 0.0,
                "coefficient": coefficients[index - 1] if config else 0.0,
                "question_index": q,
                "question": question,
                "response": answers[index][q],
                "response_ids": [int(t) for t in ids[index][q]],
                "trait_score": j.trait,
                "coherence": j.coherence,
                "relevance": j.relevance,
                "composite": _rounded(composite_score(j.trait, j.coherence, j.relevance, direction)),
            })
    return rows


def result_rows(
    trait: str,
    plan: SweepPlan,
    coefficients: Sequence[float],
    judged: Sequence[Sequence[SteeringJudgement]],
    side_effects: Sequence[float],
    direction: Direction,
    min_coherence: float,
) -> list[dict[str, Any]]:
    """``schemas.sweep.SweepResults`` rows: one per configuration, with the baseline's means beside it."""
    baseline_trait = _mean([j.trait for j in judged[BASELINE]])
    baseline_coherence = _mean([j.coherence for j in judged[BASELINE]])
    sign = sign_of(direction)
    rows = []
    for index, config in enumerate(plan.configs, start=1):
        answers = judged[index]
        trait_mean = _mean([j.trait for j in answers])
        coherence_mean = _mean([j.coherence for j in answers])
        delta = None if trait_mean is None or baseline_trait is None else trait_mean - baseline_trait
        rows.append({
            "trait": trait,
            "config": index,
            "kind": _kind(config),
            "method": config.method,
            "site": plan.site,
            "layers": config.label,
            "first_layer": config.layers[0],
            "last_layer": config.layers[-1],
            "ratio": config.ratio,
            "coefficient": coefficients[index - 1],
            "trait_mean": trait_mean,
            "coherence_mean": coherence_mean,
            "relevance_mean": _mean([j.relevance for j in answers]),
            "composite": _rounded(_mean([composite_score(j.trait, j.coherence, j.relevance, direction) for j in answers])),
            "baseline_trait_mean": baseline_trait,
            "baseline_coherence_mean": baseline_coherence,
            "delta": delta,
            "effect": None if delta is None else sign * delta,
            "side_effect": round(side_effects[index - 1], 6),  # float32 sums: rounded, so reruns give the same bytes
            "coherent": coherence_mean is not None and coherence_mean >= min_coherence,
            "n": len(answers),
            "n_scored": sum(j.trait is not None and j.coherence is not None for j in answers),
        })
    return rows


def ranked_coherent(results: pd.DataFrame) -> pd.DataFrame:
    """Coherent rows with an effect, best first (largest effect, smaller |ratio|, layer before window, lower layer)."""
    usable = results[results["coherent"].astype(bool) & results["effect"].notna()]
    key = usable.assign(_effect=-usable["effect"].astype(float), _ratio=usable["ratio"].abs(),
                        _window=usable["kind"] == "window")
    ordered = key.sort_values(["_effect", "_ratio", "_window", "first_layer", "last_layer"], kind="stable")
    return usable.loc[ordered.index]


def best_per_method(results: pd.DataFrame) -> dict[str, dict[str, Any] | None]:
    """``{method: its best coherent configuration (a row as a dict) or None}``, windows included."""
    out: dict[str, dict[str, Any] | None] = {}
    for method in dict.fromkeys(results["method"]):
        ranked = ranked_coherent(results[results["method"] == method])
        out[str(method)] = None if ranked.empty else ranked.iloc[0].to_dict()
    return out


def best_by_layer(results: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per single layer of ``method``: its best coherent configuration; NaN effect where none is coherent.

    Columns ``layer``, ``effect``, ``delta``, ``ratio``, ``coherence_mean``; every swept layer once.
    """
    singles = results[(results["method"] == method) & (results["kind"] == "layer")]
    rows = []
    for layer, group in singles.groupby("first_layer", sort=True):
        ranked = ranked_coherent(group)
        best = ranked.iloc[0] if not ranked.empty else None
        rows.append({
            "layer": int(layer),
            "effect": math.nan if best is None else float(best["effect"]),
            "delta": math.nan if best is None else float(best["delta"]),
            "ratio": math.nan if best is None else float(best["ratio"]),
            "coherence_mean": math.nan if best is None else float(best["coherence_mean"]),
        })
    return pd.DataFrame(rows, columns=["layer", "effect", "delta", "ratio", "coherence_mean"])


# --------------------------------------------------------------------------- best_layers.json


@dataclass(frozen=True)
class MethodBestLayer:
    method: str
    layer: int | None  # None: no single-layer configuration of this method was coherent


@dataclass(frozen=True)
class SweepBestLayers:
    """The sweep's best coherent single layer per method (what ``steering.best_from: sweep`` reads).

    Only the layers, so the file (a dependency of steering_eval) changes only when one of them does.
    """

    trait: str
    site: str
    min_coherence: float
    methods: tuple[MethodBestLayer, ...]

    def layer_for(self, method: str, site: str, where: str) -> int:
        if site != self.site:
            raise UserInputError(f"{where}: the sweep steered site '{self.site}', not '{site}'; set sweep.site to "
                                 f"'{site}' or steering.best_from: extraction")
        found = {m.method: m.layer for m in self.methods}
        if method not in found:
            raise UserInputError(f"{where}: the sweep has no method '{method}' ({', '.join(found)}); add it to "
                                 "sweep.methods or set steering.best_from: extraction")
        layer = found[method]
        if layer is None:
            raise UserInputError(f"{where}: no single-layer {method} configuration of the {self.trait} sweep reached "
                                 f"min_coherence {self.min_coherence:g}; add smaller sweep.ratios or set "
                                 "steering.best_from: extraction")
        return layer


def best_layer(by_layer: pd.DataFrame) -> pd.Series | None:
    """The best row of a ``best_by_layer`` table (largest effect, smaller |ratio|, lower layer); None if none."""
    usable = by_layer[by_layer["effect"].notna()]
    if usable.empty:
        return None
    key = usable.assign(_effect=-usable["effect"], _ratio=usable["ratio"].abs())
    return usable.loc[key.sort_values(["_effect", "_ratio", "layer"], kind="stable").index[0]]


def best_layers_of(trait: str, results: pd.DataFrame, site: str, min_coherence: float,
                   methods: Sequence[str]) -> SweepBestLayers:
    entries = []
    for method in methods:
        best = best_layer(best_by_layer(results, method))
        entries.append(MethodBestLayer(method, None if best is None else int(best["layer"])))
    return SweepBestLayers(trait, site, float(min_coherence), tuple(entries))


def write_best_layers(path: Path, record: SweepBestLayers) -> None:
    data = asdict(record)
    from_mapping(SweepBestLayers, data, str(path))
    write_json(path, data)


def read_best_layers(path: Path) -> SweepBestLayers:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no sweep record; run the trait's steering_sweep first (dvc repro)")
    try:
        return from_mapping(SweepBestLayers, read_json(path), str(path))
    except UserInputError as err:
        raise UserInputError(f"{err}; re-run the trait's steering_sweep") from None
