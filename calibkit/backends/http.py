"""The HTTP backend: any OpenAI-compatible /completions endpoint, the ACS API first.

The two questions of the seam become completions requests: top-k is
``max_tokens=1, logprobs=k``; a continuation's log-probabilities come from echoing
prompt + continuation (``echo=True, logprobs=0``) and reading the continuation's span.

Layers, bottom up: one call with retries (``_request``), a pack of prompts in one
request with its choices routed back by index (``_send_pack``), many packs with a
bounded number in flight spread over replicas (``_run_packs``), and
:meth:`Client.complete`, the wire-level method. The connections to the base URLs,
kept alive, serve the client's whole life on an event loop of its own, on one
background thread, so that the synchronous API also works inside Jupyter's running
loop; :meth:`Client.close` or ``with`` ends both. They are calibkit's own HTTP/1.1
connections (a fifth of httpx's CPU per request, measured: see "the wire" below), or
httpx's, small connection pools for each base URL, where a proxy is set in the
environment, a base URL holds a user:password, a query or a fragment, or
``transport=`` is given.

How many requests are in flight is up to the client's :class:`AdaptiveLimiter`: it
starts at ``max_in_flight``, is halved when the server shows it is overloaded (a
request timed out, or a 429, 503 or 504 answer) and grows back by one after a run of
answers, so that the client paces itself to what the server sustains. A request of
several prompts that times out is not sent again whole: its prompts go as two
requests of half as many, down to one, so that no single request asks more than the
server answers within ``timeout``. Each cut and split is logged (logger
``calibkit.http``, level warning).

Retries follow openai-python: connection errors, timeouts, 408, 409, 429 and 5xx are
retried with exponential backoff and jitter (0.5 s doubling to at most 8 s), and a
``retry-after-ms`` or ``retry-after`` header of up to 60 s is honoured; 400, 401,
403, 404 and 422 never are, and a 500 only once unless its message says it is
transient. A retry waits for a place under the limiter like any request. When the
tries run out, the error says what happened: "could not reach" a server that
refused or never accepted the connection, "timed out waiting for" one that was
reached but did not answer within ``timeout``.

A 2xx answer whose body is not valid JSON (cut short by a proxy, an empty body, bytes
that are not UTF-8) is as transient as a dropped connection: it is retried like one,
within ``max_retries``, and the final error shows what came back. A body that is
valid JSON but breaks the protocol (a field of the wrong type, lists of different
lengths, choices that do not match the prompts, more top-k entries than asked for) is
not retried: :class:`MalformedResponseError` says what was wrong. What real servers
send is accepted: ``top_logprobs`` with a (k+1)-th entry (the sampled token), two
token ids whose strings collide as one JSON key (their probabilities added), and
OpenAI's ``"bytes:\\xe2\\x80"`` strings for tokens that are not whole UTF-8
characters, which are kept as opaque tokens of their own (no form equals one, so in
top-k they only count towards the mass outside the forms); echo spans are read from
``text_offset`` alone, so that such a token's string length does not matter.

Example
-------
>>> import calibkit as ck
>>> with ck.Client.from_env(model="llama-8b") as api:      # ACS_API_BASE, ACS_API_KEY  # doctest: +SKIP
...     api.top_k(["The capital of France is"], k=5)
>>> vllm = ck.Client(["http://gpu1:8000/v1", "http://gpu2:8000/v1"], model="meta-llama/Llama-3.1-8B",
...                  logprobs_cap=20)                                           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import email.utils
import itertools
import json
import logging
import math
import os
import queue
import random
import re
import threading
import time
import urllib.request
import weakref
from typing import Any, AsyncIterator, Callable, Coroutine, Sequence, TypeVar

import httpx

from ..api import ACS_LOGPROBS_CAP, APIError, CompletionRequest, CompletionResponse, Logprobs, Usage
from ..cache import ResponseCache
from .base import MISSING, Backend, Continuation, IncompleteAnswers, TopK, check_int

T = TypeVar("T")

__all__ = ["AdaptiveLimiter", "Client", "MalformedResponseError", "echo_span"]

log = logging.getLogger("calibkit.http")

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
_NEVER_RETRY = {400, 401, 403, 404, 422}
_TRANSIENT = re.compile(r"transient|temporar|overload|try again|unavailable|timed? ?out", re.I)
# Answers that say the server has more than it can take: fewer requests in flight.
_OVERLOAD = {429, 503, 504}
# The server was reached and did not answer in time (a ConnectTimeout never reached it).
_SLOW = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)
# The server was reached and the connection broke before an answer.
_DROPPED = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
# Headers that carry credentials: left out of a pickled client, as its api_key is.
_SECRET_HEADERS = {"authorization", "api-key", "x-api-key", "proxy-authorization"}
# Guards the lazy start of a client's loop: two threads that share a client and make
# its first call at once must not start two loops (a coroutine on one would use the
# other's connection pool).
_START_LOCK = threading.Lock()


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asks us to wait, from retry-after-ms or retry-after; None if absent or unreasonable."""
    value: float | None = None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = None
    if value is None and (ra := headers.get("retry-after")) is not None:
        try:
            value = float(ra)
        except ValueError:
            parsed = email.utils.parsedate_tz(ra)
            if parsed is not None:
                value = email.utils.mktime_tz(parsed) - time.time()
    if value is not None and 0 < value <= 60:
        return value
    return None


class MalformedResponseError(APIError, ValueError):
    """A 2xx answer that is not a valid completions response; the message says what was wrong.

    Raised after the retries where the body was not JSON at all (truncated: transient),
    at once where it was JSON that breaks the protocol (no retry would change it).

    >>> raise MalformedResponseError("the server sent 2 choices for 1 prompt")
    Traceback (most recent call last):
    ...
    calibkit.backends.http.MalformedResponseError: the server sent 2 choices for 1 prompt
    """


class _Garbled(Exception):
    """A 2xx body that is not valid JSON (cut short, empty, not UTF-8): retried like a dropped connection."""


