"""Logprob-weighted 0-100 scores from a judge's first-token top logprobs.

The judge answers with one token; instead of reading that token we take the expectation over
the integer tokens among its top alternatives. This is smoother than the argmax and lets us say
"no answer" (None) when the judge puts too little probability on numbers at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

TRAIT_MIN_MASS = 0.25
"""Minimum total probability on in-range integer tokens for a trait / vetting / relevance score."""

COHERENCE_MIN_MASS = 0.1
"""Coherence is answered more hesitantly by judges; the reference accepts a lower mass."""


def aggregate_logprob_score(
    top_logprobs: Mapping[str, float], min_mass: float, lo: int = 0, hi: int = 100
) -> float | None:
    """Probability-weighted mean of the integer tokens in ``[lo, hi]``; None below ``min_mass``.

    ``top_logprobs`` maps token text to its natural-log probability. A token counts when
    ``token.strip()`` is made of ASCII digits only (so "7", " 7" and "07" all read as 7, while
    "-3", "7.5", "seven" are ignored). Probabilities of tokens that read as the same integer add.
    """
    mass = 0.0
    weighted = 0.0
    for token, logprob in top_logprobs.items():
        text = token.strip()
        if not (text.isascii() and text.isdigit()):
            continue
        value = int(text)
        if not lo <= value <= hi:
            continue
        p = math.exp(logprob)
        mass += p
        weighted += value * p
    if mass <= 0.0 or mass < min_mass:
        return None
    return weighted / mass
