"""Response vetting verdicts: which extraction responses express their side of the trait.

A positive response passes with score >= ``pos_threshold``, a negative one with score <=
``neg_threshold``; a missing score (judge gave none) fails. With paired filtering (the default,
unlike the reference system's code) a pair is kept only if both its sides pass, so the positive
and negative sets stay matched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from trait_interp.core.errors import UserInputError


@dataclass(frozen=True)
class VettingSettings:
    """``vetting:`` in params."""

    enabled: bool = True
    pos_threshold: float = 60.0
    neg_threshold: float = 40.0
    paired_filter: bool = True
    min_pairs: int = 10
    response_words: int = 16  # the judge sees the first N whitespace-separated words


@dataclass(frozen=True)
class Verdicts:
    passed: list[bool]
    kept: list[bool]
    n_kept_pairs: int  # pairs with both sides kept (unpaired: min of the kept counts per side)


def passes(polarity: str, score: float | None, settings: VettingSettings) -> bool:
    if score is None:
        return False
    return score >= settings.pos_threshold if polarity == "positive" else score <= settings.neg_threshold


def verdicts(
    pair_index: Sequence[int], polarity: Sequence[str], scores: Sequence[float | None], settings: VettingSettings
) -> Verdicts:
    """Pass/keep per response. With vetting disabled everything passes and is kept."""
    if not settings.enabled:
        passed = [True] * len(scores)
    else:
        passed = [passes(pol, score, settings) for pol, score in zip(polarity, scores)]
    if settings.paired_filter:
        sides: dict[int, list[bool]] = defaultdict(list)
        for pair, ok in zip(pair_index, passed):
            sides[pair].append(ok)
        kept = [all(sides[pair]) and len(sides[pair]) == 2 for pair in pair_index]
    else:
        kept = list(passed)
    per_side = {side: sum(k for k, pol in zip(kept, polarity) if pol == side) for side in ("positive", "negative")}
    return Verdicts(passed, kept, min(per_side.values()))


def check_enough(verdict: Verdicts, settings: VettingSettings, trait: str, where: str) -> None:
    if verdict.n_kept_pairs < settings.min_pairs:
        raise UserInputError(
            f"{trait}: only {verdict.n_kept_pairs} pairs pass vetting (need >= {settings.min_pairs}); "
            f"add scenarios to the trait, loosen {where}:vetting.pos_threshold/neg_threshold, "
            "or set vetting.enabled: false"
        )
