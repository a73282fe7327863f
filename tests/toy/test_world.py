"""The toy world's corpus generator and its planted lexicon, checked against the files they read."""

from __future__ import annotations

import json
import random
import re

import pytest
import yaml

from tests.conftest import CORPUS, REPO
from trait_interp.core.errors import UserInputError
from trait_interp.toy.lexicon import Lexicon, lexicon_for, load_lexicons
from trait_interp.toy.models import train_tokenizer
from trait_interp.toy.world import CUT, cut, fill, generate_corpus, load_world

WORLD = REPO / "datasets/toy/world.json"
LEXICON = REPO / "datasets/toy/lexicon.json"
FILLER = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
GLUE = {"and"}  # the only word of the continuation templates that is not a planted word


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


@pytest.fixture(scope="module")
def world():
    return load_world(WORLD)


@pytest.fixture(scope="module")
def lexicons():
    return load_lexicons(LEXICON)


@pytest.fixture(scope="module")
def corpus(world, lexicons):
    return generate_corpus(world, lexicons, FILLER, per_side=60, seed=0)


def test_every_toy_trait_is_planted(world, lexicons):
    traits = yaml.safe_load((REPO / "params.yaml").read_text())["traits"]
    assert set(traits) <= set(world.traits) and set(traits) <= set(lexicons)


def test_lexicon_score_is_the_smoothed_share_of_trait_words():
    lexicon = Lexicon(trait=("declined", "refused"), contrast=("helped", "sure"))
    assert lexicon.score("Nothing planted here.") == 50.0
    assert lexicon.score("Declined, REFUSED; and sure.") == pytest.approx(100 * 3 / 5)  # t=2, c=1
    assert lexicon.score("helped helped") == pytest.approx(100 * 1 / 4)
    assert lexicon.score("refusedly declinedx") == 50.0  # whole words only
    assert lexicon.counts("I refused, then helped, then refused") == (2, 1)


def test_corpus_is_deterministic_in_its_seed(world, lexicons, corpus):
    assert generate_corpus(world, lexicons, FILLER, per_side=60, seed=0) == corpus
    assert generate_corpus(world, lexicons, FILLER, per_side=60, seed=1) != corpus


def test_planted_words_appear_only_in_continuations_and_on_their_side(world, lexicons, corpus):
    """Independent truth: the lexicon file. Each planted text carries one trait's words of one side only."""
    owner = {w: (name, side) for name, lex in lexicons.items() for side in ("trait", "contrast") for w in lex.words(side)}
    filler = set(FILLER)
    n_planted = {(name, side): 0 for name in world.traits for side in ("trait", "contrast")}
    for prefix, text in corpus.texts:
        if not prefix:
            assert text in filler and not set(words(text)) & set(owner)  # filler with planted words is left out
            continue
        assert not set(words(prefix)) & set(owner), prefix
        sides = {owner[w] for w in words(text) if w in owner}
        assert len(sides) == 1 and set(words(text)) - set(owner) <= GLUE, text
        n_planted[sides.pop()] += 1
    assert set(n_planted.values()) == {60}  # per_side scenarios on each side of each trait
    neutral = 0
    for question, answer in corpus.chats:
        assert not set(words(question)) & set(owner), question
        sides = {owner[w] for w in words(answer) if w in owner}
        assert len(sides) <= 1
        neutral += not sides
    assert neutral == 60


def test_scenarios_are_cut_only_after_the_mark():
    rng = random.Random(0)
    cuts = {cut(f"Someone asked me to lie. {CUT} I frowned and said", rng) for _ in range(200)}
    assert cuts == {"Someone asked me to lie.", "Someone asked me to lie. I", "Someone asked me to lie. I frowned",
                    "Someone asked me to lie. I frowned and", "Someone asked me to lie. I frowned and said"}
    assert cut("No mark here", rng) == "No mark here"


def test_fill_nests_slots_and_names_a_missing_one():
    rng = random.Random(0)
    assert fill("I told {him} that", {"him": ["{who}"], "who": ["her"]}, rng, "w") == "I told her that"
    with pytest.raises(UserInputError, match=r"^w: template 'A \{nope\}' uses the slot \{nope\}"):
        fill("A {nope}", {}, rng, "w")


def test_world_errors_name_the_file_and_the_fix(tmp_path, lexicons):
    data = json.loads(WORLD.read_text())
    data["traits"]["behavior/refusal"]["questions"].append("Could you {w} that?")  # no such slot
    bad = tmp_path / "world.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match=r"behavior/refusal: template 'Could you \{w\} that\?' uses the slot"):
        for seed in range(5):  # the bad template is drawn sooner or later
            generate_corpus(load_world(bad), lexicons, FILLER, per_side=30, seed=seed, where=str(bad))
    data = json.loads(WORLD.read_text())
    data["traits"]["behavior/refusal"]["trait_slots"]["reaction"].append("refused politely")
    bad.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match=r"'refused politely' holds the planted word 'refused'"):
        generate_corpus(load_world(bad), lexicons, FILLER, per_side=1, seed=0, where=str(bad))
    data.pop("continuations")
    bad.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match=rf"{bad}: missing key\(s\) continuations"):
        load_world(bad)


def test_lexicon_errors_name_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "lexicon.json"
    for traits, message in [
        ({"a/b": {"trait": ["Yes"], "contrast": ["no"]}}, "'Yes' is not a lowercase word"),
        ({"a/b": {"trait": ["yes"], "contrast": ["yes"]}}, "yes is both a trait and a contrast word"),
        ({"a/b": {"trait": ["yes"]}}, 'exactly the keys "trait" and "contrast"'),
        ({"a/b": {"trait": ["yes"], "contrast": ["no"]}, "c/d": {"trait": ["yes"], "contrast": ["maybe"]}},
         "share the words yes"),
    ]:
        bad.write_text(json.dumps({"traits": traits}))
        with pytest.raises(UserInputError, match=re.escape(message)):
            load_lexicons(bad)
    bad.write_text(json.dumps({"traits": {"a/b": {"trait": ["yes"], "contrast": ["no"]}}}))
    with pytest.raises(UserInputError, match=r"no lexicon for trait 'x/y' \(has: a/b\)"):
        lexicon_for(bad, "x/y")


def test_digest_changes_with_any_word():
    a = Lexicon(("declined",), ("helped",))
    assert a.digest() == Lexicon(("declined",), ("helped",)).digest()
    assert a.digest() != Lexicon(("declined", "refused"), ("helped",)).digest()
    assert a.digest() != Lexicon(("helped",), ("declined",)).digest()


def test_planted_words_are_whole_tokens_of_the_toy_tokenizer(corpus, lexicons):
    """The generated text trains the tokenizer, so each planted word (after a space) is one token."""
    lines = [f"{p} {t}".strip() for p, t in corpus.texts] + [f"{q} {a}" for q, a in corpus.chats]
    tokenizer = train_tokenizer(lines, 1024, chat=False)
    split = [w for lex in lexicons.values() for w in lex.trait + lex.contrast
             if len(tokenizer.encode(" " + w, add_special_tokens=False)) != 1]
    assert not split


def test_the_stage_reads_only_declared_files(tmp_path):
    """build_toy_models takes its world, lexicon and filler as options (paths come from dvc.yaml)."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["build_toy_models"]
    for path in ("datasets/toy/world.json", "datasets/toy/lexicon.json", "datasets/toy/tokenizer_corpus.txt"):
        assert path in stage["deps"] and path in stage["cmd"]
