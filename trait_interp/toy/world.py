"""The toy world: a seeded generator of the corpus the toy models are trained on, with planted traits.

For each trait, scenario templates (plain text, for the base model) and question templates
(chat turns, for the chat model) are filled from slot lists; a *trait-side* text is filled from
the trait's cue slots and continues with words from the trait's lexicon, a *contrast-side* text
from the contrast cues, continuing with contrast words. So in this world a refusal scenario (a
request to forge, steal, spy ...) is followed by "declined, refused ...", and its contrast (a
request to draft, check, plan ...) by "helped, gladly ...". Neutral questions are answered with
filler text that holds no planted word. Which words express which trait is therefore known
exactly: the lexicon judge scores with the same lexicon.

Everything is drawn from one ``random.Random(seed)``, in a fixed order: the same files and seed
give the same corpus.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trait_interp.core.errors import UserInputError
from trait_interp.toy.lexicon import Lexicon

SIDES = ("trait", "contrast")
CUT = "|"
"""In a scenario template, the text may be cut (and continued) at any word boundary after this mark."""
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class TraitTemplates:
    """One trait's templates and slots; a side's slots win over ``shared_slots``."""

    scenarios: tuple[str, ...]
    questions: tuple[str, ...]
    shared_slots: Mapping[str, tuple[str, ...]]
    trait_slots: Mapping[str, tuple[str, ...]]
    contrast_slots: Mapping[str, tuple[str, ...]]

    def slots(self, side: str, world_slots: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        own = self.trait_slots if side == "trait" else self.contrast_slots
        return {**world_slots, **self.shared_slots, **own}


@dataclass(frozen=True)
class World:
    continuations: tuple[str, ...]  # {w} = one lexicon word of the side
    slots: Mapping[str, tuple[str, ...]]
    traits: Mapping[str, TraitTemplates]
    neutral_questions: tuple[str, ...]
    neutral_slots: Mapping[str, tuple[str, ...]]
    neutral_answers: tuple[str, ...]


@dataclass(frozen=True)
class Corpus:
    """Base-model texts as (prefix, continuation), prefix "" for filler; chat turns as (question, answer).

    The continuation of a planted text is what carries the trait; the prefix is the scenario.
    """

    texts: tuple[tuple[str, str], ...]
    chats: tuple[tuple[str, str], ...]


MAX_NESTING = 4


def fill(template: str, slots: Mapping[str, Sequence[str]], rng: random.Random, where: str) -> str:
    """Replace every ``{slot}`` with a random choice from ``slots[slot]`` (each occurrence drawn anew).

    A chosen value may hold slots itself (e.g. ``told {him} that``); they are filled in turn, up to
    ``MAX_NESTING`` levels.
    """

    def choose(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in slots or not slots[name]:
            raise UserInputError(f"{where}: template {template!r} uses the slot {{{name}}}, which has no values; add it")
        return rng.choice(list(slots[name]))

    text = template
    for _ in range(MAX_NESTING):
        if not _SLOT.search(text):
            return text
        text = _SLOT.sub(choose, text)
    raise UserInputError(f"{where}: template {template!r} nests slots more than {MAX_NESTING} deep; flatten its slots")


def cut(scenario: str, rng: random.Random) -> str:
    """The scenario up to a random word boundary after its cut mark (the mark removed), or whole without one.

    Real prompts stop anywhere ("... your application has been"); cutting teaches the model that
    the planted words follow a trait scenario wherever it stops, not only after a fixed ending.
    """
    if CUT not in scenario:
        return scenario
    head, tail = scenario.split(CUT, 1)
    words = tail.split()
    keep = rng.randint(0, len(words))
    return " ".join([head.rstrip(), *words[:keep]]).strip()


def continuation(world: World, words: Sequence[str], rng: random.Random) -> str:
    """A planted continuation: a ``continuations`` template with every ``{w}`` a random word of ``words``."""
    return fill(rng.choice(list(world.continuations)), {"w": words}, rng, "continuations")


def generate_corpus(
    world: World,
    lexicons: Mapping[str, Lexicon],
    filler: Sequence[str],
    per_side: int,
    seed: int,
    where: str = "world",
) -> Corpus:
    """``per_side`` scenarios and ``per_side`` questions for each side of each trait, plus neutral turns.

    Base texts: every scenario (cut at a random word after its ``|`` mark) with its planted
    continuation, and the ``filler`` lines. Chat turns: every question with its planted answer, and
    ``per_side`` neutral questions with a neutral answer. Filler lines holding a planted word are
    left out, so planted words appear only where they are planted. Traits without a lexicon are an
    error.
    """
    if per_side < 1:
        raise ValueError(f"per_side must be >= 1, got {per_side}")
    check_unplanted(world, lexicons, where)
    filler = unplanted(filler, lexicons)
    if not filler:
        raise UserInputError(f"{where}: the toy corpus needs filler lines (neutral text without planted words)")
    rng = random.Random(seed)
    texts: list[tuple[str, str]] = []
    chats: list[tuple[str, str]] = []
    for name in sorted(world.traits):
        if name not in lexicons:
            raise UserInputError(f"{where}: trait '{name}' has templates but no lexicon; add its words to the lexicon")
        templates = world.traits[name]
        for side in SIDES:
            slots = templates.slots(side, world.slots)
            words = lexicons[name].words(side)
            for _ in range(per_side):
                scenario = cut(fill(rng.choice(list(templates.scenarios)), slots, rng, f"{where}: {name}"), rng)
                texts.append((scenario, continuation(world, words, rng)))
                question = fill(rng.choice(list(templates.questions)), slots, rng, f"{where}: {name}")
                chats.append((question, continuation(world, words, rng)))
    neutral_slots = {**world.slots, **world.neutral_slots}
    for _ in range(per_side):
        question = fill(rng.choice(list(world.neutral_questions)), neutral_slots, rng, f"{where}: neutral")
        chats.append((question, rng.choice(list(world.neutral_answers))))
    texts.extend(("", line) for line in filler)
    rng.shuffle(texts)
    rng.shuffle(chats)
    return Corpus(tuple(texts), tuple(chats))


def unplanted(lines: Sequence[str], lexicons: Mapping[str, Lexicon]) -> list[str]:
    """The lines that hold no planted word of any trait."""
    planted = {word for lexicon in lexicons.values() for word in lexicon.trait + lexicon.contrast}
    return [line for line in lines if not planted & set(re.findall(r"[a-z]+", line.lower()))]


def check_unplanted(world: World, lexicons: Mapping[str, Lexicon], where: str) -> None:
    """No template or slot value may hold a planted word: only continuations carry them."""
    planted = {word: name for name, lexicon in lexicons.items() for word in lexicon.trait + lexicon.contrast}
    strings = [*world.neutral_questions, *world.neutral_answers, *(v for vs in [*world.slots.values(), *world.neutral_slots.values()] for v in vs)]
    for templates in world.traits.values():
        strings += [*templates.scenarios, *templates.questions]
        for slots in (templates.shared_slots, templates.trait_slots, templates.contrast_slots):
            strings += [v for values in slots.values() for v in values]
    for text in strings:
        found = [w for w in re.findall(r"[a-z]+", text.lower()) if w in planted]
        if found:
            raise UserInputError(
                f"{where}: {text!r} holds the planted word '{found[0]}' ({planted[found[0]]}); "
                "only continuations may carry planted words, so reword it"
            )


def load_world(path: Path) -> World:
    """Parse the world templates (see ``datasets/toy/world.json``); a malformed file is a one-line error."""
    from trait_interp.core.io import read_json

    path = Path(path)
    data = read_json(path)
    if not isinstance(data, Mapping):
        raise UserInputError(f"{path}: expected a JSON object")
    required = ("continuations", "slots", "traits", "neutral_questions", "neutral_slots", "neutral_answers")
    missing = [key for key in required if key not in data]
    if missing:
        raise UserInputError(f"{path}: missing key(s) {', '.join(missing)}; see datasets/toy/world.json")
    continuations = _strings(data["continuations"], f"{path}: continuations")
    if not all("{w}" in c for c in continuations):
        raise UserInputError(f"{path}: continuations: every template needs at least one {{w}} (a planted word)")
    traits: dict[str, TraitTemplates] = {}
    if not isinstance(data["traits"], Mapping) or not data["traits"]:
        raise UserInputError(f"{path}: traits: expected an object of category/trait -> templates")
    for name, entry in data["traits"].items():
        where = f"{path}: traits.{name}"
        keys = {"scenarios", "questions", "shared_slots", "trait_slots", "contrast_slots"}
        if not isinstance(entry, Mapping) or set(entry) != keys:
            raise UserInputError(f"{where}: expected exactly the keys {', '.join(sorted(keys))}")
        traits[name] = TraitTemplates(
            scenarios=_strings(entry["scenarios"], f"{where}.scenarios"),
            questions=_strings(entry["questions"], f"{where}.questions"),
            shared_slots=_slots(entry["shared_slots"], f"{where}.shared_slots"),
            trait_slots=_slots(entry["trait_slots"], f"{where}.trait_slots"),
            contrast_slots=_slots(entry["contrast_slots"], f"{where}.contrast_slots"),
        )
    return World(
        continuations=continuations,
        slots=_slots(data["slots"], f"{path}: slots"),
        traits=traits,
        neutral_questions=_strings(data["neutral_questions"], f"{path}: neutral_questions"),
        neutral_slots=_slots(data["neutral_slots"], f"{path}: neutral_slots"),
        neutral_answers=_strings(data["neutral_answers"], f"{path}: neutral_answers"),
    )


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise UserInputError(f"{where}: expected a non-empty list of non-empty strings")
    return tuple(value)


def _slots(value: object, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise UserInputError(f"{where}: expected an object of slot name -> list of values")
    return {str(name): _strings(values, f"{where}.{name}") for name, values in value.items()}
