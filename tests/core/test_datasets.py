"""Tests for trait_interp.core.datasets: the project's datasets, the upstream ones, format variants, bad input.

The expected values are computed from the files themselves with plain ``json`` and ``str`` calls,
never from the loaders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from trait_interp.core.datasets import (
    Scenario,
    list_traits,
    load_definition,
    load_prompt_set,
    load_scenarios,
    load_steering_questions,
    load_trait,
    pair_scenarios,
    trait_dir,
)
from trait_interp.core.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]
TRAITS = REPO / "datasets" / "traits"
INFERENCE = REPO / "datasets" / "inference"
UPSTREAM = Path(__file__).resolve().parents[3] / "shared" / "upstream-datasets"


# --------------------------------------------------------------------------- independent readers


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of each non-blank line; lines end at newlines only."""
    text = path.read_bytes().decode("utf-8")
    raw = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [(i, line.strip()) for i, line in enumerate(raw, start=1) if line.strip()]


def _expected_scenarios(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, text, system_prompt) per scenario, read with plain str/json."""
    out = []
    for number, line in _lines(path):
        if path.suffix == ".jsonl":
            record = json.loads(line)
            out.append((number, record["prompt"], record.get("system_prompt")))
        else:
            out.append((number, line, None))
    return out


def _as_tuples(scenarios: tuple[Scenario, ...]) -> list[tuple[int, str, str | None]]:
    return [(s.line, s.text, s.system_prompt) for s in scenarios]


def _trait_folders(root: Path) -> list[str]:
    """category/trait folders holding a positive scenario file, found without the module."""
    return sorted(
        f"{d.parent.name}/{d.name}"
        for d in root.glob("*/*")
        if d.is_dir() and ((d / "positive.txt").is_file() or (d / "positive.jsonl").is_file())
    )


def _check_trait_unchanged(root: Path, name: str) -> tuple[int, int]:
    """Load ``name`` and compare every scenario with the file; returns (n_pos, n_neg)."""
    directory = root / name
    ext = "jsonl" if (directory / "positive.jsonl").is_file() else "txt"
    trait = load_trait(root, name)
    assert trait.name == name
    assert trait.positive_file == directory / f"positive.{ext}"
    assert trait.negative_file == directory / f"negative.{ext}"
    expected_pos = _expected_scenarios(trait.positive_file)
    expected_neg = _expected_scenarios(trait.negative_file)
    assert _as_tuples(trait.positive) == expected_pos
    assert _as_tuples(trait.negative) == expected_neg

    pairs = pair_scenarios(trait, paired=False)
    n_pos, n_neg = len(expected_pos), len(expected_neg)
    assert len(pairs) == max(n_pos, n_neg)
    for i, pair in enumerate(pairs):
        assert pair.pair_index == i
        assert pair.positive == (trait.positive[i] if i < n_pos else None)
        assert pair.negative == (trait.negative[i] if i < n_neg else None)

    if n_pos == n_neg:
        assert pair_scenarios(trait, paired=True) == pairs
    else:
        with pytest.raises(UserInputError) as err:
            pair_scenarios(trait, paired=True)
        message = str(err.value)
        assert str(trait.positive_file) in message and str(trait.negative_file) in message
        assert "extraction.paired: false" in message
    return n_pos, n_neg


def _check_steering_unchanged(path: Path) -> int:
    data = json.loads(path.read_text(encoding="utf-8"))
    got = load_steering_questions(path)
    expected = tuple(q["question"] if isinstance(q, dict) else q for q in data["questions"])
    assert got.questions == expected
    assert got.direction == data.get("direction", "positive")
    assert got.eval_prompt == data.get("eval_prompt")
    assert got.extra == {k: v for k, v in data.items() if k not in ("questions", "direction", "eval_prompt")}
    return len(got.questions)


def _check_prompt_set_unchanged(path: Path) -> None:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    got = load_prompt_set(path)
    assert got.name == data["name"]
    assert got.description == data["description"]
    assert got.system_prompt == data.get("system_prompt")
    assert len(got.prompts) == len(data["prompts"])
    for prompt, item in zip(got.prompts, data["prompts"]):
        assert prompt.id == item["id"]
        assert type(prompt.id) is type(item["id"])
        assert prompt.text == item["text"]
        assert prompt.note == item.get("note")
        assert prompt.extra == {k: v for k, v in item.items() if k not in ("id", "text", "note")}


# --------------------------------------------------------------------------- the project's datasets


PROJECT_TRAITS = _trait_folders(TRAITS)


def test_project_traits_are_listed() -> None:
    assert PROJECT_TRAITS, f"no trait folder under {TRAITS}"
    assert list_traits(TRAITS) == PROJECT_TRAITS
    configured = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["traits"]
    assert set(configured) <= set(PROJECT_TRAITS)


@pytest.mark.parametrize("name", PROJECT_TRAITS)
def test_project_trait_loads(name: str) -> None:
    n_pos, n_neg = _check_trait_unchanged(TRAITS, name)
    pairs = pair_scenarios(load_trait(TRAITS, name), paired=True)
    assert n_pos == n_neg == len(pairs)
    assert len(pairs) >= 30

    definition_file = TRAITS / name / "definition.txt"
    assert definition_file.is_file()
    definition = load_definition(TRAITS, name)
    assert definition == definition_file.read_text(encoding="utf-8").strip()
    assert definition

    steering = TRAITS / name / "steering.json"
    assert steering.is_file()
    assert _check_steering_unchanged(steering) >= 5


PROJECT_PROMPT_SETS = sorted(INFERENCE.glob("*.json"))


def test_project_has_prompt_sets() -> None:
    assert PROJECT_PROMPT_SETS


@pytest.mark.parametrize("path", PROJECT_PROMPT_SETS, ids=lambda p: p.name)
def test_project_prompt_set_loads(path: Path) -> None:
    _check_prompt_set_unchanged(path)
    assert len({str(p.id) for p in load_prompt_set(path).prompts}) == len(load_prompt_set(path).prompts)


# --------------------------------------------------------------------------- upstream compatibility


def _params(items: list[Any]) -> list[Any]:
    """Parametrize over ``items``, or one skipped case when the upstream folder is absent."""
    if UPSTREAM.is_dir():
        return items
    return [pytest.param(None, marks=pytest.mark.skip(reason=f"{UPSTREAM} is absent"))]


UPSTREAM_TRAITS = _trait_folders(UPSTREAM / "traits") if UPSTREAM.is_dir() else []
UPSTREAM_STEERING = sorted((UPSTREAM / "traits").rglob("steering.json")) if UPSTREAM.is_dir() else []
UPSTREAM_PROMPT_SETS = sorted((UPSTREAM / "inference").rglob("*.json")) if UPSTREAM.is_dir() else []


def _rel(path: Any) -> str:
    return str(path.relative_to(UPSTREAM)) if isinstance(path, Path) else str(path)


@pytest.fixture
def upstream() -> Path:
    if not UPSTREAM.is_dir():
        pytest.skip(f"{UPSTREAM} is absent")
    return UPSTREAM


def test_upstream_inventory(upstream: Path) -> None:
    """Every trait folder is discovered, in both formats, and the one unequal trait exists."""
    assert list_traits(upstream / "traits") == UPSTREAM_TRAITS
    assert len(UPSTREAM_TRAITS) == len(list((upstream / "traits").glob("*/*/positive.*")))
    formats = {("jsonl" if (upstream / "traits" / t / "positive.jsonl").is_file() else "txt") for t in UPSTREAM_TRAITS}
    assert formats == {"txt", "jsonl"}
    assert UPSTREAM_STEERING and UPSTREAM_PROMPT_SETS
    unequal = [
        t
        for t in UPSTREAM_TRAITS
        if len(load_trait(upstream / "traits", t).positive) != len(load_trait(upstream / "traits", t).negative)
    ]
    assert len(unequal) == 1, unequal


@pytest.mark.parametrize("name", _params(UPSTREAM_TRAITS))
def test_upstream_trait_unchanged(name: str) -> None:
    _check_trait_unchanged(UPSTREAM / "traits", name)
    load_definition(UPSTREAM / "traits", name)


@pytest.mark.parametrize("path", _params(UPSTREAM_STEERING), ids=_rel)
def test_upstream_steering_unchanged(path: Path) -> None:
    assert _check_steering_unchanged(path) >= 1


@pytest.mark.parametrize("path", _params(UPSTREAM_PROMPT_SETS), ids=_rel)
def test_upstream_prompt_set_unchanged(path: Path) -> None:
    _check_prompt_set_unchanged(path)


def test_upstream_rm_syco_keeps_bias_fields(upstream: Path) -> None:
    sets = sorted((upstream / "inference" / "rm_syco").glob("*.json"))
    assert sets
    for path in sets:
        raw = json.loads(path.read_text(encoding="utf-8"))["prompts"]
        for prompt, item in zip(load_prompt_set(path).prompts, raw):
            assert prompt.extra["bias_id"] == item["bias_id"]


# --------------------------------------------------------------------------- format variants


def _make_trait(root: Path, name: str, positive: str, negative: str, ext: str = "txt") -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / f"positive.{ext}").write_text(positive, encoding="utf-8")
    (directory / f"negative.{ext}").write_text(negative, encoding="utf-8")
    return directory


def test_txt_strips_and_drops_blank_lines_keeping_line_numbers(tmp_path: Path) -> None:
    _make_trait(tmp_path, "c/t", "  first  \n\n\tsecond\n   \nthird", "a\nb\nc\n")
    trait = load_trait(tmp_path, "c/t")
    assert _as_tuples(trait.positive) == [(1, "first", None), (3, "second", None), (5, "third", None)]
    assert [p.positive.text for p in pair_scenarios(trait, paired=True)] == ["first", "second", "third"]
    assert [p.negative.text for p in pair_scenarios(trait, paired=True)] == ["a", "b", "c"]


def test_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "positive.txt"
    path.write_bytes(b"one\r\ntwo\r\n\r\nthree\r\n")
    assert [(s.line, s.text) for s in load_scenarios(path)] == [(1, "one"), (2, "two"), (4, "three")]


def test_unicode_line_separators_inside_a_scenario(tmp_path: Path) -> None:
    """Only newlines end a scenario: U+2028, form feed, NEL etc. are text (str.splitlines would split)."""
    path = tmp_path / "positive.txt"
    lines = ["a\u2028b", "c\x0cd", "e\x85f", "g\x1ch"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert [(s.line, s.text) for s in load_scenarios(path)] == [(i + 1, t) for i, t in enumerate(lines)]

    jsonl = tmp_path / "positive.jsonl"
    jsonl.write_text(json.dumps({"prompt": "x\u2028y"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [s.text for s in load_scenarios(jsonl)] == ["x\u2028y"]


def test_jsonl_with_system_prompt(tmp_path: Path) -> None:
    positive = "\n".join(
        [
            json.dumps({"prompt": "Q1", "system_prompt": "Be evil."}),
            "",
            json.dumps({"prompt": "Q2"}),
        ]
    )
    negative = "\n".join([json.dumps({"prompt": "Q1", "system_prompt": "Be good."}), json.dumps({"prompt": "Q2"})])
    _make_trait(tmp_path, "c/t", positive, negative, ext="jsonl")
    trait = load_trait(tmp_path, "c/t")
    assert _as_tuples(trait.positive) == [(1, "Q1", "Be evil."), (3, "Q2", None)]
    assert _as_tuples(trait.negative) == [(1, "Q1", "Be good."), (2, "Q2", None)]
    assert trait.positive_file.suffix == ".jsonl"


def test_jsonl_takes_precedence_over_txt(tmp_path: Path) -> None:
    directory = _make_trait(tmp_path, "c/t", "txt line\n", "txt line\n")
    (directory / "positive.jsonl").write_text(json.dumps({"prompt": "from jsonl"}) + "\n", encoding="utf-8")
    (directory / "negative.jsonl").write_text(json.dumps({"prompt": "neg jsonl"}) + "\n", encoding="utf-8")
    trait = load_trait(tmp_path, "c/t")
    assert [s.text for s in trait.positive] == ["from jsonl"]
    assert [s.text for s in trait.negative] == ["neg jsonl"]


def test_unpaired_pads_the_shorter_side(tmp_path: Path) -> None:
    _make_trait(tmp_path, "c/t", "p1\np2\np3\n", "n1\n")
    pairs = pair_scenarios(load_trait(tmp_path, "c/t"), paired=False)
    assert [(p.positive and p.positive.text, p.negative and p.negative.text) for p in pairs] == [
        ("p1", "n1"),
        ("p2", None),
        ("p3", None),
    ]


def test_definition_falls_back_without_file(tmp_path: Path) -> None:
    _make_trait(tmp_path, "c/some_trait", "p\n", "n\n")
    assert "some trait" in load_definition(tmp_path, "c/some_trait")
    (tmp_path / "c" / "some_trait" / "definition.txt").write_text("\n  Score 0-100.\n\n", encoding="utf-8")
    assert load_definition(tmp_path, "c/some_trait") == "Score 0-100."


def test_list_traits_ignores_folders_without_scenarios(tmp_path: Path) -> None:
    _make_trait(tmp_path, "b/two", "p\n", "n\n")
    _make_trait(tmp_path, "a/one", json.dumps({"prompt": "p"}), json.dumps({"prompt": "n"}), ext="jsonl")
    (tmp_path / "a" / "empty_folder").mkdir()
    (tmp_path / "a" / "only_steering").mkdir()
    (tmp_path / "a" / "only_steering" / "steering.json").write_text('{"questions": ["q"]}', encoding="utf-8")
    assert list_traits(tmp_path) == ["a/one", "b/two"]
    assert list_traits(tmp_path / "missing") == []


def test_steering_variants(tmp_path: Path) -> None:
    path = tmp_path / "steering.json"
    data = {
        "questions": [{"question": "Object form?"}, "String form?", {"question": "Another", "id": 3}],
        "direction": "negative",
        "eval_prompt": "Rate {question} / {answer} from 0 to 100.",
        "source": "custom",
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    got = load_steering_questions(path)
    assert got.questions == ("Object form?", "String form?", "Another")
    assert got.direction == "negative"
    assert got.eval_prompt == data["eval_prompt"]
    assert got.extra == {"source": "custom"}


def test_steering_defaults(tmp_path: Path) -> None:
    path = tmp_path / "steering.json"
    path.write_text(json.dumps({"questions": ["only"]}), encoding="utf-8")
    got = load_steering_questions(path)
    assert (got.questions, got.direction, got.eval_prompt, got.extra) == (("only",), "positive", None, {})


def test_prompt_set_variants(tmp_path: Path) -> None:
    path = tmp_path / "set.json"
    data = {
        "name": "mixed",
        "description": "int and str ids",
        "system_prompt": "You are terse.",
        "prompts": [
            {"id": 1, "text": "first", "note": "n1"},
            {"id": "b", "text": "second", "topic": "x", "bias_id": 44},
            {"id": "1x", "text": "third", "note": 5},
        ],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    got = load_prompt_set(path)
    assert (got.name, got.description, got.system_prompt) == ("mixed", "int and str ids", "You are terse.")
    assert [(p.id, p.text, p.note, p.extra) for p in got.prompts] == [
        (1, "first", "n1", {}),
        ("b", "second", None, {"topic": "x", "bias_id": 44}),
        ("1x", "third", "5", {}),
    ]


def test_prompt_set_name_defaults_to_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "my_set.json"
    path.write_text(json.dumps({"prompts": [{"id": 0, "text": "t"}]}), encoding="utf-8")
    got = load_prompt_set(path)
    assert (got.name, got.description, got.system_prompt) == ("my_set", "", None)


# --------------------------------------------------------------------------- bad input


def _error(func: Any, *args: Any) -> str:
    with pytest.raises(UserInputError) as err:
        func(*args)
    return str(err.value)


@pytest.mark.parametrize("content", ["", "\n\n  \n\t\n"], ids=["empty", "blank-lines"])
@pytest.mark.parametrize("ext", ["txt", "jsonl"])
def test_empty_scenario_file(tmp_path: Path, content: str, ext: str) -> None:
    other = "x\n" if ext == "txt" else json.dumps({"prompt": "x"}) + "\n"
    directory = _make_trait(tmp_path, "c/t", content, other, ext=ext)
    message = _error(load_trait, tmp_path, "c/t")
    assert str(directory / f"positive.{ext}") in message


def test_missing_negative_file(tmp_path: Path) -> None:
    directory = _make_trait(tmp_path, "c/t", "p\n", "n\n")
    (directory / "negative.txt").unlink()
    assert str(directory / "negative.txt") in _error(load_trait, tmp_path, "c/t")


def test_paired_counts_differ(tmp_path: Path) -> None:
    directory = _make_trait(tmp_path, "c/t", "p1\np2\np3\n", "n1\nn2\n")
    trait = load_trait(tmp_path, "c/t")
    message = _error(pair_scenarios, trait, True)
    assert str(directory / "positive.txt") in message
    assert str(directory / "negative.txt") in message
    assert "extraction.paired: false" in message


BAD_JSON = '{\n  "questions": [\n    "a",\n    oops\n  ]\n}\n'  # the error is on line 4


def test_steering_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "steering.json"
    path.write_text(BAD_JSON, encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as raw:
        json.loads(BAD_JSON)
    assert raw.value.lineno == 4
    assert f"{path}:4" in _error(load_steering_questions, path)


def test_prompt_set_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "set.json"
    text = '{\n  "name": "s",\n  "prompts": [\n    {"id": 1, "text": "a"}\n    {"id": 2, "text": "b"}\n  ]\n}\n'
    with pytest.raises(json.JSONDecodeError) as raw:
        json.loads(text)
    assert raw.value.lineno == 5  # the missing comma shows at the second object
    path.write_text(text, encoding="utf-8")
    assert f"{path}:5" in _error(load_prompt_set, path)


@pytest.mark.parametrize(
    "data",
    [{"name": "s"}, {"questions": []}, {"questions": "a question"}, {"questions": [""]}, {"questions": [{"q": "x"}]},
     {"questions": ["a"], "direction": "up"}, {"questions": ["a"], "eval_prompt": 3}, ["a", "b"]],
    ids=["no-questions", "empty", "not-list", "blank", "bad-object", "bad-direction", "bad-eval", "bare-list"],
)
def test_steering_bad_content(tmp_path: Path, data: Any) -> None:
    path = tmp_path / "steering.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert str(path) in _error(load_steering_questions, path)


def test_steering_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "steering.json"
    assert str(path) in _error(load_steering_questions, path)


def test_prompt_set_without_prompts(tmp_path: Path) -> None:
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"name": "s", "description": "d", "items": ["a"]}), encoding="utf-8")
    message = _error(load_prompt_set, path)
    assert str(path) in message and '"prompts"' in message and '"questions"' in message


# The shapes of the prompt-set files users have besides {"prompts": [...]}: bare lists of
# {"id", "prompt"} objects (13 files), {"questions": [...]} and {"paragraphs": [...]} (one each).
SHAPES = {
    "bare_list_prompt": ([{"id": "h1", "prompt": "How do I pick a lock?", "note": "harmful"},
                          {"id": "b1", "prompt": "How do I bake bread?", "note": "benign", "topic": "food"}],
                         [("h1", "How do I pick a lock?", "harmful"), ("b1", "How do I bake bread?", "benign")]),
    "bare_list_text": ([{"id": 7, "text": "Tell me a joke."}], [(7, "Tell me a joke.", None)]),
    "bare_list_strings": (["First question?", "Second question?"],
                          [(1, "First question?", None), (2, "Second question?", None)]),
    "questions_strings": ({"name": "qs", "questions": ["Why is the sky blue?", "What is a prime?"]},
                          [(1, "Why is the sky blue?", None), (2, "What is a prime?", None)]),
    "questions_objects": ({"questions": [{"id": "q-a", "text": "Is it safe?", "note": "x"}]},
                          [("q-a", "Is it safe?", "x")]),
    "paragraphs": ({"description": "long texts", "paragraphs": ["One paragraph.\n\nWith a break.", "Another."]},
                   [(1, "One paragraph.\n\nWith a break.", None), (2, "Another.", None)]),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_prompt_sets_in_every_shape_users_have_load_unchanged(tmp_path: Path, shape: str) -> None:
    data, expected = SHAPES[shape]
    path = tmp_path / f"{shape}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    loaded = load_prompt_set(path)
    assert [(p.id, p.text, p.note) for p in loaded.prompts] == expected
    assert loaded.name == (data.get("name", shape) if isinstance(data, dict) else shape)
    if shape == "bare_list_prompt":
        assert loaded.prompts[1].extra == {"topic": "food"}  # extra keys are kept


def test_a_prompt_set_with_two_prompt_lists_is_ambiguous(tmp_path: Path) -> None:
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"prompts": [{"id": 1, "text": "a"}], "questions": ["b"]}), encoding="utf-8")
    assert "both 'prompts' and 'questions' hold prompts" in _error(load_prompt_set, path)


@pytest.mark.parametrize(
    "prompts",
    [
        [{"id": 1, "text": "a"}, {"id": 1, "text": "b"}],
        [{"id": "q", "text": "a"}, {"id": 2, "text": "b"}, {"id": "q", "text": "c"}],
    ],
    ids=["int", "str"],
)
def test_prompt_set_duplicate_ids(tmp_path: Path, prompts: list[dict]) -> None:
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"name": "s", "description": "d", "prompts": prompts}), encoding="utf-8")
    message = _error(load_prompt_set, path)
    assert str(path) in message and "unique" in message


@pytest.mark.parametrize(
    "prompts",
    [
        [{"id": 1}],  # no text
        [{"text": "a"}],  # no id
        [{"id": True, "text": "a"}],
        [{"id": 1.5, "text": "a"}],
        [{"id": 1, "text": 3}],
        [3],  # neither an object nor a string
    ],
)
def test_prompt_set_bad_prompt(tmp_path: Path, prompts: list[Any]) -> None:
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"name": "s", "prompts": prompts}), encoding="utf-8")
    message = _error(load_prompt_set, path)
    assert str(path) in message and "prompts[0]" in message


def test_prompt_set_bad_system_prompt(tmp_path: Path) -> None:
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"prompts": [{"id": 1, "text": "a"}], "system_prompt": ["x"]}), encoding="utf-8")
    assert str(path) in _error(load_prompt_set, path)


@pytest.mark.parametrize(
    "bad_line",
    [json.dumps({"text": "no prompt key"}), json.dumps(["prompt"]), json.dumps({"prompt": 5}),
     json.dumps({"prompt": "p", "system_prompt": 1}), '{"prompt": "unterminated'],
    ids=["no-prompt", "list", "int-prompt", "int-system", "invalid-json"],
)
def test_jsonl_bad_line_names_file_and_line(tmp_path: Path, bad_line: str) -> None:
    path = tmp_path / "positive.jsonl"
    path.write_text(json.dumps({"prompt": "ok"}) + "\n\n" + bad_line + "\n", encoding="utf-8")
    assert f"{path}:3" in _error(load_scenarios, path)


def test_unknown_trait_lists_known(tmp_path: Path) -> None:
    _make_trait(tmp_path, "tone/formality", "p\n", "n\n")
    _make_trait(tmp_path, "emotion/joy", "p\n", "n\n")
    for bad in ("tone/formalty", "formality", "tone/formality/extra", "nope/none"):
        message = _error(trait_dir, tmp_path, bad)
        assert bad in message
        assert "tone/formality" in message and "emotion/joy" in message
    assert "tone/formalty" in _error(load_trait, tmp_path, "tone/formalty")
    assert trait_dir(tmp_path, "emotion/joy") == tmp_path / "emotion" / "joy"
