"""Judge backend for any OpenAI-compatible chat API (OpenAI itself, vLLM, ...).

Requests run concurrently on one event loop, bounded by a semaphore. The client's own retries
are off (``max_retries=0``) so that retrying is explicit here:

- 429: wait for ``Retry-After`` (``retry-after-ms`` first, then ``retry-after`` as seconds or
  an HTTP date), capped at ``MAX_RETRY_AFTER_S``; exponential backoff if the header is absent;
- 408, 409, 5xx, timeouts, connection errors: exponential backoff ``backoff_s * 2**attempt``;
- 401, 403, 404 and a 429 ``insufficient_quota``: a configuration problem that every request
  would hit, so the whole run stops with a UserInputError (answers already cached are kept);
- any other 4xx (e.g. 400 for one over-long request): no retry, that request fails.

The wait happens outside the semaphore, so other requests keep the slots busy meanwhile. A
request that still fails after ``max_retries`` retries gets a ``Reply`` with an error (score
None); a reply without logprobs likewise. Neither is cached, so a later run asks again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import openai
from tqdm.auto import tqdm

from trait_interp.core.errors import UserInputError
from trait_interp.judge.backends import TOP_LOGPROBS, OnReply, Reply, merge_top_logprobs
from trait_interp.judge.cache import REQUEST_SETTINGS
from trait_interp.judge.templates import Messages

MAX_RETRY_AFTER_S = 60.0
RETRY_STATUS = frozenset({408, 409, 429})  # and every 5xx; as the openai client's own retry policy
FATAL_STATUS = frozenset({401, 403, 404})  # wrong key, no access, unknown model: every request would fail


class OpenAIBackend:
    def __init__(
        self,
        model: str,
        api_key: str,
        base_url: str | None = None,
        max_concurrency: int = 20,
        max_retries: int = 4,
        timeout_s: float = 30.0,
        backoff_s: float = 0.5,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.model = model
        self.base_url = base_url
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._api_key = api_key

    @property
    def identity(self) -> str:
        """``openai:<model>``: the served model name identifies the judge, not the server's URL.

        So a vLLM server that moves to another port keeps its cache; serving different weights
        under the same name would reuse stale answers (give them another name).
        """
        return f"openai:{self.model}"

    def top_logprobs_many(
        self, messages: Sequence[Messages], progress: bool, on_reply: OnReply | None = None
    ) -> list[Reply]:
        if not messages:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no event loop in this thread
            return asyncio.run(self._run(messages, progress, on_reply))
        # called from inside a running loop (a notebook): run ours on a worker thread
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self._run(messages, progress, on_reply)).result()

    async def _run(self, messages: Sequence[Messages], progress: bool, on_reply: OnReply | None) -> list[Reply]:
        client = openai.AsyncOpenAI(
            api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s
        )
        semaphore = asyncio.Semaphore(self.max_concurrency)
        replies: list[Reply | None] = [None] * len(messages)
        with tqdm(total=len(messages), desc="judge", unit="req", disable=not progress) as bar:

            async def one(index: int) -> None:
                reply = await self._request(client, semaphore, messages[index])
                replies[index] = reply
                if on_reply is not None:
                    on_reply(index, reply)
                bar.update(1)

            try:
                async with asyncio.TaskGroup() as group:
                    for index in range(len(messages)):
                        group.create_task(one(index))
            except BaseExceptionGroup as failed:
                # only on_reply (e.g. a full disk in the cache) or a bug gets here; the other
                # requests were cancelled, and what on_reply had already received is kept
                raise failed.exceptions[0] from None
            finally:
                await client.close()
        assert all(r is not None for r in replies)
        return [r for r in replies if r is not None]

    async def _request(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, messages: Messages) -> Reply:
        retries = 0
        while True:
            async with semaphore:
                try:
                    completion = await client.chat.completions.create(
                        model=self.model,
                        messages=[dict(m) for m in messages],  # type: ignore[misc]
                        **REQUEST_SETTINGS,  # type: ignore[arg-type]
                    )
                    return _to_reply(completion, retries)
                except openai.APIStatusError as err:
                    status = err.status_code
                    if status in FATAL_STATUS or getattr(err, "code", None) == "insufficient_quota":
                        raise UserInputError(
                            f"the judge API ({self.base_url or 'api.openai.com'}, model {self.model}) answered "
                            f"HTTP {status}: {_short(err)}; check OPENAI_API_KEY, the account's quota and "
                            "judge.model / judge.base_url"
                        ) from None
                    if status == 429:
                        delay = retry_after_s(err.response.headers)
                        if delay is None:
                            delay = self.backoff_s * 2**retries
                    elif status in RETRY_STATUS or status >= 500:
                        delay = self.backoff_s * 2**retries
                    else:  # e.g. 400 for one over-long request: that request fails, the rest go on
                        return Reply(None, f"HTTP {status}: {_short(err)}", retries=retries)
                    error = f"HTTP {status}"
                except openai.APIConnectionError as err:  # includes APITimeoutError
                    delay = self.backoff_s * 2**retries
                    error = "timeout" if isinstance(err, openai.APITimeoutError) else f"connection error: {_short(err)}"
                except openai.OpenAIError as err:  # e.g. an unparseable body: not worth retrying
                    return Reply(None, f"{type(err).__name__}: {_short(err)}", retries=retries)
            if retries >= self.max_retries:
                return Reply(None, f"{error} after {retries} retries", retries=retries)
            retries += 1
            await asyncio.sleep(delay)


def _to_reply(completion: object, retries: int) -> Reply:
    usage = getattr(completion, "usage", None)
    prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    choices = getattr(completion, "choices", None) or []
    logprobs = getattr(choices[0], "logprobs", None) if choices else None
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    top = getattr(content[0], "top_logprobs", None) if content else None
    if not top:
        return Reply(None, "no logprobs", prompt_tokens, completion_tokens, retries)
    merged = merge_top_logprobs((entry.token, entry.logprob) for entry in top[:TOP_LOGPROBS])
    return Reply(merged, None, prompt_tokens, completion_tokens, retries)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date), capped."""
    value: float | None = None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = None
    if value is None:
        raw = headers.get("retry-after")
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                return None
            value = when.timestamp() - time.time()
    return min(max(value, 0.0), MAX_RETRY_AFTER_S)


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 200 else text[:200] + "..."


def read_api_key(env_file: Path | None = Path(".env")) -> str | None:
    """``OPENAI_API_KEY`` from the environment, else from a ``KEY=value`` line of ``env_file``.

    Only this one key is read from the file; nothing is exported.
    """
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if key:
        return key
    if env_file is None or not Path(env_file).is_file():
        return None
    for line in Path(env_file).read_text(encoding="utf-8-sig").splitlines():
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and name.strip() == "OPENAI_API_KEY":
            value = value.strip().strip("'\"")
            return value or None
    return None


def openai_backend_from_env(
    model: str,
    base_url: str | None = None,
    max_concurrency: int = 20,
    max_retries: int = 4,
    timeout_s: float = 30.0,
    env_file: Path | None = Path(".env"),
) -> OpenAIBackend:
    """An ``OpenAIBackend`` with the key from the environment; call it before loading any model."""
    api_key = read_api_key(env_file)
    if api_key is None:
        raise UserInputError(
            "judge.backend is openai but OPENAI_API_KEY is not set; export it or put it in .env "
            "(OPENAI_API_KEY=...; any non-empty value for a local OpenAI-compatible server), "
            "or set judge.backend: local"
        )
    return OpenAIBackend(model, api_key, base_url, max_concurrency, max_retries, timeout_s)
