"""Loaders for trait datasets, steering question files and monitoring prompt sets.

Accepted formats are the ones users already have (see ``../shared/upstream-datasets``):

- ``{category}/{trait}/positive.txt`` + ``negative.txt``: one scenario per line (stripped, blank
  lines dropped), line i of one pairing with line i of the other; or ``positive.jsonl`` +
  ``negative.jsonl`` (take precedence) with ``{"prompt": str, "system_prompt": str?}`` per line.
- ``definition.txt``: the judge rubric, verbatim.
- ``steering.json``: ``{"questions": [str | {"question": str}], "direction"?, "eval_prompt"?, ...}``.
- prompt sets: ``{"name", "description", "system_prompt"?, "prompts": [{"id", "text", "note"?, ...}]}``
  with int or str ids; extra keys are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trait_interp.core.errors import UserInputError
from trait_interp.core.io import read_json, read_text

Polarity = Literal["positive", "negative"]
POLARITIES: tuple[Polarity, Polarity] = ("positive", "negative")


@dataclass(frozen=True)
class Scenario:
    """One line of a scenario file: the text to complete and an optional system prompt."""

    text: str
    line: int  # 1-based line number in its file
    system_prompt: str | None = None


@dataclass(frozen=True)
class TraitScenarios:
    name: str  # "category/trait"
    positive: tuple[Scenario, ...]
    negative: tuple[Scenario, ...]
    positive_file: Path
    negative_file: Path


@dataclass(frozen=True)
class ScenarioPair:
    """Index ``pair_index`` of a trait: (positive, negative); one side is None when unpaired."""

    pair_index: int
    positive: Scenario | None
    negative: Scenario | None


@dataclass(frozen=True)
class SteeringQuestions:
    questions: tuple[str, ...]
    direction: Literal["positive", "negative"] = "positive"
    eval_prompt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prompt:
    id: int | str
    text: str
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptSet:
    name: str
    description: str
    prompts: tuple[Prompt, ...]
    system_prompt: str | None = None


def trait_dir(traits_root: Path, trait: str) -> Path:
    """Resolve ``category/trait`` under the traits root; an unknown trait is a clear error."""
    path = Path(traits_root) / trait
    if trait.count("/") != 1 or not path.is_dir():
        known = ", ".join(list_traits(traits_root)) or "none"
        raise UserInputError(
            f"unknown trait '{trait}': no folder {path}; known traits under {traits_root}: {known}"
        )
    return path


def list_traits(traits_root: Path) -> list[str]:
    """Every ``category/trait`` folder that holds scenario files (txt or jsonl)."""
    root = Path(traits_root)
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.glob("*/*")):
        if path.is_dir() and any((path / f"positive.{ext}").is_file() for ext in ("txt", "jsonl")):
            found.append(f"{path.parent.name}/{path.name}")
    return found


def load_scenarios(path: Path) -> tuple[Scenario, ...]:
    """Read one scenario file (``.txt`` or ``.jsonl``); an empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: file not found; add it with one scenario per line")
    scenarios: list[Scenario] = []
    for number, raw in enumerate(read_text(path).split("\n"), start=1):  # "\n" only: U+2028, \x0c... are text
        line = raw.strip()
        if not line:
            continue
        if path.suffix == ".jsonl":
            scenarios.append(_jsonl_scenario(path, number, line))
        else:
            scenarios.append(Scenario(text=line, line=number))
    if not scenarios:
        raise UserInputError(f"{path}: no scenarios (the file is empty); add one scenario per line")
    return tuple(scenarios)


def _jsonl_scenario(path: Path, number: int, line: str) -> Scenario:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise UserInputError(f"{path}:{number}: invalid JSON ({err.msg}); each line must be one JSON object") from None
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise UserInputError(f'{path}:{number}: expected {{"prompt": str, "system_prompt": str?}}')
    system = record.get("system_prompt")
    if system is not None and not isinstance(system, str):
        raise UserInputError(f"{path}:{number}: system_prompt must be a string")
    return Scenario(text=record["prompt"].strip(), line=number, system_prompt=system)


def load_trait(traits_root: Path, trait: str) -> TraitScenarios:
    directory = trait_dir(traits_root, trait)
    ext = "jsonl" if (directory / "positive.jsonl").is_file() else "txt"
    positive_file, negative_file = directory / f"positive.{ext}", directory / f"negative.{ext}"
    return TraitScenarios(
        name=trait,
        positive=load_scenarios(positive_file),
        negative=load_scenarios(negative_file),
        positive_file=positive_file,
        negative_file=negative_file,
    )


def pair_scenarios(trait: TraitScenarios, paired: bool) -> list[ScenarioPair]:
    """Pair line i with line i. With ``paired`` the counts must match; otherwise sides are padded."""
    n_pos, n_neg = len(trait.positive), len(trait.negative)
    if paired and n_pos != n_neg:
        raise UserInputError(
            f"{trait.positive_file} has {n_pos} scenarios but {trait.negative_file} has {n_neg}; "
            "pairing needs equal counts: fix the files or set extraction.paired: false"
        )
    return [
        ScenarioPair(
            pair_index=i,
            positive=trait.positive[i] if i < n_pos else None,
            negative=trait.negative[i] if i < n_neg else None,
        )
        for i in range(max(n_pos, n_neg))
    ]


