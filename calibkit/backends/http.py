"""The HTTP backend: any OpenAI-compatible /completions endpoint, the ACS API first.

Layers, bottom up: one POST with retries (``_post``), a pack of prompts in one
request with its choices routed back by index (``_send_pack``), many packs with a
bounded number in flight spread over replicas (``_run``), and the cache in front
(:class:`~calibkit.backends.base.Backend`).

Retries follow openai-python: connection errors, timeouts, 408, 409, 429 and 5xx are
retried with exponential backoff and jitter (0.5 s doubling to at most 8 s), and a
``retry-after-ms`` or ``retry-after`` header of up to 60 s is honoured; 400, 401,
403, 404 and 422 never are, and a 500 only once unless its message says it is
transient.

Example
-------
>>> import calibkit as ck
>>> api = ck.Client.from_env(model="llama-8b")     # ACS_API_BASE, ACS_API_KEY  # doctest: +SKIP
>>> vllm = ck.Client(["http://gpu1:8000/v1", "http://gpu2:8000/v1"], model="meta-llama/Llama-3.1-8B",
...                  logprobs_cap=20)                                           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import itertools
import json
import os
import random
import re
import time
from typing import Any, Callable, Sequence

import httpx

from ..api import ACS_LOGPROBS_CAP, APIError, CompletionRequest, CompletionResponse, Usage
from ..cache import ResponseCache
from .base import Backend, check_int

__all__ = ["Client"]

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
_NEVER_RETRY = {400, 401, 403, 404, 422}
_TRANSIENT = re.compile(r"transient|temporar|overload|try again|unavailable|timed? ?out", re.I)


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


def _backoff(retries: int) -> float:
    return min(INITIAL_RETRY_DELAY * 2.0**retries, MAX_RETRY_DELAY) * (1 - 0.25 * random.random())


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
    max_in_flight : requests in flight at once, over all replicas.
    max_retries : retries of a failed request (see the module's doc).
    timeout : seconds for one request.
    echo_max_tokens : ``max_tokens`` of echo scoring requests; 0 where the server
        allows it with echo (ACS, ``calibkit serve``), 1 elsewhere (the extra token is
        left out of the score).
    cache : a :class:`~calibkit.cache.ResponseCache`, a path, True/None for the
        default file, False for none.

    The API is synchronous and also works inside a running event loop (Jupyter): the
    requests then run on a worker thread.
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
            ("max_prompts_per_request", max_prompts_per_request, 1),
            ("max_in_flight", max_in_flight, 1),
            ("max_retries", max_retries, 0),
            ("echo_max_tokens", echo_max_tokens, 0),
        ):
            check_int(pname, v, lo)
        if logprobs_cap is not None and (isinstance(logprobs_cap, bool) or not isinstance(logprobs_cap, int) or logprobs_cap < 0):
            raise ValueError(f"logprobs_cap must be a non-negative integer or None (got {logprobs_cap!r})")
        self.logprobs_cap = logprobs_cap
        self.max_prompts_per_request = max_prompts_per_request
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.timeout = timeout
        self.echo_max_tokens = echo_max_tokens
        self.headers = dict(headers or {})
        self._transport = transport
        self._next_replica = itertools.count()

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
        async def go() -> Any:
            async with self._http() as client:
                r = await self._request(client, "GET", "/models", None)
                return r

        body = self._sync(go())
        return [m["id"] for m in body.get("data", []) if isinstance(m, dict) and "id" in m]

    # -- transport -----------------------------------------------------------------
    def _http(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight)
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
            limits=limits,
            transport=self._transport,
        )

    @staticmethod
    def _sync(coro: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        # Inside a running loop (Jupyter): run ours on a worker thread.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, coro).result()

    async def _request(self, client: httpx.AsyncClient, method: str, path: str, body: Any) -> Any:
        """One call with retries; returns the decoded body (object pairs kept for logprobs)."""
        retries = 0
        errors_500 = 0
        while True:
            base = self.base_urls[next(self._next_replica) % len(self.base_urls)]
            try:
                r = await client.request(method, base + path, json=body, headers=self._headers())
            except (httpx.TimeoutException, httpx.TransportError) as e:
                if retries >= self.max_retries:
                    raise APIError(
                        f"could not reach {base}{path} after {retries + 1} tries: {type(e).__name__}: {e}"
                    ) from e
                await asyncio.sleep(_backoff(retries))
                retries += 1
                continue
            if r.status_code < 300:
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
            if retries >= self.max_retries or not self._should_retry(r, err, errors_500):
                raise err
            if r.status_code == 500:
                errors_500 += 1
            await asyncio.sleep(_retry_after(r.headers) or _backoff(retries))
            retries += 1

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

    async def _send_pack(
        self, client: httpx.AsyncClient, sem: asyncio.Semaphore, reqs: list[CompletionRequest], failed: asyncio.Event
    ) -> list[CompletionResponse]:
        body = reqs[0].to_json()
        body["prompt"] = [r.prompts[0] for r in reqs] if len(reqs) > 1 else reqs[0].prompts[0]
        async with sem:
            if failed.is_set():
                raise _NotSent
            raw = await self._request(client, "POST", "/completions", body)
        self.requests_made += 1
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

    def _complete_many(
        self,
        requests: list[CompletionRequest],
        on_done: Callable[[list[int], list[CompletionResponse]], None],
    ) -> None:
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

        async def one(client: httpx.AsyncClient, sem: asyncio.Semaphore, failed: asyncio.Event, pack: list[int]) -> None:
            try:
                resps = await self._send_pack(client, sem, [requests[i] for i in pack], failed)
            except BaseException:
                failed.set()  # what has not been sent yet, is not sent at all
                raise
            on_done(pack, resps)  # stored at once: an interruption loses no finished answer

        async def run() -> None:
            sem = asyncio.Semaphore(self.max_in_flight)
            failed = asyncio.Event()
            async with self._http() as client:
                results = await asyncio.gather(*(one(client, sem, failed, p) for p in packs), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, _NotSent)]
            if errors:
                raise errors[0]

        self._sync(run())
