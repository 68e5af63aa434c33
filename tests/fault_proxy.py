"""A fault-injecting HTTP proxy on 127.0.0.1, in front of a real completions server.

Most requests are forwarded as they are; a fraction (``rate``) is answered by the
proxy itself with a fault instead, never reaching the server:

=================  ===========================================================
``429``            429 without Retry-After
``429-retry``      429 with ``Retry-After: 1``
``500``            500 in the API's error shape
``502``            502 with an HTML body, as a gateway says it
``503``            503 with ``Retry-After: 1``
``drop``           the connection closed without an answer
``timeout``        no answer for ``sleep_s`` (longer than the client's timeout), then closed
``truncated``      200 and the first half of a well-formed JSON answer
``malformed``      200 and a body that is not JSON
``400``            400 invalid_request_error (not transient; only through ``always``)
=================  ===========================================================

Fates are deterministic from ``seed``: the n-th time the proxy sees a given body, a
``random.Random`` seeded with (seed, the body's digest, n) decides, so the same run
meets the same faults whatever order concurrent requests arrive in. A body meets at
most ``max_faults_per_body`` faults (then it goes through), never the same kind twice,
so a client that retries each transient fault a bounded number of times finishes.
``always`` maps a prompt to a kind that every request carrying it gets: a fault
that is not transient.

The proxy counts what it did: ``faults`` per kind, ``seen`` and ``forwarded`` per
distinct body (its digest), and ``upstream_questions``, each (request settings,
prompt) the server was asked, in order.

>>> proxy = FaultProxy("http://127.0.0.1:9/v1", rate=0.5, seed=1)
>>> [proxy.fate(b'{"prompt": "hi"}', n) for n in range(3)] == [proxy.fate(b'{"prompt": "hi"}', n) for n in range(3)]
True
>>> sorted(set(proxy.fate(str(i).encode(), 0) for i in range(400)) - {None}) == sorted(TRANSIENT)
True
>>> proxy.close()
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

__all__ = ["FaultProxy", "TRANSIENT"]

#: The faults drawn at random: each is one a client should retry.
TRANSIENT = ("429", "429-retry", "500", "502", "503", "drop", "timeout", "truncated", "malformed")


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def _prompts(body: bytes) -> list[str]:
    try:
        p = json.loads(body).get("prompt")
    except (ValueError, AttributeError):
        return []
    return [p] if isinstance(p, str) else [x for x in p or [] if isinstance(x, str)]


def _questions(body: bytes) -> list[tuple[str, str]]:
    """(the request's settings but its prompt, prompt) for each prompt of a completions body."""
    try:
        d = json.loads(body)
    except ValueError:
        return []
    if not isinstance(d, dict):
        return []
    settings = json.dumps({k: v for k, v in d.items() if k != "prompt"}, sort_keys=True)
    return [(settings, p) for p in _prompts(body)]


class FaultProxy:
    """Forward ``{url}/...`` to ``upstream`` (a base URL ending in /v1), injecting faults.

    ``url`` is the proxy's own base (``http://127.0.0.1:PORT/v1``). Use as a context
    manager or call :meth:`close`. Counters are guarded by ``lock``.
    """

    def __init__(self, upstream: str, *, rate: float = 0.1, seed: int = 0, sleep_s: float = 5.0,
                 max_faults_per_body: int = 2, always: dict[str, str] | None = None):
        self.upstream = upstream.rstrip("/")
        self.rate = rate
        self.seed = seed
        self.sleep_s = sleep_s
        self.max_faults_per_body = max_faults_per_body
        self.always = dict(always or {})
        self.lock = threading.Lock()
        self.faults: collections.Counter[str] = collections.Counter()
        self.seen: collections.Counter[str] = collections.Counter()
        self.forwarded: collections.Counter[str] = collections.Counter()
        self.body_faults: dict[str, list[str]] = collections.defaultdict(list)
        self.prompts_of: dict[str, list[str]] = {}
        self.upstream_questions: list[tuple[str, str]] = []
        self.statuses: collections.Counter[int] = collections.Counter()  # what the server itself answered
        self.in_flight = 0  # requests being handled now
        self._http = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=64))
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                      ctype: str = "application/json") -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                with proxy.lock:
                    proxy.in_flight += 1
                try:
                    proxy._serve(self, raw)
                except OSError:  # BrokenPipe, ConnectionReset: the client gave up, nobody to answer
                    self.close_connection = True
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1

            do_GET = _handle
            do_POST = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    # -- fates -------------------------------------------------------------------------------
    def fate(self, body: bytes, n: int, earlier: list[str] | None = None) -> str | None:
        """The fault for the n-th sight of ``body`` (None: forward it), given its earlier faults."""
        earlier = earlier or []
        for prompt in _prompts(body):
            if prompt in self.always:
                return self.always[prompt]
        if not body or len(earlier) >= self.max_faults_per_body:
            return None
        rng = random.Random(f"{self.seed}:{_digest(body)}:{n}")
        if rng.random() >= self.rate:
            return None
        kinds = [k for k in TRANSIENT if k not in earlier]
        return rng.choice(kinds) if kinds else None

    def _serve(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        d = _digest(raw)
        with self.lock:
            n = self.seen[d]
            self.seen[d] += 1
            self.prompts_of.setdefault(d, _prompts(raw))
            kind = self.fate(raw, n, self.body_faults[d]) if h.command == "POST" else None
            if kind is not None:
                self.faults[kind] += 1
                self.body_faults[d].append(kind)
            else:
                self.forwarded[d] += 1
                self.upstream_questions += _questions(raw)
        if kind is None:
            headers = {k: v for k, v in h.headers.items() if k.lower() in ("authorization", "content-type")}
            r = self._http.request(h.command, self.upstream + h.path.removeprefix("/v1"), content=raw, headers=headers)
            with self.lock:
                self.statuses[r.status_code] += 1
            keep = {k: v for k, v in r.headers.items() if k.lower() in ("retry-after", "retry-after-ms")}
            h._send(r.status_code, r.content, keep, r.headers.get("content-type", "application/json"))
            return
        self._inject(h, kind, raw)

    def _inject(self, h: Any, kind: str, raw: bytes) -> None:
        def error(status: int, message: str, type_: str = "server_error") -> bytes:
            return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": None}}).encode()

        if kind == "429":
            h._send(429, error(429, "injected: rate limit reached", "rate_limit_error"))
        elif kind == "429-retry":
            h._send(429, error(429, "injected: rate limit reached", "rate_limit_error"), {"Retry-After": "1"})
        elif kind == "500":
            h._send(500, error(500, "injected: the server failed to answer this request"))
        elif kind == "502":
            h._send(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", ctype="text/html")
        elif kind == "503":
            h._send(503, error(503, "injected: the server is busy"), {"Retry-After": "1"})
        elif kind == "400":
            h._send(400, error(400, "injected: this request is invalid", "invalid_request_error"))
        elif kind in ("drop", "timeout"):
            if kind == "timeout":
                time.sleep(self.sleep_s)
            h.close_connection = True
            try:
                h.connection.shutdown(2)  # SHUT_RDWR: the client reads EOF with no answer
            except OSError:
                pass
        elif kind in ("truncated", "malformed"):
            prompts = _prompts(raw) or [""]
            choices = [{"index": i, "text": " x", "finish_reason": "length",
                        "logprobs": {"tokens": [" x"], "token_logprobs": [-0.5], "top_logprobs": [{" x": -0.5}],
                                     "text_offset": [0]}} for i in range(len(prompts))]
            whole = json.dumps({"id": "cmpl-injected", "object": "text_completion", "model": "m",
                                "choices": choices}).encode()
            body = whole[: len(whole) // 2] if kind == "truncated" else b"<!doctype html>" + whole[1:]
            h._send(200, body)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")

    # -- counts ------------------------------------------------------------------------------
    def questions_asked(self) -> int:
        """Questions (request settings, prompt) the server was asked, repeats included."""
        with self.lock:
            return len(self.upstream_questions)

    def quiet(self, idle_s: float = 1.0, limit_s: float = 60.0) -> None:
        """Wait until nothing is in flight and no request arrived for ``idle_s`` seconds."""
        deadline = time.monotonic() + limit_s
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self.lock:
                total, busy = sum(self.seen.values()), self.in_flight
            if total != last or busy:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= idle_s:
                return
            time.sleep(0.05)
        raise TimeoutError(f"the proxy was still busy after {limit_s:g} s")

    def reset_counts(self) -> None:
        """Forget what was seen and done so far (the fates of bodies seen again start over)."""
        with self.lock:
            for c in (self.faults, self.seen, self.forwarded, self.statuses):
                c.clear()
            self.body_faults.clear()
            self.prompts_of.clear()
            self.upstream_questions = []

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._http.close()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