def trait_display_name(trait: str) -> str:
    """What a judge is told the trait is called: ``behavior/refusal`` -> ``refusal``."""
    return trait.split("/")[-1].replace("_", " ")


def load_definition(traits_root: Path, trait: str) -> str:
    """The judge rubric; falls back to a one-line description when the file is absent."""
    return read_definition(trait_dir(traits_root, trait) / "definition.txt", trait)


def read_definition(path: Path, trait: str) -> str:
    """definition.txt at ``path``, or a one-line description of ``trait`` when it is absent."""
    if Path(path).is_file():
        return read_text(path).strip()
    return f"The trait '{trait_display_name(trait)}'"


def load_steering_questions(path: Path) -> SteeringQuestions:
    data = read_json(path)
    if not isinstance(data, dict) or "questions" not in data:
        raise UserInputError(f'{path}: expected an object with a "questions" list')
    raw = data["questions"]
    if not isinstance(raw, list) or not raw:
        raise UserInputError(f'{path}: "questions" must be a non-empty list')
    questions = []
    for i, item in enumerate(raw):
        if isinstance(item, dict):
            item = item.get("question")
        if not isinstance(item, str) or not item.strip():
            raise UserInputError(f'{path}: questions[{i}] must be a string or {{"question": str}}')
        questions.append(item)
    direction = data.get("direction", "positive")
    if direction not in ("positive", "negative"):
        raise UserInputError(f'{path}: "direction" must be "positive" or "negative", got {direction!r}')
    eval_prompt = data.get("eval_prompt")
    if eval_prompt is not None and not isinstance(eval_prompt, str):
        raise UserInputError(f'{path}: "eval_prompt" must be a string')
    extra = {k: v for k, v in data.items() if k not in ("questions", "direction", "eval_prompt")}
    return SteeringQuestions(tuple(questions), direction, eval_prompt, extra)


PROMPT_LISTS = ("prompts", "questions", "paragraphs")
"""The keys that hold a prompt set's prompts in the formats users already have (one per file)."""


def load_prompt_set(path: Path) -> PromptSet:
    """A prompt set in any of the formats users have, loaded unchanged.

    ``{"name"?, "description"?, "system_prompt"?, "prompts": [...]}``, the same with ``"questions"``
    or ``"paragraphs"`` instead of ``"prompts"``, or a bare list ``[...]``. Each item is
    ``{"id", "text" | "prompt", "note"?, ...extra keys kept}`` or a plain string, whose id is its
    1-based position.
    """
    data = read_json(path)
    if isinstance(data, list):
        items, key, data = data, "prompts", {}
    elif isinstance(data, dict):
        keys = [k for k in PROMPT_LISTS if k in data]
        if not keys:
            raise UserInputError(
                f'{path}: no "prompts" list (nor "questions" or "paragraphs"); add "prompts": [{{"id", "text", '
                '"note"}}, ...]'
            )
        if len(keys) > 1:
            raise UserInputError(f"{path}: both {' and '.join(repr(k) for k in keys)} hold prompts; keep one")
        key = keys[0]
        items = data[key]
    else:
        raise UserInputError(
            f'{path}: unknown prompt-set format; expected {{"name", "description", "prompts": [...]}} or a list'
        )
    if not isinstance(items, list):
        raise UserInputError(f'{path}: "{key}" must be a list')
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        prompt = _prompt(item, i, f"{path}: {key}[{i}]")
        if str(prompt.id) in seen:
            raise UserInputError(f"{path}: {key}[{i}] repeats id {prompt.id!r}; ids must be unique")
        seen.add(str(prompt.id))
        prompts.append(prompt)
    system = data.get("system_prompt")
    if system is not None and not isinstance(system, str):
        raise UserInputError(f'{path}: "system_prompt" must be a string')
    return PromptSet(
        name=str(data.get("name", Path(path).stem)),
        description=str(data.get("description", "")),
        prompts=tuple(prompts),
        system_prompt=system,
    )


def _prompt(item: object, index: int, where: str) -> Prompt:
    """One prompt-set item: an object with an id and its text, or a bare string (id = 1-based position)."""
    if isinstance(item, str):
        return Prompt(id=index + 1, text=item)
    if not isinstance(item, dict):
        raise UserInputError(f"{where} must be an object or a string")
    text = item.get("text", item.get("prompt"))
    pid = item.get("id")
    if not isinstance(text, str) or isinstance(pid, bool) or not isinstance(pid, (int, str)):
        raise UserInputError(f'{where} needs "id" (int or str) and "text" (or "prompt", a string)')
    note = item.get("note")
    extra = {k: v for k, v in item.items() if k not in ("id", "text", "prompt", "note")}
    return Prompt(id=pid, text=text, note=note if note is None else str(note), extra=extra)
