"""The HTTP backend: any OpenAI-compatible /completions endpoint, the ACS API first.

The two questions of the seam become completions requests: top-k is
``max_tokens=1, logprobs=k``; a continuation's log-probabilities come from echoing
prompt + continuation (``echo=True, logprobs=0``) and reading the continuation's span.

Layers, bottom up: one call with retries (``_request``), a pack of prompts in one
request with its choices routed back by index (``_send_pack``), many packs with a
bounded number in flight spread over replicas (``_run_packs``), and
:meth:`Client.complete`, the wire-level method. One ``httpx.AsyncClient`` (one
connection pool) serves the client's whole life on an event loop of its own, on one
background thread, so that the synchronous API also works inside Jupyter's running
loop; :meth:`Client.close` or ``with`` ends both.

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
import random
import re
import threading
import time
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


class _Loop:
    """An event loop on a daemon thread, and the one httpx.AsyncClient that lives on it.

    httpx's async connections belong to the loop that opened them, so a pool kept for
    the client's life needs a loop kept as long; running it on a thread of its own also
    serves callers that are inside a running loop themselves (Jupyter).
    """

    def __init__(self, make_client: "Any") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="calibkit-http", daemon=True)
        self.thread.start()
        self.http: httpx.AsyncClient = self.run(self._make(make_client))

    @staticmethod
    async def _make(make_client: "Any") -> httpx.AsyncClient:
        return make_client()

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

    The API is synchronous and also works inside a running event loop (Jupyter). One
    connection pool serves the client's life: close it with :meth:`close`, or use
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
        # Questions handed over at once: enough to fill every request in flight.
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
    def _new_http(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight)
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
            limits=limits,
            transport=self._transport,
        )

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this Client is closed; make a new one")
        with _START_LOCK:
            if self._loop is None:
                self._loop = _Loop(self._new_http)
                # A client dropped without close() still stops its thread and pool.
                weakref.finalize(self, self._loop.close)
            loop = self._loop
        return loop.run(coro)

    def close(self) -> None:
        """Close the connection pool, its thread and the cache's file handle; the client is done."""
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
        client = self._loop.http
        retries = 0
        errors_500 = 0
        while True:
            async with self.limiter.slot() as slot:
                if failed is not None and failed.is_set():
                    raise _NotSent
                url = self.base_urls[next(self._next_replica) % len(self.base_urls)] + path
                try:
                    r = await client.request(method, url, json=body, headers=self._headers())
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
                        try:
                            return parse(r.content)
                        except _Garbled as e:
                            if retries >= self.max_retries:
                                raise MalformedResponseError(
                                    f"{url} answered {r.status_code} with a body that is not valid JSON ({e}; "
                                    f"{len(r.content)} bytes, ending {_excerpt(r.content)}), on every one of "
                                    f"{retries + 1} tries (retried {retries} time{'' if retries == 1 else 's'}): "
                                    f"something between here and the server cuts answers short; pass a larger "
                                    f"max_retries= if it is rare"
                                ) from e
                            log.warning("%s answered %d with a body that is not valid JSON (%s): retrying",
                                        url, r.status_code, e)
                            delay = _backoff(retries)
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

    async def _run_packs(self, requests: list[CompletionRequest]) -> list[CompletionResponse]:
        """Single-prompt requests, packed, sent with at most ``limiter.limit`` in flight; answers in order.

        When a request fails for good, the others of the call are not sent, and
        IncompleteAnswers carries the answers that came (MISSING elsewhere), the error, and
        the positions of the failed request's prompts.
        """
        # Requests that differ only in their prompt travel together.
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            key = json.dumps({k: v for k, v in r.to_json().items() if k != "prompt"}, sort_keys=True)
            groups.setdefault(key, []).append(i)
        packs = [
            idx[s : s + self.max_prompts_per_request]
            for idx in groups.values()
            for s in range(0, len(idx), self.max_prompts_per_request)
        ]
        answers: list[Any] = [MISSING] * len(requests)
        failed = asyncio.Event()
        failed_at: list[int] = []

        async def one(pack: list[int]) -> None:
            try:
                resps = await self._send_pack([requests[i] for i in pack], failed)
            except _Split:
                half = (len(pack) + 1) // 2
                log.warning("no answer within %g s for a request of %d prompts: sending them as requests of %d",
                            self.timeout, len(pack), half)
                self.splits += 1
                await asyncio.sleep(_backoff(0))  # as before a retry: the server may still be busy
                halves = await asyncio.gather(one(pack[:half]), one(pack[half:]), return_exceptions=True)
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

        results = await asyncio.gather(*(one(p) for p in packs), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, _NotSent)]
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
    def _send(self, requests: list[CompletionRequest], read: Callable[[list[Any]], list[Any]],
              failed_of: Callable[[int], list[int]]) -> list[Any]:
        """Send single-prompt requests; ``read`` turns the answers (MISSING where none came) into
        answers to the questions. A call that fails part way raises IncompleteAnswers with what
        ``read`` makes of the answers that came, the questions of the failed request
        (``failed_of`` maps a request's position to them) first."""
        try:  # the requests come from make_request: CompletionRequest checked each when it was made
            return read(self._run(self._run_packs(requests)))
        except IncompleteAnswers as e:
            failed = sorted({q for i in e.failed for q in failed_of(i)})
            raise IncompleteAnswers(read(e.answers), e.cause, failed=failed) from None

    def _answer_top_k(self, prompts: list[str], k: int) -> list[TopK]:
        requests = [self.make_request(p, max_tokens=1, logprobs=k, temperature=0) for p in prompts]
        return self._send(requests, lambda resps: [MISSING if r is MISSING else self._top_of(p, r, k)
                                                    for p, r in zip(prompts, resps)], lambda i: [i])

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

    def _answer_continuations(self, pairs: list[tuple[str, str]]) -> list[Continuation | None]:
        # Each prompt is echoed alone too (packed with the pairs, one per prompt of the batch):
        # the seam rule of Backend.continuation_logprobs needs the prompt's own tokens, so that a
        # continuation that changes how the prompt tokenizes is seen even where a token boundary
        # falls at the seam.
        prompts = list(dict.fromkeys(p for p, _ in pairs if p))  # "" has no tokens to compare
        texts = prompts + [p + c for p, c in pairs]
        requests = [self.make_request(t, max_tokens=self.echo_max_tokens, echo=True, logprobs=0, temperature=0)
                    for t in texts]

        def failed_of(i: int) -> list[int]:  # a prompt echoed alone stands for each of its pairs
            return [j for j, (p, _) in enumerate(pairs) if p == prompts[i]] if i < len(prompts) else [i - len(prompts)]

        return self._send(requests, lambda resps: self._read_continuations(pairs, prompts, resps), failed_of)

    def _read_continuations(self, pairs: list[tuple[str, str]], prompts: list[str],
                            resps: list[Any]) -> list[Continuation | None]:
        own: dict[str, Any] = {"": []}
        for p, resp in zip(prompts, resps):
            if resp is MISSING:
                own[p] = MISSING
                continue
            lp = self._echo_logprobs(resp)
            own[p] = [(t, o) for t, o in zip(lp.tokens, lp.text_offset) if o < len(p)]
        out: list[Any] = []
        for (p, c), resp in zip(pairs, resps[len(prompts):]):
            if resp is MISSING or own[p] is MISSING:
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
