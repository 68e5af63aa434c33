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
from typing import Any, AsyncIterator, Coroutine, Sequence, TypeVar

import httpx

from ..api import ACS_LOGPROBS_CAP, APIError, CompletionRequest, CompletionResponse, Usage
from ..cache import ResponseCache
from .base import Backend, Continuation, TopK, check_int

T = TypeVar("T")

__all__ = ["AdaptiveLimiter", "Client"]

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
    api_key : sent as ``Authorization: Bearer``; never logged nor part of a cache key.
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
        state["_loop"] = None  # a copy opens its own pool on first use
        state["_closed"] = False  # ... even where this one is closed
        del state["_next_replica"]  # itertools objects do not pickle on every Python
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._next_replica = itertools.count()

    async def _request(
        self, method: str, path: str, body: Any, failed: asyncio.Event | None = None, divisible: bool = False
    ) -> Any:
        """One call with retries; the decoded body of a GET, the raw bytes of a POST.

        Each try waits for a place under :attr:`limiter`; once ``failed`` is set (another
        request of the same call failed for good), a try not yet sent raises _NotSent. A
        ``divisible`` request (several prompts) that times out raises _Split instead of
        being sent again whole.
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
                        slot.succeeded()
                        if method == "GET":
                            return r.json()
                        return r.content
                    try:
                        payload: Any = r.json()
                    except ValueError:
                        payload = {"message": r.text or r.reason_phrase}
                    err = APIError.from_body(r.status_code, payload)
                    if r.status_code == 401:
                        err = APIError(
                            f"{err.message} (check the API key: ACS_API_KEY or api_key=)",
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
        raw = await self._request("POST", "/completions", body, failed, divisible=len(reqs) > 1)
        self.http_requests += 1
        resp = CompletionResponse.from_json(raw)
        n = reqs[0].n or 1
        routed: list[list[Any]] = [[] for _ in reqs]
        for c in resp.choices:
            slot = c.index // n
            if not 0 <= slot < len(reqs):
                raise ValueError(f"the server answered with choice index {c.index} for {len(reqs)} prompts")
            c.index = c.index % n
            routed[slot].append(c)
        for i, cs in enumerate(routed):
            if len(cs) != n:
                raise ValueError(
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
        """Single-prompt requests, packed, sent with at most ``limiter.limit`` in flight; answers in order."""
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
        answers: list[CompletionResponse | None] = [None] * len(requests)
        failed = asyncio.Event()

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
            except BaseException:
                failed.set()  # what has not been sent yet, is not sent at all
                raise
            for i, r in zip(pack, resps):
                answers[i] = r

        results = await asyncio.gather(*(one(p) for p in packs), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, _NotSent)]
        if errors:
            raise errors[0]
        return answers  # type: ignore[return-value]

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
        answers = self._run(self._run_packs(flat)) if flat else []
        out, at = [], 0
        for r in reqs:
            out.append(CompletionResponse.merge(answers[at : at + len(r.prompts)], r.n or 1))
            at += len(r.prompts)
        return out[0] if single else out

    # -- the two questions ---------------------------------------------------------------
    def _answer_top_k(self, prompts: list[str], k: int) -> list[TopK]:
        resps = self.complete([self.make_request(p, max_tokens=1, logprobs=k, temperature=0) for p in prompts])
        out = []
        for p, resp in zip(prompts, resps):
            lp = resp.choices[0].logprobs
            if lp is None or not lp.top_logprobs or lp.top_logprobs[0] is None:
                raise APIError(
                    f"{self.model_name} at {self.base_urls[0]} returned no top_logprobs for the prompt "
                    f"{p[:40]!r}; the endpoint must support the logprobs field of the completions API"
                )
            out.append(dict(lp.top_logprobs[0]))
        return out

    def _answer_continuations(self, pairs: list[tuple[str, str]]) -> list[Continuation | None]:
        reqs = [
            self.make_request(p + c, max_tokens=self.echo_max_tokens, echo=True, logprobs=0, temperature=0)
            for p, c in pairs
        ]
        out: list[Continuation | None] = []
        for (p, c), resp in zip(pairs, self.complete(reqs)):
            lp = resp.choices[0].logprobs
            if lp is None:
                raise APIError(f"{self.model_name} answered an echo request without logprobs")
            span = lp.span(len(p), len(p) + len(c))
            if span is None:
                out.append(None)
                continue
            tokens, logprobs = span
            if any(v is None for v in logprobs):
                raise APIError(f"{self.model_name} sent a null logprob inside the continuation {c!r}")
            out.append(Continuation(tuple(tokens), tuple(float(v) for v in logprobs if v is not None)))
        return out

