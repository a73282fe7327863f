"""A local OpenAI-compatible chat-completions server for the judge's tests and benchmark.

``serve_stub()`` starts a ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) in a daemon thread
and answers ``POST /v1/chat/completions`` with a valid ``chat.completion`` whose first token has
20 top logprobs. The distribution is a deterministic function of the request's messages
(``stub_top_logprobs``), so a test can compute the expected score on its own.

Faults are scripted by arrival order (``faults=["rate_limit", None, ...]``; None = answer
normally), or made permanent for every request whose messages contain a marker
(``permanent={"MARKER": "server_error"}``):

- ``rate_limit``: 429 with ``Retry-After: <retry_after>`` (1 s by default);
- ``server_error``: 500;
- ``bad_request``: 400 (must not be retried);
- ``unauthorized``: 401 (a wrong key: stops the run);
- ``hang``: sleep ``hang_s`` (longer than the client timeout), then answer;
- ``no_logprobs``: 200 with ``logprobs: null``;
- ``low_mass``: 200 whose numeric top-20 mass is 0.05.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("rate_limit", "server_error", "bad_request", "unauthorized", "hang", "no_logprobs", "low_mass")

_FILLER_WORDS = ["The", " I", "Score", " The", "I", " score", "**", "\n", " a", "A", ":", " Rating", "Based"]


def stub_top_logprobs(messages: Sequence[Mapping[str, Any]], low_mass: bool = False) -> list[tuple[str, float]]:
    """The 20 (token, logprob) pairs the stub answers for ``messages``; deterministic.

    Normal: a peak at an integer derived from the hash of the messages, with neighbours, the
    peak repeated as " N" (a second token for the same integer), an out-of-range "101" and word
    tokens; numeric in-range mass 0.86. ``low_mass``: in-range numeric mass 0.05.
    """
    digest = hashlib.sha256(json.dumps(list(messages), sort_keys=True).encode()).digest()
    center = int.from_bytes(digest[:4], "big") % 101
    pairs: list[tuple[str, float]] = []
    used: set[str] = set()

    def add(token: str, p: float) -> None:
        if token not in used and len(pairs) < 20:
            used.add(token)
            pairs.append((token, math.log(p)))

    if low_mass:
        add("I", 0.55)
        add("The", 0.25)
        add(str(center), 0.03)
        add(" " + str(center), 0.02)
    else:
        add(str(center), 0.35)
        add(" " + str(center), 0.05)
        spread = [(1, 0.12), (-1, 0.12), (2, 0.06), (-2, 0.06), (5, 0.03), (-5, 0.03), (10, 0.02), (-10, 0.02)]
        for offset, p in spread:
            value = center + offset
            if 0 <= value <= 100:
                add(str(value), p)
        add("101", 0.01)
    for word in _FILLER_WORDS:
        add(word, 0.004)
    return pairs


@dataclass
class StubServer:
    base_url: str
    retry_after: str
    hang_s: float
    latency_s: float
    faults: deque[str | None]
    permanent: dict[str, str]
    bodies: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[tuple[float, str | None]] = field(default_factory=list)  # (monotonic time, fault)
    max_in_flight: int = 0
    _in_flight: int = 0
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        """Requests received so far (every attempt, retries included)."""
        with self._lock:
            return self._count

    def _arrive(self, body: dict[str, Any]) -> str | None:
        text = json.dumps(body.get("messages", []))
        with self._lock:
            self._count += 1
            self.bodies.append(body)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            fault = next((f for marker, f in self.permanent.items() if marker in text), None)
            if fault is None and self.faults:
                fault = self.faults.popleft()
            self.arrivals.append((time.monotonic(), fault))
            return fault

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


def _completion(body: dict[str, Any], low_mass: bool, with_logprobs: bool, serial: int) -> dict[str, Any]:
    messages = body.get("messages", [])
    pairs = stub_top_logprobs(messages, low_mass=low_mass)
    top = max(pairs, key=lambda pair: pair[1])
    prompt_tokens = max(1, len(json.dumps(messages)) // 4)
    logprobs = None
    if with_logprobs:
        entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in pairs]
        logprobs = {"content": [{**entries[pairs.index(top)], "top_logprobs": entries}], "refusal": None}
    return {
        "id": f"chatcmpl-stub-{serial}",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "stub"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": top[0], "refusal": None},
                "logprobs": logprobs,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
    }


def _handler(stub: StubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body in two writes meet delayed ACKs (+40 ms)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                return
            fault = stub._arrive(body)
            try:
                if stub.latency_s:
                    time.sleep(stub.latency_s)
                if fault == "rate_limit":
                    error = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
                    self._send(429, error, {"Retry-After": stub.retry_after})
                elif fault == "server_error":
                    self._send(500, {"error": {"message": "internal error", "type": "server_error"}})
                elif fault == "unauthorized":
                    self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                               "code": "invalid_api_key"}})
                elif fault == "bad_request":
                    self._send(400, {"error": {"message": "bad request", "type": "invalid_request_error"}})
                else:
                    if fault == "hang":
                        time.sleep(stub.hang_s)
                    completion = _completion(body, fault == "low_mass", fault != "no_logprobs", stub.requests)
                    self._send(200, completion)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout) before we answered
            finally:
                stub._leave()

        def _send(self, status: int, payload: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many concurrent connects must not overflow the listen backlog


@contextmanager
def serve_stub(
    latency_s: float = 0.0,
    faults: Sequence[str | None] = (),
    permanent: Mapping[str, str] | None = None,
    retry_after: str = "1",
    hang_s: float = 1.5,
) -> Iterator[StubServer]:
    """Run the stub for the duration of the ``with`` block."""
    for fault in [*faults, *(permanent or {}).values()]:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown stub fault {fault!r}; available: {', '.join(FAULTS)}")
    server = _Server(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    stub = StubServer(
        base_url=f"http://127.0.0.1:{port}/v1",
        retry_after=retry_after,
        hang_s=hang_s,
        latency_s=latency_s,
        faults=deque(faults),
        permanent=dict(permanent or {}),
    )
    server.RequestHandlerClass = _handler(stub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
