"""The OpenAI backend with the real ``openai`` client against a local stub server (no network)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from tests.openai_stub import serve_stub, stub_top_logprobs
from trait_interp.core.errors import UserInputError
from trait_interp.judge.backends import merge_top_logprobs
from trait_interp.judge.cache import JudgeCache
from trait_interp.judge.judge import Judge, JudgeRequest
from trait_interp.judge.openai_backend import (
    OpenAIBackend,
    openai_backend_from_env,
    retry_after_s,
)
from trait_interp.judge.scoring import TRAIT_MIN_MASS, aggregate_logprob_score
from trait_interp.judge.templates import STEERING_TRAIT

REPO = Path(__file__).resolve().parents[2]


def backend(stub, **kwargs) -> OpenAIBackend:
    settings = {"max_concurrency": 4, "max_retries": 4, "timeout_s": 0.5, "backoff_s": 0.02, **kwargs}
    return OpenAIBackend("gpt-test", "sk-dummy", stub.base_url, **settings)


def requests(n: int, marker: str = "") -> list[JudgeRequest]:
    return [
        JudgeRequest.of(
            STEERING_TRAIT,
            {"trait_name": "optimism", "definition": "Hope {x}", "question": f"Q{i}{marker}", "answer": f"A{i}"},
            TRAIT_MIN_MASS,
        )
        for i in range(n)
    ]


def expected(request: JudgeRequest) -> float | None:
    """The score computed independently from the stub's distribution for these exact messages."""
    return aggregate_logprob_score(merge_top_logprobs(stub_top_logprobs(list(request.messages))), request.min_mass)


def test_scores_match_the_stub_distribution_and_the_request_is_as_specified():
    reqs = requests(6)
    with serve_stub() as stub:
        judge = Judge(backend(stub))
        scores = judge.score_many(reqs, progress=False)
        bodies = list(stub.bodies)
    assert [s.score for s in scores] == pytest.approx([expected(r) for r in reqs], abs=5e-4)  # scores are rounded to 3 decimals
    assert all(s.score is not None and not s.failed and not s.cached for s in scores)
    assert len({s.score for s in scores}) > 1  # the stub really answers per request
    body = next(b for b in bodies if b["messages"] == [dict(m) for m in reqs[0].messages])
    assert body["model"] == "gpt-test"
    assert (body["max_tokens"], body["temperature"], body["logprobs"], body["top_logprobs"], body["seed"]) == (
        1, 0, True, 20, 42,
    )
    assert judge.stats.calls == 6 and judge.stats.retries == 0
    assert judge.stats.completion_tokens == 6 and judge.stats.prompt_tokens > 6
    assert judge.stats.estimated_cost_usd(0.4, 1.6) == pytest.approx(
        (judge.stats.prompt_tokens * 0.4 + 6 * 1.6) / 1e6
    )


def test_rate_limit_honours_retry_after():
    with serve_stub(faults=["rate_limit"]) as stub:
        start = time.monotonic()
        (reply,) = backend(stub).top_logprobs_many([requests(1)[0].messages], progress=False)
        elapsed = time.monotonic() - start
        arrivals = list(stub.arrivals)
    assert reply.top_logprobs is not None and reply.retries == 1
    assert len(arrivals) == 2 and arrivals[1][0] - arrivals[0][0] >= 1.0  # Retry-After: 1
    assert elapsed >= 1.0


def test_server_errors_are_retried():
    with serve_stub(faults=["server_error", "server_error"]) as stub:
        judge = Judge(backend(stub))
        (score,) = judge.score_many(requests(1), progress=False)
        assert stub.requests == 3
    assert score.score == pytest.approx(expected(requests(1)[0]))
    assert judge.stats.retries == 2 and judge.stats.calls == 1 and judge.stats.failures == 0


def test_a_hanging_request_times_out_and_is_retried():
    with serve_stub(faults=["hang"], hang_s=1.5) as stub:
        start = time.monotonic()
        (reply,) = backend(stub, timeout_s=0.3).top_logprobs_many([requests(1)[0].messages], progress=False)
        elapsed = time.monotonic() - start
        assert stub.requests == 2
    assert reply.top_logprobs is not None and reply.retries == 1
    assert elapsed < 1.4  # it did not wait for the hung answer


def test_no_logprobs_is_a_failure_and_not_cached():
    cache = JudgeCache.in_memory()
    with serve_stub(faults=["no_logprobs"]) as stub:
        judge = Judge(backend(stub), cache)
        (score,) = judge.score_many(requests(1), progress=False)
        assert stub.requests == 1  # a real answer: not retried within the run
    assert score.score is None and score.failed
    assert judge.stats.failures == 1 and judge.stats.none_scores == 0 and len(cache) == 0
    with serve_stub() as stub:  # the next run asks again
        (score,) = Judge(backend(stub), cache).score_many(requests(1), progress=False)
        assert stub.requests == 1 and score.score is not None


def test_low_mass_is_none_and_cached():
    cache = JudgeCache.in_memory()
    with serve_stub(faults=["low_mass"]) as stub:
        judge = Judge(backend(stub), cache)
        (score,) = judge.score_many(requests(1), progress=False)
    assert score.score is None and not score.failed
    assert judge.stats.none_scores == 1 and judge.stats.failures == 0 and len(cache) == 1
    with serve_stub() as stub:
        (again,) = Judge(backend(stub), cache).score_many(requests(1), progress=False)
        assert stub.requests == 0 and again.cached and again.score is None


