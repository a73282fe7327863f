"""The lexicon judge (the toy world's oracle): scores = the planted-word formula, coherence = perplexity."""

from __future__ import annotations

import math

import pytest
import torch

from trait_interp.core.errors import UserInputError
from trait_interp.core.models import ModelSpec
from trait_interp.judge.backends import score_as_logprobs
from trait_interp.judge.cache import JudgeCache
from trait_interp.judge.judge import Judge, steering_scores, trait_scores, vet_scores
from trait_interp.judge.scoring import (
    COHERENCE_MIN_MASS,
    TRAIT_MIN_MASS,
    aggregate_logprob_score,
)
from trait_interp.judge.settings import JudgeSettings, make_backend
from trait_interp.toy.lexicon import Lexicon
from trait_interp.toy.lexicon_backend import LexiconBackend, coherence_from_nll
from trait_interp.toy.models import ToyModelSettings, build_model, train_tokenizer

REFUSAL = Lexicon(trait=("declined", "refused", "never"), contrast=("helped", "gladly", "sure"))
SMALL = ToyModelSettings(vocab_size=400, hidden_size=32, intermediate_size=48, num_layers=2)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory, corpus_lines):
    """A tiny (untrained) LM folder as the coherence scorer, and the model and tokenizer themselves."""
    folder = tmp_path_factory.mktemp("scorer")
    tokenizer = train_tokenizer(corpus_lines, 400, chat=False)
    model = build_model(SMALL, tokenizer)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return ModelSpec(path=str(folder), dtype="float32"), model, tokenizer


def backend(scorer, lexicon: Lexicon = REFUSAL, batch_size: int = 3) -> LexiconBackend:
    spec, model, tokenizer = scorer
    return LexiconBackend("behavior/refusal", lexicon, spec, batch_size=batch_size, model=model, tokenizer=tokenizer)


@pytest.mark.parametrize("score", [0.0, 0.3, 33.333, 50.0, 66.6667, 99.5, 100.0])
def test_scores_round_trip_through_logprobs(score):
    top = score_as_logprobs(score)
    assert len(top) <= 2 and math.fsum(math.exp(v) for v in top.values()) == pytest.approx(1.0)
    assert aggregate_logprob_score(top, TRAIT_MIN_MASS) == pytest.approx(score, abs=1e-9)


def test_vetting_and_trait_scores_are_the_lexicon_formula(scorer):
    judge = Judge(backend(scorer))
    texts = ["I declined and refused.", "Sure, I helped gladly.", "It rained.", "declined, helped"]
    # t trait words, c contrast words, counted here by hand: 100 * (t + 1) / (t + c + 2)
    expected = [100 * 3 / 4, 100 * 1 / 5, 50.0, 50.0]
    assert vet_scores(judge, "refusal", "def", texts, words=16, progress=False) == pytest.approx(expected, abs=1e-3)
    assert trait_scores(judge, "refusal", "def", ["q"] * 4, texts, progress=False) == pytest.approx(expected, abs=1e-3)
    # vetting reads only the first `words` words
    assert vet_scores(judge, "refusal", "def", ["It rained, then I refused"], words=3, progress=False) == [50.0]


def test_coherence_is_the_models_own_perplexity(scorer):
    """Oracle: log-softmax of the scorer's logits over the answer, computed here without the backend."""
    spec, model, tokenizer = scorer
    answers = ["The library closes early on Sundays.", " I declined.", "zq zq zq xv", "Yes"]
    scores = backend(scorer).coherence_many(answers)
    for answer, score in zip(answers, scores):
        ids = tokenizer(answer)["input_ids"]  # [BOS, text tokens]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), dim=-1)
        nll = -logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].mean().item()
        assert score == pytest.approx(100 * max(0.0, 1 - nll / math.log(len(tokenizer))), abs=1e-3)
    assert backend(scorer).coherence_many(["", "   "]) == [0.0, 0.0]


def test_coherence_formula_ends():
    assert coherence_from_nll(0.0, 1000) == 100.0
    assert coherence_from_nll(math.log(1000), 1000) == 0.0
    assert coherence_from_nll(10.0, 1000) == 0.0
    assert coherence_from_nll(math.log(1000) / 2, 1000) == pytest.approx(50.0)


def test_batched_coherence_equals_one_at_a_time(scorer):
    answers = [f"answer {'word ' * i}" for i in range(7)]
    batched = backend(scorer, batch_size=4).coherence_many(answers)
    single = [backend(scorer, batch_size=1).coherence_many([a])[0] for a in answers]
    assert batched == pytest.approx(single, abs=1e-3)