def _decode_json(raw: bytes) -> Any:
    """The decoded JSON of a 2xx body; _Garbled where it is not JSON."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _Garbled(str(e)) from e


def _parse_completion(raw: bytes) -> CompletionResponse:
    """A completions body parsed; _Garbled if not JSON, MalformedResponseError if JSON that breaks the protocol."""
    try:
        return CompletionResponse.from_json(raw)
    except APIError:
        raise
    except UnicodeDecodeError as e:
        raise _Garbled(str(e)) from e
    except (ValueError, TypeError) as e:
        if isinstance(e.__cause__, (json.JSONDecodeError, UnicodeDecodeError)):
            raise _Garbled(str(e.__cause__)) from e
        raise MalformedResponseError(f"the server's answer is JSON but not a valid completions response: {e}") from e


def _excerpt(raw: bytes, n: int = 80) -> str:
    """The end of a body, where a cut shows, for an error message."""
    text = raw.decode("utf-8", "replace")
    return repr(text) if len(text) <= n else f"...{text[-n:]!r}"


def echo_span(lp: Logprobs, start: int, end: int) -> tuple[list[str], list[float | None]] | None:
    """The tokens of an echo answer whose text starts in ``[start, end)``, with their logprobs.

    With ``start = len(prompt)`` and ``end = len(prompt + form)`` these are the form's
    tokens. None where no token starts exactly at ``start`` or one straddles it (the
    form's first characters merged into the prompt's last token): then no
    log-probability belongs to the form alone. Token ``i`` covers the text from
    ``text_offset[i]`` to ``text_offset[i + 1]``: its string's length is not used, so
    that an OpenAI ``"bytes:\\xe2\\x80"`` token (part of a character) is placed right.

    >>> lp = Logprobs(["Sentiment:", " pos", "itive"], [None, -1.0, -0.5], [], [0, 10, 14])
    >>> echo_span(lp, 10, 19)
    ([' pos', 'itive'], [-1.0, -0.5])
    >>> echo_span(lp, 12, 19) is None       # " pos|itive": the form starts inside " pos"
    True
    """
    offsets = lp.text_offset
    if len(offsets) != len(lp.tokens):
        raise MalformedResponseError(
            f"echo scoring needs a text_offset for every token; the server sent {len(offsets)} for "
            f"{len(lp.tokens)} tokens"
        )
    if any(b < a for a, b in zip(offsets, offsets[1:])):
        raise MalformedResponseError(f"the server sent text_offset out of order: {offsets}")
    values: list[float | None] = list(lp.token_logprobs) if lp.token_logprobs else [None] * len(lp.tokens)
    toks: list[str] = []
    lps: list[float | None] = []
    at_boundary = False
    for i, (tok, off, v) in enumerate(zip(lp.tokens, offsets, values)):
        stop = offsets[i + 1] if i + 1 < len(offsets) else off + len(tok)
        if off < start < stop:
            return None
        at_boundary = at_boundary or off == start
        if start <= off < end:
            toks.append(tok)
            lps.append(v)
    if not toks or not at_boundary:
        return None
    return toks, lps


class _NotSent(Exception):
    """A request left unsent because another one of the same call failed."""


class _Split(Exception):
    """A request of several prompts timed out: send its prompts as two smaller requests."""


# The fields of a CompletionRequest that requests packed together share: all but the prompt.
_PACKED_ALIKE = tuple(f.name for f in dataclasses.fields(CompletionRequest) if f.name != "prompt")


def _set_kept(kept: list[asyncio.Future[None]]) -> None:
    for f in kept:
        if not f.done():
            f.set_result(None)


def _backoff(retries: int) -> float:
    return min(INITIAL_RETRY_DELAY * 2.0**retries, MAX_RETRY_DELAY) * (1 - 0.25 * random.random())


class AdaptiveLimiter:
    """How many requests may be in flight at once, adapted to what the server sustains.

    AIMD, as TCP paces its sending window: ``limit`` starts at ``maximum``; a request
    that meets a sign of overload (a timeout, a 429, 503 or 504) halves it, down to 1; ``limit``
    answers in a row grow it by one, back up to ``maximum``. Requests sent before the
    last cut went out under the old limit: their overload is the same burst and does
    not cut again, nor do their answers count towards growing back.

    A request holds a :class:`Slot` while in flight (``async with limiter.slot() as
    s:``, waiting in arrival order while ``limit`` are out) and reports on it with
    :meth:`Slot.succeeded` or :meth:`Slot.overloaded`. It serves one event loop at a
    time; a pickled copy starts with nothing in flight.

    Attributes: ``limit`` (in flight at most, now), ``maximum``, ``in_flight`` and
    ``backoffs`` (how many times ``limit`` was cut).

    >>> import asyncio
    >>> lim = AdaptiveLimiter(8)
    >>> async def burst_then_calm() -> None:
    ...     async with lim.slot() as a, lim.slot() as b:  # two requests in flight
    ...         a.overloaded()                            # a 503: 8 -> 4
    ...         b.overloaded()                            # the same burst: no second cut
    ...     for _ in range(4):                            # four answers in a row: 4 -> 5
    ...         async with lim.slot() as s:
    ...             s.succeeded()
    >>> asyncio.run(burst_then_calm())
    >>> lim.limit, lim.backoffs, lim.in_flight
    (5, 1, 0)
    """

    def __init__(self, maximum: int):
        check_int("maximum", maximum, 1)
        self.maximum = maximum
        self.limit = maximum
        self.in_flight = 0
        self.backoffs = 0
        self._epoch = 0  # bumped at each cut: which slots were sent under the current limit
        self._streak = 0  # answers in a row since the last change of limit
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def __repr__(self) -> str:
        return f"AdaptiveLimiter(limit={self.limit}, maximum={self.maximum}, in_flight={self.in_flight})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "in_flight": 0, "_waiters": collections.deque()}

    async def acquire(self) -> "Slot":
        """Wait for a place (first come, first served) and take it; :meth:`release` gives it back."""
        if self._waiters or self.in_flight >= self.limit:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # granted just as it was cancelled
                    self.in_flight -= 1
                    self._wake()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                raise
        else:
            self.in_flight += 1
        return Slot(self, self._epoch)

    def release(self, slot: "Slot") -> None:
        """Give a place back (once per :meth:`acquire`)."""
        self.in_flight -= 1
        self._wake()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator["Slot"]:
        """``async with limiter.slot() as s:`` holds a place for the block."""
        s = await self.acquire()
        try:
            yield s
        finally:
            self.release(s)

    def _wake(self) -> None:
        # A place is granted on the waiter's behalf, so that none is taken twice.
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def _succeeded(self, epoch: int) -> None:
        if epoch != self._epoch or self.limit >= self.maximum:
            return
        self._streak += 1
        if self._streak >= self.limit:
            self.limit += 1
            self._streak = 0
            log.debug("up to %d requests in flight again", self.limit)
            self._wake()

    def _overloaded(self, epoch: int) -> bool:
        if epoch != self._epoch or self.limit == 1:
            return False
        self.limit = max(1, self.limit // 2)
        self.backoffs += 1
        self._epoch += 1
        self._streak = 0
        return True


class Slot:
    """A place held under an :class:`AdaptiveLimiter`; report how its request went, once."""

    __slots__ = ("_limiter", "_epoch", "_reported")

    def __init__(self, limiter: AdaptiveLimiter, epoch: int):
        self._limiter = limiter
        self._epoch = epoch
        self._reported = False

    def succeeded(self) -> None:
        """The server answered: counts towards growing the limit back."""
        if not self._reported:
            self._reported = True
            self._limiter._succeeded(self._epoch)

    def overloaded(self) -> bool:
        """The server showed overload: halve the limit, unless this burst did already; True if it was cut."""
        if self._reported:
            return False
        self._reported = True
        return self._limiter._overloaded(self._epoch)


# -- the wire ---------------------------------------------------------------------------------
# Why calibkit speaks HTTP/1.1 itself here, not through httpx (the project's HTTP library,
# which still makes the responses, decodes their bodies, gives the errors and the TLS context,
# and carries every request where this does not serve, see _Http11.serves): measured with
# benchmarks/bench_http.py (4 base URLs, answers after 50 ms, one prompt per request; 2 shared
# cores, the variants back to back, two runs each), client CPU per prompt and throughput at
# 64 in flight:
#   httpx, one AsyncClient (one pool of 64 connections; the client before this one):
#                                                         4.2 ms/prompt, 0.16 of the ideal (one run)
#   httpx, several small AsyncClients of 8 connections (of 4: the same), each request to the
#     one with the fewest in flight (_HttpxPools):       0.64-0.72 ms/prompt, 0.46-0.60 of ideal
#   these connections (_Http11):                          0.13-0.14 ms/prompt, 0.75-0.83 of ideal
#   (no client at all, a bare asyncio loop: 0.04 ms/prompt, 0.94-0.96 of ideal)
# Small pools end the cost of httpcore's pool, a scan of all its connections on every request
# (quadratic in its size); what remains is httpx's own cost per request (at 8 in flight, a pool
# of 8 for each base URL: 0.84-0.89 ms/prompt against 0.22 here), which on the client's one loop thread cut
# the throughput at 64 in flight by a quarter to a half against these connections. So the
# requests go over calibkit's own keep-alive HTTP/1.1 connections where nothing calls for httpx
# (no transport= of the caller's, no proxy in the environment, plain http(s) base URLs); their
# errors are httpx's, so that retries and messages are the same either way.

_KEEPALIVE_S = 5.0  # as httpx: an idle connection older than this is closed, not reused
_DEFAULT_HEADERS = [("accept", b"Accept: */*"), ("connection", b"Connection: keep-alive"),
                    ("user-agent", b"User-Agent: calibkit")]
_DEFAULT_NAMES = {name for name, _ in _DEFAULT_HEADERS}
_DEFAULT_LINES = [line for _, line in _DEFAULT_HEADERS]


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its answer read by :meth:`data_received`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._buf = bytearray()
        self._waiter: asyncio.Future[httpx.Response] | None = None
        self._head: tuple[int, list[tuple[bytes, bytes]], int | None, bool, bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def eof_received(self) -> None:
        self.closed = True  # not to be picked for a request before connection_lost comes

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self._waiter
        if w is not None and not w.done():
            if self._head is not None and self._head[2] is None and not self._head[3]:
                self._finish(bytes(self._buf))  # a body that runs to the end of the connection
            elif self._buf or self._head is not None:
                w.set_exception(httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body"))
            elif exc is not None:
                w.set_exception(httpx.ReadError(str(exc) or type(exc).__name__))
            else:
                w.set_exception(httpx.RemoteProtocolError("Server disconnected without sending a response."))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes) -> asyncio.Future[httpx.Response]:
        assert self.transport is not None
        self._buf.clear()
        self._head = None
        self._waiter = asyncio.get_running_loop().create_future()
        if self.closed or self.transport.is_closing():  # a write would be dropped: no answer would come
            self._waiter.set_exception(httpx.RemoteProtocolError("Server disconnected without sending a response."))
        else:
            self.transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiter is None or self._waiter.done():
            return
        try:
            self._parse()
        except (ValueError, IndexError) as e:
            self._waiter.set_exception(httpx.RemoteProtocolError(f"malformed HTTP answer: {e}"))
            self.close()

    def _parse(self) -> None:
        buf = self._buf
        while self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            status = int(lines[0].split(b" ", 2)[1])
            headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(b":") for line in lines[1:])]
            if 100 <= status < 200:  # an interim answer: the real one follows
                continue
            length: int | None = None
            chunked = False
            keep = not lines[0].startswith(b"HTTP/1.0")
            for k, v in headers:
                name = k.lower()
                if name == b"content-length":
                    length = int(v)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in v.lower()
                elif name == b"connection":
                    keep = v.lower() != b"close" if keep else v.lower() == b"keep-alive"
            self._head = (status, headers, 0 if status in (204, 304) else length, chunked, keep)
        _, _, length, chunked, _ = self._head
        if chunked:
            body = self._dechunk()
            if body is not None:
                self._finish(body)
        elif length is not None and len(buf) >= length:
            self._finish(bytes(buf[:length]))

    def _dechunk(self) -> bytes | None:
        """The body of a chunked answer, once it is all here; None before."""
        buf, at, parts = self._buf, 0, []
        while True:
            eol = buf.find(b"\r\n", at)
            if eol < 0:
                return None
            size = int(bytes(buf[at:eol]).split(b";")[0], 16)
            if size == 0:
                return b"".join(parts) if buf.find(b"\r\n\r\n", eol) >= 0 else None  # trailers end with an empty line
            if len(buf) < eol + 2 + size + 2:
                return None
            parts.append(bytes(buf[eol + 2 : eol + 2 + size]))
            at = eol + 2 + size + 2

    def _finish(self, body: bytes) -> None:
        assert self._head is not None and self._waiter is not None
        status, headers, _, _, keep = self._head
        if not keep:
            self.close()
        try:  # httpx.Response decodes a content-encoding (gzip, deflate, br) as httpx's client does
            self._waiter.set_result(httpx.Response(status, headers=headers, content=body))
        except httpx.DecodingError as e:
            self._waiter.set_exception(e)
            self.close()


class _Http11:
    """calibkit's own keep-alive HTTP/1.1 connections to its base URLs, as many as are in flight."""

    def __init__(self, base_urls: Sequence[str], timeout: float) -> None:
        self.timeout = timeout
        self.connect_timeout = min(10.0, timeout)
        self._ssl: Any = None
        self._where: dict[str, tuple[str, int, bool, bytes, bytes]] = {}
        for base in base_urls:
            u = httpx.URL(base)
            https = u.scheme == "https"
            if https and self._ssl is None:
                self._ssl = httpx.create_ssl_context()  # httpx's own: the same certificates as it trusts
            self._where[base] = (u.host, u.port or (443 if https else 80), https, u.netloc, u.raw_path.rstrip(b"/"))
        self._idle: dict[str, list[_Conn]] = {b: [] for b in base_urls}
        self._open: set[_Conn] = set()

    @staticmethod
    def serves(base_urls: Sequence[str]) -> bool:
        """Whether these base URLs need nothing of httpx's that this does not do: no proxy set in the
        environment (httpx reads it), http(s) without user:password, query or fragment."""
        proxies = {k for k in urllib.request.getproxies() if k in ("http", "https", "all")}
        return not proxies and all(
            (u := httpx.URL(b)).scheme in ("http", "https") and not u.userinfo and not u.query and not u.fragment
            for b in base_urls
        )

    async def _connect(self, base: str) -> _Conn:
        host, port, https, _, _ = self._where[base]
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Conn, host, port, ssl=self._ssl if https else None,
                                       server_hostname=host if https else None),
                self.connect_timeout,
            )
        except asyncio.TimeoutError as e:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} within {self.connect_timeout:g} s") from e
        except OSError as e:
            raise httpx.ConnectError(str(e) or type(e).__name__) from e
        self._open.add(conn)
        return conn

    async def request(self, method: str, base: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
        _, _, _, netloc, prefix = self._where[base]
        idle, now = self._idle[base], time.monotonic()
        conn = None
        while idle:
            c = idle.pop()
            if not c.closed and now - c.idle_since < _KEEPALIVE_S and c.transport and not c.transport.is_closing():
                conn = c
                break
            c.close()
            self._open.discard(c)
        if conn is None:
            conn = await self._connect(base)
        own = {k.lower() for k in headers}
        head = [f"{method} ".encode() + prefix + path.encode() + b" HTTP/1.1"]
        head += [d for name, d in _DEFAULT_HEADERS if name not in own] if own & _DEFAULT_NAMES else _DEFAULT_LINES
        if "host" not in own:
            head.append(b"Host: " + netloc)
        head += [f"{k}: {v}".encode("latin-1") for k, v in headers.items()]
        data = b""
        if body is not None:  # as httpx's json=
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            head.append(b"Content-Length: " + str(len(data)).encode())
        waiter = conn.send(b"\r\n".join(head) + b"\r\n\r\n" + data)
        timer = asyncio.get_running_loop().call_later(
            self.timeout, lambda: waiter.done() or waiter.set_exception(httpx.ReadTimeout("timed out")))
        try:
            r = await waiter
        except BaseException:  # a timeout, a broken connection, a cancel: its state is unknown
            conn.close()
            self._open.discard(conn)
            raise
        finally:
            timer.cancel()
        if conn.closed:
            self._open.discard(conn)
        else:
            conn.idle_since = time.monotonic()
            idle.append(conn)
        return r

    async def aclose(self) -> None:
        for c in self._open:
            c.close()
        self._open.clear()


_POOL_SIZE = 8  # connections in each of the httpx pools, so that each pool's scan stays small


class _HttpxPools:
    """httpx clients, a list for each base URL (see :meth:`Client._new_http`), behind the interface
    of :class:`_Http11`: each request goes to its base URL's client with the fewest in flight."""

    def __init__(self, clients: dict[str, list[httpx.AsyncClient]]) -> None:
        self.clients = clients
        self._in_flight: dict[int, int] = {id(c): 0 for cs in clients.values() for c in cs}

    async def request(self, method: str, base: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
        n = self._in_flight
        client = min(self.clients[base], key=lambda c: n[id(c)])
        n[id(client)] += 1
        try:
            return await client.request(method, base + path, json=body, headers=headers)
        finally:
            n[id(client)] -= 1

    async def aclose(self) -> None:
        for c in {id(c): c for cs in self.clients.values() for c in cs}.values():  # a shared client closes once
            await c.aclose()


class _Loop:
    """An event loop on a daemon thread, and the connections that live on it (``http``).

    httpx's async connections belong to the loop that opened them, so a pool kept for
    the client's life needs a loop kept as long; running it on a thread of its own also
    serves callers that are inside a running loop themselves (Jupyter).
    """

    def __init__(self, make_clients: Callable[[], _Http11 | _HttpxPools]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="calibkit-http", daemon=True)
        self.thread.start()
        self.http: _Http11 | _HttpxPools = self.run(self._make(make_clients))

    @staticmethod
    async def _make(make_clients: Callable[[], _Http11 | _HttpxPools]) -> _Http11 | _HttpxPools:
        return make_clients()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()  # Ctrl-C or an error here: stop what is still under way on the loop
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        if threading.current_thread() is self.thread:  # dropped on the loop's own thread: just stop it
            self.loop.stop()
            return
        try:
            self.run(self.http.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


class Client(Backend):
    """A completions API over HTTP (httpx): ACS, vLLM, OpenAI, llama.cpp servers.

    Parameters
    ----------
    base_url : the API base, e.g. ``"https://host/v1"`` (requests go to
        ``{base_url}/completions``); a list of them spreads the load over replicas.
    api_key : sent as ``Authorization: Bearer``; never logged, part of a cache key nor
        pickled (see below).
    model : the model name to ask for (default: the first one ``GET /models`` lists).
    logprobs_cap : the endpoint's top-k cap: 20 for ACS, 5 for OpenAI's legacy API,
        vLLM's ``max_logprobs``. Requests above it fail before they are sent.
    max_prompts_per_request : prompts packed into one request (1 for servers that
        take a single prompt, such as llama-cpp-python's).
    max_in_flight : requests in flight at once, over all replicas, at most: the
        client starts there and goes lower by itself while the server is
        overloaded (see ``limiter``).
    max_retries : retries of a failed request (see the module's doc).
    timeout : seconds to wait for an answer to one request before retrying it.
    echo_max_tokens : ``max_tokens`` of echo scoring requests; 0 where the server
        allows it with echo (ACS, ``calibkit serve``), 1 elsewhere (the extra token is
        left out of the score).
    cache : a :class:`~calibkit.cache.ResponseCache`, a path, True/None for the
        default file, False for none.

    The API is synchronous and also works inside a running event loop (Jupyter). Its
    kept-alive connections serve the client's life: close them with :meth:`close`, or use
    ``with ck.Client(...) as api:``.

    Pickling (a fitted :class:`~calibkit.LogprobClassifier` holds its client) leaves the
    key out, and credential headers given in ``headers=`` too: an unpickled client takes
    its key from ``ACS_API_KEY`` where that is set, else it has none, and a request the
    server refuses for want of one fails with a 401 that says to set ``ACS_API_KEY`` or
    pass ``api_key=``.

    >>> import pickle
    >>> b"sk-secret" in pickle.dumps(Client("http://127.0.0.1:8000/v1", "sk-secret", model="m", cache=False))
    False

    ``limiter`` (an :class:`AdaptiveLimiter`, kept for the client's life) paces the
    requests: ``api.limiter.limit`` is how many may be in flight now and
    ``api.limiter.backoffs`` how many times the client cut that on a timeout, 429,
    503 or 504.

    >>> api = Client("http://127.0.0.1:8000/v1", model="llama-8b", timeout=120, max_in_flight=2, cache=False)
    >>> api.limiter
    AdaptiveLimiter(limit=2, maximum=2, in_flight=0)
    >>> Client("http://127.0.0.1:8000/v1", timeout=0, cache=False)
    Traceback (most recent call last):
    ...
    ValueError: timeout= must be a positive number of seconds (got 0)
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        api_key: str | None = None,
        *,
        model: str | None = None,
        logprobs_cap: int | None = ACS_LOGPROBS_CAP,
        max_prompts_per_request: int = 16,
        max_in_flight: int = 8,
        max_retries: int = 2,
        timeout: float = 60.0,
        echo_max_tokens: int = 0,
        headers: dict[str, str] | None = None,
        cache: ResponseCache | str | bool | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        super().__init__(cache=cache)
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls or not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls):
            raise ValueError(f"base_url must be an http(s) URL or a list of them (got {base_url!r})")
        self.base_urls = [u.rstrip("/") for u in urls]
        self.api_key = api_key
        self._model = model
        for pname, v, lo in (
            ("max_prompts_per_request=", max_prompts_per_request, 1),
            ("max_in_flight=", max_in_flight, 1),
            ("max_retries=", max_retries, 0),
            ("echo_max_tokens=", echo_max_tokens, 0),
        ):
            check_int(pname, v, lo)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ValueError(f"timeout= must be a positive number of seconds (got {timeout!r})")
        if logprobs_cap is not None and (isinstance(logprobs_cap, bool) or not isinstance(logprobs_cap, int) or logprobs_cap < 0):
            raise ValueError(f"logprobs_cap must be a non-negative integer or None (got {logprobs_cap!r})")
        self.logprobs_cap = logprobs_cap
        self.max_prompts_per_request = max_prompts_per_request
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.echo_max_tokens = echo_max_tokens
        self.headers = dict(headers or {})
        self._transport = transport
        self._next_replica = itertools.count()
        # Enough questions to fill every request in flight: the most that are asked and not yet
        # cached at any time (a killed run loses at most these); the client is handed
        # window_batches of them at once and keeps its requests in flight across them.
        self.batch_size = max_in_flight * max_prompts_per_request
        #: HTTP requests sent (a pack of prompts is one), by this object.
        self.http_requests = 0
        #: requests of several prompts that timed out and went again as two halves.
        self.splits = 0
        self.limiter = AdaptiveLimiter(max_in_flight)
        self._loop: _Loop | None = None
        self._closed = False

    @classmethod
    def from_env(cls, **kwargs: Any) -> "Client":
        """A client for ``ACS_API_BASE`` with the key ``ACS_API_KEY``; other arguments as for Client."""
        base = kwargs.pop("base_url", None) or os.environ.get("ACS_API_BASE")
        if not base:
            raise ValueError(
                "ACS_API_BASE is not set: export ACS_API_BASE=https://.../v1 (and ACS_API_KEY), "
                "or pass base_url="
            )
        key = kwargs.pop("api_key", None) or os.environ.get("ACS_API_KEY")
        return cls(base, key, **kwargs)

    def __repr__(self) -> str:
        urls = self.base_urls[0] if len(self.base_urls) == 1 else self.base_urls
        return f"Client({urls!r}, model={self._model!r})"

    # -- identity ----------------------------------------------------------------
    @property
    def model_name(self) -> str:
        if self._model is None:
            models = self.models()
            if not models:
                raise ValueError(f"{self.base_urls[0]}/models lists no model; pass model=")
            self._model = models[0]
        return self._model

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "http", "model": self.model_name, "endpoint": sorted(self.base_urls)}

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", **self.headers}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def models(self) -> list[str]:
        """The model ids ``GET {base_url}/models`` lists."""
        body = self._run(self._request("GET", "/models", None))
        if not isinstance(body, dict):
            raise MalformedResponseError(f"{self.base_urls[0]}/models answered {type(body).__name__}, not an object")
        return [m["id"] for m in body.get("data", []) if isinstance(m, dict) and "id" in m]

    # -- transport -----------------------------------------------------------------
    def _new_http(self) -> _Http11 | _HttpxPools:
        """The connections to the base URLs: calibkit's own (:class:`_Http11`) where they serve,
        else httpx clients, that is connection pools, several small ones for each base URL.

        Small pools, not one for all: httpcore's pool does work in proportion to its
        connections times its idle ones on every request (an O(n^2) scan), which at 64
        connections in one pool cost more CPU than all the rest of a request (see "the
        wire" above). Each base URL gets pools of ``_POOL_SIZE`` connections for
        ``max_in_flight`` in all, so that no request waits for a connection (the limiter
        bounds the total) and none closes another's to open one. A ``transport=`` given
        is one pool already: one client over it serves all.
        """
        def new(size: int) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                transport=self._transport,
            )

        if self._transport is not None:
            shared = new(self.max_in_flight)
            return _HttpxPools({u: [shared] for u in self.base_urls})
        if _Http11.serves(self.base_urls):
            return _Http11(self.base_urls, self.timeout)
        pools = -(-self.max_in_flight // _POOL_SIZE)
        sizes = [_POOL_SIZE] * (pools - 1) + [self.max_in_flight - _POOL_SIZE * (pools - 1)]
        return _HttpxPools({u: [new(size) for size in sizes] for u in self.base_urls})

    def _started(self, coro: Coroutine[Any, Any, Any]) -> "_Loop":
        """The client's loop, started on first use."""
        if self._closed:
            coro.close()
            raise RuntimeError("this Client is closed; make a new one")
        with _START_LOCK:
            if self._loop is None:
                self._loop = _Loop(self._new_http)
                # A client dropped without close() still stops its thread and pool.
                weakref.finalize(self, self._loop.close)
            return self._loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._started(coro).run(coro)

    def _submit(self, coro: Coroutine[Any, Any, T]) -> "tuple[asyncio.AbstractEventLoop, Any]":
        """Start ``coro`` on the client's loop: the loop, and the concurrent future of its result."""
        loop = self._started(coro).loop
        return loop, asyncio.run_coroutine_threadsafe(coro, loop)

    def close(self) -> None:
        """Close the connection pools, their thread and the cache's file handle; the client is done."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        self._closed = True
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # The key never travels: a pickle on disk or sent to a worker must not hold it.
        state["api_key"] = None
        state["headers"] = {k: v for k, v in self.headers.items() if k.lower() not in _SECRET_HEADERS}
        state["_loop"] = None  # a copy opens its own pool on first use
        state["_closed"] = False  # ... even where this one is closed
        del state["_next_replica"]  # itertools objects do not pickle on every Python
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.api_key = os.environ.get("ACS_API_KEY") or None
        self._next_replica = itertools.count()

    async def _request(
        self,
        method: str,
        path: str,
        body: Any,
        failed: asyncio.Event | None = None,
        divisible: bool = False,
        parse: Callable[[bytes], Any] = _decode_json,
    ) -> Any:
        """One call with retries; ``parse`` of the body of its 2xx answer (by default the decoded JSON).

        Each try waits for a place under :attr:`limiter`; once ``failed`` is set (another
        request of the same call failed for good), a try not yet sent raises _NotSent. A
        ``divisible`` request (several prompts) that times out raises _Split instead of
        being sent again whole. A 2xx body that ``parse`` finds is not JSON (_Garbled) is
        retried as a dropped connection is.
        """
        assert self._loop is not None
        http = self._loop.http
        retries = 0
        errors_500 = 0
        while True:
            answered: httpx.Response | None = None
            async with self.limiter.slot() as slot:
                if failed is not None and failed.is_set():
                    raise _NotSent
                base = self.base_urls[next(self._next_replica) % len(self.base_urls)]
                url = base + path
                try:
                    r = await http.request(method, base, path, body, self._headers())
                except httpx.TransportError as e:  # timeouts too
                    if isinstance(e, _SLOW):
                        self._back_off(slot, f"no answer from {url} within {self.timeout:g} s")
                        if divisible:
                            raise _Split from e
                    if retries >= self.max_retries:
                        raise self._transport_error(e, url, retries + 1) from e
                    delay = _backoff(retries)
                else:
                    if r.status_code < 300:
                        slot.succeeded()  # the server answered: no sign of overload
                        answered = r
                    else:
                        try:
                            payload: Any = r.json()
                        except ValueError:
                            payload = {"message": r.text or r.reason_phrase}
                        err = APIError.from_body(r.status_code, payload)
                        if r.status_code == 401:
                            hint = ("this client has no API key (a pickled Client leaves its key out and takes "
                                    "ACS_API_KEY when unpickled): set ACS_API_KEY or pass api_key="
                                    if not self.api_key else "check the API key: ACS_API_KEY or api_key=")
                            err = APIError(
                                f"{err.message} ({hint})",
                                status_code=401, type=err.type, param=err.param, code=err.code, body=payload,
                            )
                        wait = _retry_after(r.headers)
                        if r.status_code in _OVERLOAD:
                            after = f", retry after {wait:g} s" if wait is not None else ""
                            self._back_off(slot, f"{url} answered {r.status_code} ({err.message}{after})")
                        if retries >= self.max_retries or not self._should_retry(r, err, errors_500):
                            raise err
                        if r.status_code == 500:
                            errors_500 += 1
                        delay = wait or _backoff(retries)
            if answered is not None:
                # The place is given back before the body is parsed, and this waits one turn
                # of the loop, so that the request woken into it goes out first: when many
                # answers come at once, new requests do not wait for all of them to be parsed.
                await asyncio.sleep(0)
                try:
                    return parse(answered.content)
                except _Garbled as e:
                    if retries >= self.max_retries:
                        raise MalformedResponseError(
                            f"{url} answered {answered.status_code} with a body that is not valid JSON ({e}; "
                            f"{len(answered.content)} bytes, ending {_excerpt(answered.content)}), on every one of "
                            f"{retries + 1} tries (retried {retries} time{'' if retries == 1 else 's'}): "
                            f"something between here and the server cuts answers short; pass a larger "
                            f"max_retries= if it is rare"
                        ) from e
                    log.warning("%s answered %d with a body that is not valid JSON (%s): retrying",
                                url, answered.status_code, e)
                    delay = _backoff(retries)
            await asyncio.sleep(delay)  # holding no place: the others may go meanwhile
            retries += 1

    def _back_off(self, slot: Slot, why: str) -> None:
        before = self.limiter.limit
        if slot.overloaded():
            log.warning("%s: requests in flight cut from %d to %d", why, before, self.limiter.limit)

    def _transport_error(self, e: httpx.TransportError, url: str, tries: int) -> APIError:
        """The error of a request whose every try ended without an answer, saying why."""
        times = f"{tries} tr{'y' if tries == 1 else 'ies'}"
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if isinstance(e, _SLOW):
            paced = (f"; the client had cut its requests in flight from {self.max_in_flight} to {self.limiter.limit}"
                     if self.limiter.limit < self.max_in_flight else "")
            return APIError(
                f"timed out waiting for {url}: no answer within {self.timeout:g} s on {times} ({type(e).__name__}; "
                f"the server was reached but is slow or busy{paced}); pass a larger timeout= or a smaller "
                f"max_in_flight="
            )
        if isinstance(e, _DROPPED):
            return APIError(f"lost the connection to {url} on {times}: the server was reached but closed it "
                            f"without an answer ({detail})")
        return APIError(f"could not reach {url} after {times}: {detail}")

    @staticmethod
    def _should_retry(r: httpx.Response, err: APIError, errors_500: int) -> bool:
        hint = r.headers.get("x-should-retry")
        if hint in ("true", "false"):
            return hint == "true"
        code = r.status_code
        if code in _NEVER_RETRY:
            return False
        if code == 500:
            return errors_500 == 0 or bool(_TRANSIENT.search(err.message or ""))
        return code in (408, 409, 429) or code >= 500

    async def _send_pack(self, reqs: list[CompletionRequest], failed: asyncio.Event) -> list[CompletionResponse]:
        body = reqs[0].to_json()
        body["prompt"] = [r.prompts[0] for r in reqs] if len(reqs) > 1 else reqs[0].prompts[0]
        resp: CompletionResponse = await self._request(
            "POST", "/completions", body, failed, divisible=len(reqs) > 1, parse=_parse_completion
        )
        self.http_requests += 1
        n = reqs[0].n or 1
        routed: list[list[Any]] = [[] for _ in reqs]
        for c in resp.choices:
            slot = c.index // n
            if not 0 <= slot < len(reqs):
                raise MalformedResponseError(
                    f"the server answered with choice index {c.index} for a request of {len(reqs)} prompts "
                    f"and n={n} (indexes 0 to {len(reqs) * n - 1})"
                )
            c.index = c.index % n
            routed[slot].append(c)
        for i, cs in enumerate(routed):
            if len(cs) != n:
                raise MalformedResponseError(
                    f"the server sent {len(cs)} choices for prompt {i} of a request of {len(reqs)} prompts "
                    f"(expected {n}); set max_prompts_per_request=1 if it takes one prompt per request"
                )
        share = len(reqs)
        return [
            CompletionResponse(
                id=resp.id,
                model=resp.model,
                choices=cs,
                usage=Usage(  # a pack's usage, shared out evenly
                    resp.usage.prompt_tokens // share,
                    resp.usage.completion_tokens // share,
                    resp.usage.total_tokens // share,
                ),
                created=resp.created,
            )
            for cs in routed
        ]

    async def _run_packs(
        self,
        requests: list[CompletionRequest],
        report: Callable[[list[tuple[list[int], list[CompletionResponse], asyncio.Future[None] | None]]], None]
        | None = None,
        gated: bool = False,
    ) -> list[CompletionResponse]:
        """Single-prompt requests, packed, sent with at most ``limiter.limit`` in flight; answers in order.

        When a request fails for good, the others of the call are not sent, and
        IncompleteAnswers carries the answers that came (MISSING elsewhere), the error, and
        the positions of the failed request's prompts.

        ``report``, where given, is called on this loop with the answers as they come, a
        list of ``(positions, answers, kept)``, one for each request answered. ``gated``: each
        has a future ``kept``, to be set once its answers are safe (cached), and at most
        ``max_in_flight`` requests are sent and not yet kept, so that a run killed at any
        point has lost the answers of at most that many requests; the answers of one turn of
        the loop are reported together. Not gated (nothing to keep safe), they are reported
        a round (``max_in_flight`` requests) at a time, or what came in 0.2 s, and at the end.
        """
        # Requests that differ only in their prompt travel together.
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, r in enumerate(requests):  # the fields but the prompt (a tuple where a list was given: hashable)
            groups.setdefault(tuple(getattr(r, f) for f in _PACKED_ALIKE), []).append(i)
        packs = [
            idx[s : s + self.max_prompts_per_request]
            for idx in groups.values()
            for s in range(0, len(idx), self.max_prompts_per_request)
        ]
        answers: list[Any] = [MISSING] * len(requests)
        failed = asyncio.Event()
        failed_at: list[int] = []
        loop = asyncio.get_running_loop()
        credits = asyncio.Semaphore(self.max_in_flight) if report is not None and gated else None
        came: list[tuple[list[int], list[CompletionResponse], asyncio.Future[None] | None]] = []

        timer: asyncio.TimerHandle | None = None

        def hand_over() -> None:  # what came since the last report, in one
            nonlocal timer
            if timer is not None:
                timer.cancel()
                timer = None
            if came and report is not None:
                got = came[:]
                came.clear()
                report(got)

        async def one(pack: list[int], kept: list[asyncio.Future[None]] | None = None) -> None:
            nonlocal timer
            try:
                resps = await self._send_pack([requests[i] for i in pack], failed)
            except _Split:
                half = (len(pack) + 1) // 2
                log.warning("no answer within %g s for a request of %d prompts: sending them as requests of %d",
                            self.timeout, len(pack), half)
                self.splits += 1
                await asyncio.sleep(_backoff(0))  # as before a retry: the server may still be busy
                halves = await asyncio.gather(one(pack[:half], kept), one(pack[half:], kept), return_exceptions=True)
                for r in halves:  # both halves end before this does; the first real error is the pack's
                    if isinstance(r, BaseException) and not isinstance(r, _NotSent):
                        raise r
                for r in halves:
                    if isinstance(r, BaseException):
                        raise r
                return
            except BaseException as e:
                failed.set()  # what has not been sent yet, is not sent at all
                if not isinstance(e, _NotSent):
                    failed_at.extend(pack)
                raise
            for i, r in zip(pack, resps):
                answers[i] = r
            if report is not None:
                done = None
                if kept is not None:
                    done = loop.create_future()
                    kept.append(done)
                came.append((pack, resps, done))
                if credits is not None:  # kept as soon as can be: a request waits for it
                    if len(came) == 1:
                        loop.call_soon(hand_over)  # with whatever else comes in this turn of the loop
                elif len(came) >= self.max_in_flight:  # nothing waits: a round of answers at a time ...
                    hand_over()
                elif timer is None:  # ... or what came in 0.2 s
                    timer = loop.call_later(0.2, hand_over)

        async def gated_one(pack: list[int]) -> None:
            assert credits is not None
            async with credits:  # held until the pack's answers are kept, not only answered
                kept: list[asyncio.Future[None]] = []
                await one(pack, kept)
                await asyncio.gather(*kept)

        send = gated_one if credits is not None else one
        queued = iter(packs)
        errors: list[BaseException] = []

        async def worker() -> None:
            # A few workers take the packs in order, rather than a task for each pack made up
            # front: thousands of those (a window of questions) cost the loop a pause at the start
            # and a place in the limiter's queue each. Twice max_in_flight of them keep the limit's
            # worth out while some wait to retry.
            for pack in queued:
                if failed.is_set():
                    return  # the rest are not sent: another request failed for good
                try:
                    await send(pack)
                except (_NotSent, asyncio.CancelledError):
                    raise
                except BaseException as e:
                    errors.append(e)

        try:
            results = await asyncio.gather(*(worker() for _ in range(min(len(packs), 2 * self.max_in_flight))),
                                           return_exceptions=True)
        finally:
            hand_over()  # the last answers
        for r in results:
            if isinstance(r, asyncio.CancelledError):
                raise r
        if errors:
            raise IncompleteAnswers(answers, errors[0], failed=failed_at)
        return answers

    def make_request(self, prompt: str | Sequence[str], **kwargs: Any) -> CompletionRequest:
        """A request for this client's model, checked against its logprobs cap."""
        return CompletionRequest(model=self.model_name, prompt=prompt, logprobs_cap=self.logprobs_cap, **kwargs)

    def complete(
        self, requests: CompletionRequest | Sequence[CompletionRequest]
    ) -> list[CompletionResponse] | CompletionResponse:
        """Send completions requests as they are (no cache); a list in gives a list out, in order.

        Requests of many prompts are split and packed again by ``max_prompts_per_request``;
        each answer's choices are routed back to their request by index.

        >>> api = Client("http://127.0.0.1:8000/v1", model="llama-8b")              # doctest: +SKIP
        >>> api.complete(api.make_request("The capital of France is", max_tokens=1, logprobs=5))  # doctest: +SKIP
        """
        single = isinstance(requests, CompletionRequest)
        reqs = [requests] if single else list(requests)
        for r in reqs:
            if not isinstance(r, CompletionRequest):
                raise TypeError(f"requests must be CompletionRequest objects (got {type(r).__name__})")
            r.validate()
        flat = [dataclasses.replace(r, prompt=p) for r in reqs for p in r.prompts]
        try:
            answers = self._run(self._run_packs(flat)) if flat else []
        except IncompleteAnswers as e:
            e.cause.__suppress_context__ = True  # its own __cause__, if any, is what to show
            raise e.cause
        out, at = [], 0
        for r in reqs:
            out.append(CompletionResponse.merge(answers[at : at + len(r.prompts)], r.n or 1))
            at += len(r.prompts)
        return out[0] if single else out

    # -- the two questions ---------------------------------------------------------------
    #: A window of questions at once, their answers handed back as they come (Backend._ask).
    streams_answers = True

    def _send(self, requests: list[CompletionRequest], read: Callable[[list[Any], list[int]], list[Any]],
              questions_of: list[list[int]], n: int,
              keep: Callable[[dict[int, Any]], None] | None = None) -> list[Any]:
        """Send single-prompt requests for ``n`` questions; ``read(answers, js)`` turns the
        answers (MISSING where none came) into the answers to questions ``js``, and
        ``questions_of[i]`` are the questions that need request ``i``'s answer.

        A call that fails part way raises IncompleteAnswers with the answers to the questions
        whose requests all came, the questions of the failed request first. With ``keep``,
        the answers to questions are handed to it, in groups, as soon as the requests each
        needs have come (see ``report`` of :meth:`_run_packs`), on this thread: the caller's,
        which owns its connection to the cache. Where this client has a cache, a request is
        not sent while ``max_in_flight`` others are sent and not yet kept: a run killed at
        any point loses at most ``batch_size`` questions' answers, as when it asked a batch
        at a time, while the requests in flight no longer wait for each batch's slowest.
        """
        if keep is None:
            try:  # the requests come from make_request: CompletionRequest checked each when it was made
                return read(self._run(self._run_packs(requests)), list(range(n)))
            except IncompleteAnswers as e:
                failed = sorted({q for i in e.failed for q in questions_of[i]})
                raise IncompleteAnswers(read(e.answers, list(range(n))), e.cause, failed=failed) from None

        came: queue.SimpleQueue[Any] = queue.SimpleQueue()
        got: list[Any] = [MISSING] * n
        resps: list[Any] = [MISSING] * len(requests)
        waiting = [0] * n  # requests each question still waits for
        for qs in questions_of:
            for j in qs:
                waiting[j] += 1

        async def run() -> list[CompletionResponse]:
            try:
                return await self._run_packs(requests, came.put, gated=self.cache is not None)
            finally:
                came.put(None)  # the end: nothing more comes

        loop, fut = self._submit(run())
        try:
            ended = False
            while not ended:
                groups = [came.get()]
                with contextlib.suppress(queue.Empty):
                    while True:
                        groups.append(came.get_nowait())
                ready: list[int] = []
                kept: list[asyncio.Future[None]] = []
                for group in groups:
                    if group is None:
                        ended = True
                        continue
                    for pack, answers, done in group:
                        for i, r in zip(pack, answers):
                            resps[i] = r
                            for j in questions_of[i]:
                                waiting[j] -= 1
                                if waiting[j] == 0:
                                    ready.append(j)
                        if done is not None:
                            kept.append(done)
                if ready:
                    answered = dict(zip(ready, read(resps, ready)))
                    for j, a in answered.items():
                        got[j] = a
                    keep(answered)
                if kept:
                    loop.call_soon_threadsafe(_set_kept, kept)
            fut.result()
        except IncompleteAnswers as e:
            failed = sorted({q for i in e.failed for q in questions_of[i]})
            raise IncompleteAnswers(got, e.cause, failed=failed) from None
        except BaseException:
            fut.cancel()  # an answer that does not read, the cache, Ctrl-C: stop what is under way
            raise
        return got

    def _answer_top_k(self, prompts: list[str], k: int,
                      keep: Callable[[dict[int, Any]], None] | None = None) -> list[TopK]:
        requests = [self.make_request(p, max_tokens=1, logprobs=k, temperature=0) for p in prompts]
        return self._send(
            requests,
            lambda resps, js: [MISSING if resps[j] is MISSING else self._top_of(prompts[j], resps[j], k) for j in js],
            [[i] for i in range(len(prompts))], len(prompts), keep,
        )

    def _top_of(self, p: str, resp: CompletionResponse, k: int) -> TopK:
        """The top-k answer for prompt ``p`` in ``resp``, checked."""
        lp = resp.choices[0].logprobs
        if lp is None or not lp.top_logprobs or lp.top_logprobs[0] is None:
            raise APIError(
                f"{self.model_name} at {self.base_urls[0]} returned no top_logprobs for the prompt "
                f"{p[:40]!r}; the endpoint must support the logprobs field of the completions API"
            )
        top = dict(lp.top_logprobs[0])
        if len(top) > k + 1:  # k, and the sampled token where it is not among them
            raise MalformedResponseError(
                f"{self.model_name} at {self.base_urls[0]} sent {len(top)} top_logprobs entries for "
                f"logprobs={k} (at most k + 1, the sampled token added); the endpoint ignores logprobs="
            )
        return top

    def _answer_continuations(self, pairs: list[tuple[str, str]],
                              keep: Callable[[dict[int, Any]], None] | None = None) -> list[Continuation | None]:
        # Each prompt is echoed alone too (packed with the pairs, one per prompt of the batch):
        # the seam rule of Backend.continuation_logprobs needs the prompt's own tokens, so that a
        # continuation that changes how the prompt tokenizes is seen even where a token boundary
        # falls at the seam. A prompt's echo goes just before its first pair, so that the two
        # travel close together (a pair's answer needs both).
        texts: list[str] = []
        prompt_at: dict[str, int] = {}  # the request echoing each prompt alone
        pair_at: list[int] = []
        questions_of: list[list[int]] = []
        for j, (p, c) in enumerate(pairs):
            if p and p not in prompt_at:  # "" has no tokens to compare
                prompt_at[p] = len(texts)
                texts.append(p)
                questions_of.append([])
            if p:
                questions_of[prompt_at[p]].append(j)  # a prompt echoed alone stands for each of its pairs
            pair_at.append(len(texts))
            texts.append(p + c)
            questions_of.append([j])
        requests = [self.make_request(t, max_tokens=self.echo_max_tokens, echo=True, logprobs=0, temperature=0)
                    for t in texts]
        own: dict[str, Any] = {"": []}  # each prompt's own tokens, read once

        def read(resps: list[Any], js: list[int]) -> list[Continuation | None]:
            return self._read_continuations(pairs, prompt_at, pair_at, resps, js, own)

        return self._send(requests, read, questions_of, len(pairs), keep)

    def _read_continuations(self, pairs: list[tuple[str, str]], prompt_at: dict[str, int], pair_at: list[int],
                            resps: list[Any], js: list[int], own: dict[str, Any]) -> list[Continuation | None]:
        out: list[Any] = []
        for j in js:
            p, c = pairs[j]
            if p not in own:
                r = resps[prompt_at[p]]
                if r is MISSING:
                    out.append(MISSING)
                    continue
                lp = self._echo_logprobs(r)
                own[p] = [(t, o) for t, o in zip(lp.tokens, lp.text_offset) if o < len(p)]
            resp = resps[pair_at[j]]
            if resp is MISSING:
                out.append(MISSING)
                continue
            lp = self._echo_logprobs(resp)
            span = echo_span(lp, len(p), len(p + c))
            head = [(t, o) for t, o in zip(lp.tokens, lp.text_offset) if o < len(p)]
            if span is None or head != own[p]:
                out.append(None)
                continue
            tokens, logprobs = span
            if any(v is None for v in logprobs):
                raise MalformedResponseError(f"{self.model_name} sent a null logprob inside the continuation {c!r}")
            out.append(Continuation(tuple(tokens), tuple(float(v) for v in logprobs if v is not None)))
        return out

    def _echo_logprobs(self, resp: CompletionResponse) -> Logprobs:
        lp = resp.choices[0].logprobs
        if lp is None:
            raise MalformedResponseError(
                f"{self.model_name} at {self.base_urls[0]} answered an echo request without logprobs; the endpoint "
                f"must support echo=true with logprobs=0 to score continuations"
            )
        if len(lp.text_offset) != len(lp.tokens):
            raise MalformedResponseError(
                f"echo scoring needs a text_offset for every token; {self.model_name} at {self.base_urls[0]} sent "
                f"{len(lp.text_offset)} for {len(lp.tokens)} tokens"
            )
        return lp
