"""Judge: aggregation, templates (brace safety), two-stage coherence, the cache, Judge + cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from trait_interp.core.errors import UserInputError
from trait_interp.judge.backends import Reply, merge_top_logprobs
from trait_interp.judge.cache import JudgeCache, cache_key, new_entry
from trait_interp.judge.judge import Judge, JudgeRequest, steering_scores, vet_scores
from trait_interp.judge.scoring import (
    COHERENCE_MIN_MASS,
    TRAIT_MIN_MASS,
    aggregate_logprob_score,
)
from trait_interp.judge.settings import JudgeSettings, make_backend
from trait_interp.judge.templates import (
    COHERENCE,
    RELEVANCE,
    RESPONSE_VETTING,
    SCENARIO_VETTING,
    STEERING_TRAIT,
    combine_coherence,
    custom_eval_template,
    fill,
)

LOG = math.log


# ---- aggregation -------------------------------------------------------------------------------


def test_weighted_mean_of_numeric_tokens():
    score = aggregate_logprob_score({"20": LOG(0.5), "80": LOG(0.3)}, TRAIT_MIN_MASS)
    assert score == pytest.approx((20 * 0.5 + 80 * 0.3) / 0.8)


def test_tokens_with_spaces_count_and_duplicate_integers_add():
    # " 7" and "7" are the same integer: p(7) = 0.2 + 0.2; p(10) = 0.4
    score = aggregate_logprob_score({"7": LOG(0.2), " 7": LOG(0.2), "10\n": LOG(0.4)}, TRAIT_MIN_MASS)
    assert score == pytest.approx((7 * 0.4 + 10 * 0.4) / 0.8)


def test_out_of_range_and_non_numeric_tokens_are_ignored():
    top = {"50": LOG(0.3), "101": LOG(0.3), "-5": LOG(0.1), "7.5": LOG(0.1), "seven": LOG(0.1), "": LOG(0.05)}
    assert aggregate_logprob_score(top, TRAIT_MIN_MASS) == pytest.approx(50.0)
    assert aggregate_logprob_score({"3": LOG(0.5), "9": LOG(0.5)}, 0.1, lo=0, hi=5) == pytest.approx(3.0)


def test_mass_exactly_at_threshold_counts_and_just_below_does_not():
    top = {"10": LOG(0.125), "30": LOG(0.125)}
    mass = math.exp(top["10"]) + math.exp(top["30"])
    assert aggregate_logprob_score(top, mass) == pytest.approx(20.0)
    assert aggregate_logprob_score(top, math.nextafter(mass, 1.0)) is None
    assert aggregate_logprob_score({"40": LOG(0.25)}, TRAIT_MIN_MASS) == pytest.approx(40.0)


def test_none_below_trait_and_coherence_thresholds():
    top = {"60": LOG(0.2), "The": LOG(0.7)}
    assert aggregate_logprob_score(top, TRAIT_MIN_MASS) is None
    assert aggregate_logprob_score(top, COHERENCE_MIN_MASS) == pytest.approx(60.0)
    weak = {"60": LOG(0.09), "The": LOG(0.9)}
    assert aggregate_logprob_score(weak, COHERENCE_MIN_MASS) is None
    assert aggregate_logprob_score({}, 0.0) is None


def test_merge_top_logprobs_adds_probabilities_of_equal_token_text():
    merged = merge_top_logprobs([("a", LOG(0.2)), ("a", LOG(0.3)), ("b", LOG(0.1))])
    assert math.exp(merged["a"]) == pytest.approx(0.5) and math.exp(merged["b"]) == pytest.approx(0.1)


# ---- templates ---------------------------------------------------------------------------------


def test_fill_is_brace_safe_and_single_pass():
    definition = "Uses {curly} braces, a {name} field, {} and {0} and {{double}}."
    answer = "I will say {answer} and {question} literally"
    messages = STEERING_TRAIT.render(
        {"trait_name": "formality", "definition": definition, "question": "Why {x}?", "answer": answer}
    )
    system, user = messages[0]["content"], messages[1]["content"]
    assert definition in system and "formality" in system
    assert user == f'Question: "Why {{x}}?"\nResponse: "{answer}"\n\nScore:'
    # the substituted answer's "{answer}" / "{question}" were not substituted again
    assert user.count("{answer}") == 1 and user.count("{question}") == 1


def test_custom_eval_prompt_with_braces_formats():
    prompt = 'Rate JSON-ness, e.g. {"a": 1} and {name}.\nQ: {question}\nA: {answer}\nScore:'
    template = custom_eval_template(prompt)
    (message,) = template.render({"question": "q{answer}", "answer": "{question}!"})
    assert message == {
        "role": "user",
        "content": 'Rate JSON-ness, e.g. {"a": 1} and {name}.\nQ: q{answer}\nA: {question}!\nScore:',
    }


def test_custom_eval_prompt_without_answer_is_rejected():
    with pytest.raises(ValueError, match=r"\{answer\}"):
        custom_eval_template("Rate the response to {question} from 0 to 100")


def test_render_checks_its_fields():
    with pytest.raises(ValueError, match="missing: definition"):
        RESPONSE_VETTING.render({"trait_name": "t", "response": "r"})
    with pytest.raises(ValueError, match="unexpected: extra"):
        COHERENCE.render({"answer": "a", "extra": "x"})


def test_every_builtin_template_uses_all_its_fields_and_has_a_version():
    for template in (SCENARIO_VETTING, RESPONSE_VETTING, STEERING_TRAIT, COHERENCE, RELEVANCE):
        text = (template.system or "") + template.user
        assert template.version >= 1
        for name in template.fields:
            assert "{" + name + "}" in text, (template.name, name)
        rendered = template.render({name: f"<{name}>" for name in template.fields})
        joined = "".join(m["content"] for m in rendered)
        assert all(f"<{name}>" in joined for name in template.fields)
        assert "Number only" in joined or "number only" in joined or "Score:" in joined


def test_fill_ignores_names_it_was_not_given():
    assert fill("{a} {b} {a}", {"a": "{b}"}) == "{b} {b} {b}"


@pytest.mark.parametrize(
    "grammar, relevance, expected",
    [
        (None, 90.0, None),
        (None, None, None),
        (80.0, 20.0, 50.0),  # off-topic caps at 50
        (30.0, 20.0, 30.0),  # already below the cap
        (80.0, 49.999, 50.0),
        (80.0, 50.0, 80.0),  # at the cutoff: engages
        (80.0, 90.0, 80.0),
        (80.0, None, 80.0),  # no relevance answer: no cap
    ],
)
def test_combine_coherence(grammar, relevance, expected):
    assert combine_coherence(grammar, relevance) == expected


def test_combine_coherence_custom_cutoff():
    assert combine_coherence(90.0, 60.0, cutoff=70.0) == 50.0


# ---- cache -------------------------------------------------------------------------------------

MESSAGES = ({"role": "system", "content": "Rate."}, {"role": "user", "content": "Hello"})


def test_cache_key_is_stable_and_sensitive_to_what_matters():
    base = cache_key("openai:gpt-4.1-mini", "steering_trait", 1, MESSAGES)
    assert base == cache_key("openai:gpt-4.1-mini", "steering_trait", 1, tuple(dict(m) for m in MESSAGES))
    assert len(base) == 64
    assert base != cache_key("openai:gpt-4.1-mini", "steering_trait", 2, MESSAGES)
    assert base != cache_key("openai:gpt-4o", "steering_trait", 1, MESSAGES)
    assert base != cache_key("openai:gpt-4.1-mini", "coherence", 1, MESSAGES)
    changed = (MESSAGES[0], {"role": "user", "content": "Hello!"})
    assert base != cache_key("openai:gpt-4.1-mini", "steering_trait", 1, changed)
    reordered_keys = ({"content": "Rate.", "role": "system"}, {"content": "Hello", "role": "user"})
    assert base == cache_key("openai:gpt-4.1-mini", "steering_trait", 1, reordered_keys)


def _entry(i: int, score: float | None = 50.0):
    return new_entry(f"k{i}", "coherence", 1, "m", {"50": -0.1, " {x}": -3.0, "é\u2028": -4.0}, score)


def test_cache_jsonl_round_trip(tmp_path):
    path = tmp_path / "sub" / "judge_cache.jsonl"
    with JudgeCache.open(path) as cache:
        assert len(cache) == 0
        cache.put(_entry(1))
        cache.put(_entry(2, None))
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert set(json.loads(lines[0])) == {"key", "template", "version", "model", "top_logprobs", "score", "created"}
    reloaded = JudgeCache.open(path)
    assert len(reloaded) == 2
    assert reloaded.get("k1") == _entry(1).__class__(**{**_entry(1).__dict__, "created": reloaded.get("k1").created})
    assert reloaded.get("k2").score is None
    assert reloaded.get("k1").top_logprobs == {"50": -0.1, " {x}": -3.0, "é\u2028": -4.0}


def test_cache_entries_are_durable_before_close(tmp_path):
    path = tmp_path / "c.jsonl"
    cache = JudgeCache.open(path)
    cache.put(_entry(1))
    assert len(JudgeCache.open(path)) == 1  # another reader sees it while the writer is still open
    cache.close()


def test_cache_ignores_a_truncated_last_line_and_repairs_it_on_append(tmp_path):
    path = tmp_path / "c.jsonl"
    with JudgeCache.open(path) as cache:
        cache.put(_entry(1))
        cache.put(_entry(2))
    full = path.read_bytes()
    path.write_bytes(full + _entry(3).to_line().encode()[:40])  # a crash mid-append
    cache = JudgeCache.open(path)
    assert len(cache) == 2 and "k3" not in cache
    cache.put(_entry(4))
    cache.close()
    again = JudgeCache.open(path)  # the partial line is gone, not glued to the new entry
    assert sorted(e for e in ("k1", "k2", "k3", "k4") if e in again) == ["k1", "k2", "k4"]
    assert len(path.read_text().splitlines()) == 3


def test_cache_keeps_a_complete_last_line_without_newline(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(_entry(1).to_line().rstrip("\n"))
    cache = JudgeCache.open(path)
    assert "k1" in cache
    cache.put(_entry(2))
    cache.close()
    assert len(JudgeCache.open(path)) == 2


def test_cache_corrupt_middle_line_is_a_user_error_naming_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(_entry(1).to_line() + "{not json\n" + _entry(2).to_line())
    with pytest.raises(UserInputError, match=r"c\.jsonl:2: corrupt judge cache entry .*delete that line"):
        JudgeCache.open(path)
    path.write_text(_entry(1).to_line() + '{"key": "x"}\n' + _entry(2).to_line())
    with pytest.raises(UserInputError, match=r":2: "):
        JudgeCache.open(path)


# ---- Judge with a scripted backend -------------------------------------------------------------


class ScriptedBackend:
    """Answers from a function of the messages; records what it was asked."""

    identity = "scripted:v1"

    def __init__(self, answer=None, fail_on: str | None = None) -> None:
        self.batches: list[int] = []
        self.answer = answer or (lambda messages: {"40": LOG(0.5), "60": LOG(0.5)})
        self.fail_on = fail_on

    def top_logprobs_many(self, messages, progress, on_reply=None):
        self.batches.append(len(messages))
        replies = []
        for i, m in enumerate(messages):
            text = "".join(x["content"] for x in m)
            if self.fail_on is not None and self.fail_on in text:
                reply = Reply(None, "HTTP 500 after 4 retries", retries=4)
            else:
                reply = Reply(self.answer(m), None, prompt_tokens=10, completion_tokens=1)
            if on_reply is not None:
                on_reply(i, reply)
            replies.append(reply)
        return replies

    @property
    def calls(self) -> int:
        return sum(self.batches)


def _requests(n: int, prefix: str = "text") -> list[JudgeRequest]:
    return [JudgeRequest.of(COHERENCE, {"answer": f"{prefix} {i}"}, COHERENCE_MIN_MASS) for i in range(n)]


def test_judge_second_run_makes_no_backend_calls(tmp_path):
    path = tmp_path / "cache.jsonl"
    backend = ScriptedBackend()
    with JudgeCache.open(path) as cache:
        first = Judge(backend, cache).score_many(_requests(5), progress=False)
    assert backend.calls == 5 and all(s.score == pytest.approx(50.0) and not s.cached for s in first)
    backend2 = ScriptedBackend()
    judge = Judge(backend2, JudgeCache.open(path))
    second = judge.score_many(_requests(5), progress=False)
    assert backend2.batches == [] and judge.stats.calls == 0 and judge.stats.cache_hits == 5
    assert [s.score for s in second] == [s.score for s in first] and all(s.cached for s in second)


def test_judge_deduplicates_identical_requests_and_sends_one_batch():
    backend = ScriptedBackend()
    judge = Judge(backend)
    requests = _requests(3) + _requests(3)
    scores = judge.score_many(requests, progress=False)
    assert backend.batches == [3] and len(scores) == 6 and judge.stats.calls == 3
    assert judge.stats.prompt_tokens == 30 and judge.stats.completion_tokens == 3


def test_judge_a_different_backend_identity_misses_the_cache():
    cache = JudgeCache.in_memory()
    Judge(ScriptedBackend(), cache).score_many(_requests(2), progress=False)
    other = ScriptedBackend()
    other.identity = "scripted:v2"
    Judge(other, cache).score_many(_requests(2), progress=False)
    assert other.calls == 2


def test_judge_failures_are_not_cached_and_low_mass_is():
    answer = lambda m: {"The": LOG(0.9), "50": LOG(0.05)}  # noqa: E731
    cache = JudgeCache.in_memory()
    judge = Judge(ScriptedBackend(answer=answer, fail_on="text 1"), cache)
    scores = judge.score_many(_requests(3), progress=False)
    assert [s.failed for s in scores] == [False, True, False]
    assert all(s.score is None for s in scores)
    assert judge.stats.failures == 1 and judge.stats.none_scores == 2 and judge.stats.retries == 4
    assert len(cache) == 2
    again = ScriptedBackend(answer=answer)
    Judge(again, cache).score_many(_requests(3), progress=False)
    assert again.batches == [1]  # only the failed one is asked again


def test_judge_keeps_answers_received_before_a_crash(tmp_path):
    """A crash in the middle of a batch (here: the cache write raising after 4 puts) keeps the first 4."""

    class CrashingCache(JudgeCache):
        def put(self, entry):
            if len(self) == 4:
                raise KeyboardInterrupt("killed")
            super().put(entry)

    path = tmp_path / "cache.jsonl"
    crashing = CrashingCache(path, {})
    with pytest.raises(KeyboardInterrupt):
        Judge(ScriptedBackend(), crashing).score_many(_requests(10), progress=False)
    crashing.close()
    assert len(JudgeCache.open(path)) == 4
    backend = ScriptedBackend()
    Judge(backend, JudgeCache.open(path)).score_many(_requests(10), progress=False)
    assert backend.batches == [6]


def test_vet_scores_judge_only_the_first_words():
    seen = []

    def answer(messages):
        seen.append(messages[0]["content"])
        return {"70": 0.0}

    judge = Judge(ScriptedBackend(answer=answer))
    text = " ".join(f"w{i}" for i in range(40))
    assert vet_scores(judge, "optimism", "Hope {and} cheer", [text], words=16, progress=False) == [70.0]
    assert '"w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15"' in seen[0]
    assert "w16" not in seen[0] and "Hope {and} cheer" in seen[0]


def test_steering_scores_combine_trait_coherence_and_relevance_in_one_batch():
    def answer(messages):
        text = messages[-1]["content"]
        if messages[0]["content"].startswith("Does the response engage"):
            return {"10": 0.0} if "ZEBRA" in text else {"90": 0.0}
        if messages[0]["role"] == "system" and "grammar" in messages[0]["content"]:
            return {"80": 0.0}
        return {"35": 0.0}

    backend = ScriptedBackend(answer=answer)
    judge = Judge(backend)
    rows = steering_scores(
        judge, "optimism", "Hope", None, ["Q1", "Q2"], ["fine answer", "ZEBRA answer " + "x" * 3000], progress=False
    )
    assert rows == [(35.0, 80.0), (35.0, 50.0)]
    assert backend.batches == [6]
    no_relevance = steering_scores(
        Judge(ScriptedBackend(answer=answer)), "optimism", "Hope", None, ["Q2"], ["ZEBRA"], relevance_check=False,
        progress=False,
    )
    assert no_relevance == [(35.0, 80.0)]


def test_steering_scores_with_custom_eval_prompt_and_truncation():
    seen = []

    def answer(messages):
        seen.append(messages)
        return {"55": 0.0}

    judge = Judge(ScriptedBackend(answer=answer))
    long_answer = "y" * 2500
    rows = steering_scores(
        judge, "t", "d", "Judge {answer} for {question}; {trait}", ["Q{"], [long_answer], progress=False
    )
    assert rows == [(55.0, 55.0)]
    custom = [m for m in seen if m[0]["content"].startswith("Judge ")][0]
    assert custom[0]["content"] == f"Judge {'y' * 2000} for Q{{; {{trait}}"
    with pytest.raises(ValueError, match="answer"):
        steering_scores(judge, "t", "d", "no placeholder", ["q"], ["a"], progress=False)


# ---- settings ----------------------------------------------------------------------------------


def test_settings_parse_from_params_and_local_needs_a_model(tmp_path):
    from trait_interp.core.config import from_mapping

    settings = from_mapping(
        JudgeSettings,
        {"backend": "local", "local_model": {"path": str(tmp_path / "nope"), "dtype": "float32"}},
        "params.yaml:judge",
    )
    assert settings.local_model is not None and settings.local_model.dtype == "float32"
    with pytest.raises(UserInputError, match="judge.local_model.path: model folder .* does not exist"):
        make_backend(settings, "params.yaml:judge")
    with pytest.raises(UserInputError, match="no local_model"):
        make_backend(JudgeSettings(backend="local"), "params.yaml:judge")
    with pytest.raises(UserInputError, match="unknown key"):
        from_mapping(JudgeSettings, {"local_model": {"pathh": "x"}}, "params.yaml:judge")


def test_settings_openai_without_key_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    with pytest.raises(UserInputError, match="OPENAI_API_KEY is not set"):
        make_backend(JudgeSettings(backend="openai"), "params.yaml:judge")
    Path(".env").write_text("OTHER=1\nOPENAI_API_KEY='sk-test'\n")
    backend = make_backend(JudgeSettings(backend="openai", model="gpt-4.1-mini"), "params.yaml:judge")
    assert backend.identity == "openai:gpt-4.1-mini"