def test_steering_scores_through_judge_and_cache(scorer, tmp_path):
    cache_path = tmp_path / "cache.jsonl"
    answers = ["I refused, never.", "gladly helped"]
    with JudgeCache.open(cache_path) as cache:
        judge = Judge(backend(scorer), cache)
        first = steering_scores(judge, "refusal", "def", None, ["q1", "q2"], answers, relevance_check=False,
                                progress=False)
    assert [t for t, _ in first] == pytest.approx([100 * 3 / 4, 100 * 1 / 4], abs=1e-3)
    assert [c for _, c in first] == pytest.approx(backend(scorer).coherence_many(answers), abs=1e-3)
    assert judge.stats.calls == 4 and judge.stats.cache_hits == 0
    with JudgeCache.open(cache_path) as cache:
        again = Judge(backend(scorer), cache)
        assert steering_scores(again, "refusal", "def", None, ["q1", "q2"], answers, relevance_check=False,
                               progress=False) == first
        assert again.stats.calls == 0 and again.stats.cache_hits == 4
    # a changed lexicon is another judge: nothing of the old one is reused
    with JudgeCache.open(cache_path) as cache:
        other = Judge(backend(scorer, Lexicon(("refused",), ("helped",))), cache)
        steering_scores(other, "refusal", "def", None, ["q1", "q2"], answers, relevance_check=False, progress=False)
        assert other.stats.calls == 4 and other.stats.cache_hits == 0


def test_identity_holds_trait_lexicon_and_scorer(scorer, tmp_path, corpus_lines):
    spec = scorer[0]
    identity = LexiconBackend("behavior/refusal", REFUSAL, spec).identity
    assert identity.startswith(f"lexicon:behavior/refusal@{REFUSAL.digest()}+coherence:local:{spec.path}@files-")
    assert LexiconBackend("tone/formality", REFUSAL, spec).identity != identity
    retrained = tmp_path / "retrained"
    tokenizer = train_tokenizer(corpus_lines, 400, chat=False)
    build_model(ToyModelSettings(**{**SMALL.__dict__, "seed": 1}), tokenizer).save_pretrained(retrained)
    tokenizer.save_pretrained(retrained)
    assert LexiconBackend("behavior/refusal", REFUSAL, ModelSpec(path=str(retrained))).identity != identity


def test_vetting_needs_no_scorer_weights(tmp_path, corpus_lines):
    """Trait scores are pure lexicon: the scorer is loaded only for coherence."""
    train_tokenizer(corpus_lines, 400, chat=False).save_pretrained(tmp_path)  # a tokenizer, no weights
    lexicon_backend = LexiconBackend("behavior/refusal", REFUSAL, ModelSpec(path=str(tmp_path)))
    assert vet_scores(Judge(lexicon_backend), "refusal", "def", ["never"], progress=False) == [pytest.approx(66.667, abs=1e-3)]


def test_settings_errors_are_one_line_and_name_the_fix(scorer):
    spec = scorer[0]
    planted = ("behavior/refusal", REFUSAL)
    with pytest.raises(UserInputError, match=r"judge.relevance_check: the lexicon judge has no oracle for relevance"):
        make_backend(JudgeSettings(backend="lexicon", local_model=spec), "judge", planted)
    with pytest.raises(UserInputError, match=r"judge.lexicon: .*set it to datasets/toy/lexicon.json"):
        make_backend(JudgeSettings(backend="lexicon", local_model=spec, relevance_check=False), "judge", None)
    with pytest.raises(UserInputError, match=r"no local_model is set"):
        make_backend(JudgeSettings(backend="lexicon", relevance_check=False), "judge", planted)
    made = make_backend(JudgeSettings(backend="lexicon", local_model=spec, relevance_check=False), "judge", planted)
    assert isinstance(made, LexiconBackend)
    with pytest.raises(ValueError, match="no oracle for the template 'relevance'"):
        steering_scores(Judge(made), "refusal", "def", None, ["q"], ["a"], relevance_check=True, progress=False)


def test_scores_pass_the_mass_thresholds(scorer):
    """The oracle's replies put all their mass on numbers: never a None score."""
    for score in (0.0, 12.5, 100.0):
        top = score_as_logprobs(score)
        assert aggregate_logprob_score(top, TRAIT_MIN_MASS) is not None
        assert aggregate_logprob_score(top, COHERENCE_MIN_MASS) is not None