def test_other_client_errors_are_not_retried():
    with serve_stub(faults=["bad_request"]) as stub:
        (reply,) = backend(stub).top_logprobs_many([requests(1)[0].messages], progress=False)
        assert stub.requests == 1
    assert reply.top_logprobs is None and reply.error is not None and "400" in reply.error


def test_a_wrong_key_stops_the_run_with_a_user_error():
    with serve_stub(permanent={"Q": "unauthorized"}) as stub:
        with pytest.raises(UserInputError, match="HTTP 401.*check OPENAI_API_KEY"):
            Judge(backend(stub)).score_many(requests(5), progress=False)
        assert stub.requests <= 5  # not retried


def test_permanent_failure_gives_none_after_max_retries():
    reqs = requests(3) + requests(1, marker="DOOMED")
    with serve_stub(permanent={"DOOMED": "server_error"}) as stub:
        judge = Judge(backend(stub, max_retries=2))
        scores = judge.score_many(reqs, progress=False)
        doomed_attempts = sum("DOOMED" in json.dumps(b["messages"]) for b in stub.bodies)
    assert doomed_attempts == 3  # 1 + max_retries
    assert [s.failed for s in scores] == [False, False, False, True] and scores[3].score is None
    assert judge.stats.failures == 1 and judge.stats.retries == 2 and judge.stats.calls == 4
    assert len(judge.cache) == 3


@pytest.mark.parametrize("limit", [1, 3])
def test_concurrency_is_bounded(limit):
    with serve_stub(latency_s=0.05) as stub:
        Judge(backend(stub, max_concurrency=limit)).score_many(requests(4 * limit), progress=False)
        assert stub.max_in_flight == limit


def test_works_when_called_from_inside_a_running_event_loop():
    """A notebook already runs an event loop; the sync API must still work there."""
    import asyncio

    reqs = requests(3)
    with serve_stub() as stub:

        async def inside_a_loop():
            return Judge(backend(stub)).score_many(reqs, progress=False)

        scores = asyncio.run(inside_a_loop())
    assert [s.score for s in scores] == pytest.approx([expected(r) for r in reqs], abs=5e-4)  # scores are rounded to 3 decimals


def test_missing_api_key_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserInputError, match="OPENAI_API_KEY is not set; export it or put it in .env"):
        openai_backend_from_env("gpt-4.1-mini", env_file=tmp_path / ".env")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    assert openai_backend_from_env("gpt-4.1-mini", base_url="http://h/v1").identity == "openai:gpt-4.1-mini"


def test_retry_after_parsing():
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after": "0.25"}) == 0.25
    assert retry_after_s({"retry-after-ms": "300", "retry-after": "9"}) == 0.3
    assert retry_after_s({"retry-after": "3600"}) == 60.0
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None
    in_five = retry_after_s({"retry-after": formatdate(time.time() + 5, usegmt=True)})
    assert in_five is not None and 3.0 <= in_five <= 5.0


def test_an_error_in_on_reply_stops_the_run_and_keeps_what_was_cached(tmp_path):
    class FullDisk(JudgeCache):
        def put(self, entry):
            if len(self) == 3:
                raise OSError("disk full")
            super().put(entry)

    path = tmp_path / "cache.jsonl"
    with serve_stub(latency_s=0.02) as stub:
        with pytest.raises(OSError, match="disk full"):
            Judge(backend(stub, max_concurrency=2), FullDisk(path, {})).score_many(requests(20), progress=False)
        assert len(JudgeCache.open(path)) == 3
        before = stub.requests
        judge = Judge(backend(stub), JudgeCache.open(path))
        judge.score_many(requests(20), progress=False)
        assert judge.stats.calls == 17 and stub.requests - before == 17


KILLED_RUN = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from tests.judge.test_openai_backend import requests
    from trait_interp.judge.cache import JudgeCache
    from trait_interp.judge.judge import Judge
    from trait_interp.judge.openai_backend import OpenAIBackend

    backend = OpenAIBackend("gpt-test", "sk-dummy", {base_url!r}, max_concurrency=2, timeout_s=5.0)
    Judge(backend, JudgeCache.open({cache!r})).score_many(requests(30), progress=False)
    print("finished")
    """
)


def test_a_killed_run_keeps_its_answers_and_the_rerun_asks_only_for_the_rest(tmp_path):
    cache_path = tmp_path / "judge_cache.jsonl"
    with serve_stub(latency_s=0.15) as stub:
        script = KILLED_RUN.format(tests=str(REPO), base_url=stub.base_url, cache=str(cache_path))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE)
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                if cache_path.exists() and len(cache_path.read_bytes().splitlines()) >= 6:
                    break
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert b"finished" not in out and proc.returncode == -signal.SIGKILL
        kept = len(JudgeCache.open(cache_path))
        assert 6 <= kept < 30
        before = stub.requests
        judge = Judge(backend(stub, max_concurrency=10), JudgeCache.open(cache_path))
        scores = judge.score_many(requests(30), progress=False)
        assert judge.stats.calls == 30 - kept and stub.requests - before == 30 - kept
        assert judge.stats.cache_hits == kept
    assert [s.score for s in scores] == pytest.approx([expected(r) for r in requests(30)], abs=5e-4)
