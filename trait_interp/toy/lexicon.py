"""The toy world's planted vocabulary and the oracle trait score it defines.

A lexicon lists, per trait, the words the toy corpus uses when a scenario expresses the trait
(``trait``) and when it expresses the opposite (``contrast``). The same file seeds the corpus
(``trait_interp.toy.world``) and scores answers (``lexicon_backend``), so the judge knows the
planted truth exactly. It is the ground truth of the toy world only: real text is judged by an LLM.

Trait score of a text, with ``t`` trait words and ``c`` contrast words in it (whole words, any
case): ``100 * (t + 1) / (t + c + 2)``, the share of trait words with one pseudo-count on each
side. No planted word at all gives 50 (no evidence); one trait word 66.7, one contrast word 33.3;
three trait words and nothing else 80. Mixed texts land in between.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trait_interp.core.errors import UserInputError

_WORD = re.compile(r"[a-z]+")
_VALID = re.compile(r"^[a-z]+$")


@dataclass(frozen=True)
class Lexicon:
    """One trait's planted words."""

    trait: tuple[str, ...]
    contrast: tuple[str, ...]

    def words(self, side: str) -> tuple[str, ...]:
        """``trait`` or ``contrast`` words."""
        if side not in ("trait", "contrast"):
            raise ValueError(f"side must be 'trait' or 'contrast', got {side!r}")
        return self.trait if side == "trait" else self.contrast

    def digest(self) -> str:
        """A short content hash: part of the lexicon judge's identity, hence of every cache key."""
        canonical = json.dumps({"trait": list(self.trait), "contrast": list(self.contrast)}, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def counts(self, text: str) -> tuple[int, int]:
        """(trait words, contrast words) in ``text``, as whole lowercase words."""
        trait, contrast = set(self.trait), set(self.contrast)
        words = _WORD.findall(text.lower())
        return sum(w in trait for w in words), sum(w in contrast for w in words)

    def score(self, text: str) -> float:
        """``100 * (t + 1) / (t + c + 2)``: see the module docstring."""
        t, c = self.counts(text)
        return 100.0 * (t + 1) / (t + c + 2)


def load_lexicons(path: Path) -> dict[str, Lexicon]:
    """Every trait's lexicon from ``{"traits": {"category/trait": {"trait": [...], "contrast": [...]}}}``."""
    from trait_interp.core.io import read_json

    path = Path(path)
    data = read_json(path)
    traits = data.get("traits") if isinstance(data, Mapping) else None
    if not isinstance(traits, Mapping) or not traits:
        raise UserInputError(f'{path}: expected {{"traits": {{"category/trait": {{"trait": [...], "contrast": [...]}}}}}}')
    lexicons = {name: _lexicon(path, name, entry) for name, entry in traits.items()}
    for name, lexicon in lexicons.items():
        for other, other_lexicon in lexicons.items():
            shared = set(lexicon.trait + lexicon.contrast) & set(other_lexicon.trait + other_lexicon.contrast)
            if other != name and shared:
                raise UserInputError(
                    f"{path}: traits {name} and {other} share the words {', '.join(sorted(shared))}; "
                    "each planted word must belong to one trait"
                )
    return lexicons


def lexicon_for(path: Path, trait: str) -> Lexicon:
    """The lexicon of ``trait``; a trait without one is an error naming the file and the fix."""
    lexicons = load_lexicons(path)
    if trait not in lexicons:
        raise UserInputError(
            f"{path}: no lexicon for trait '{trait}' (has: {', '.join(sorted(lexicons))}); to try a real trait on "
            "the toy, set vetting.enabled: false (the quickest fix: every response is kept, nothing is judged); "
            "otherwise add its trait and contrast words here, or judge it with an LLM (judge.backend: local or openai)"
        )
    return lexicons[trait]


def _lexicon(path: Path, name: str, entry: object) -> Lexicon:
    where = f"{path}: traits.{name}"
    if not isinstance(entry, Mapping) or set(entry) != {"trait", "contrast"}:
        raise UserInputError(f'{where}: expected exactly the keys "trait" and "contrast" (lists of words)')
    sides: dict[str, tuple[str, ...]] = {}
    for side in ("trait", "contrast"):
        words = entry[side]
        if not isinstance(words, list) or not words:
            raise UserInputError(f"{where}.{side}: expected a non-empty list of words")
        bad = [w for w in words if not isinstance(w, str) or not _VALID.match(w)]
        if bad:
            raise UserInputError(f"{where}.{side}: {bad[0]!r} is not a lowercase word of letters a-z; fix or remove it")
        if len(set(words)) != len(words):
            raise UserInputError(f"{where}.{side}: a word is listed twice; list each word once")
        sides[side] = tuple(words)
    both = set(sides["trait"]) & set(sides["contrast"])
    if both:
        raise UserInputError(f"{where}: {', '.join(sorted(both))} is both a trait and a contrast word; keep it on one side")
    return Lexicon(sides["trait"], sides["contrast"])
