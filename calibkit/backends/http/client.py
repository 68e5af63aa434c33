"""The public :class:`Client`: the two questions of the seam as completions requests over HTTP."""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import weakref
from typing import Any, Callable, Coroutine, Sequence, TypeVar

from ...api import ACS_LOGPROBS_CAP, CompletionRequest, CompletionResponse
from ...cache import ResponseCache
from ..base import MISSING, Backend, Continuation, IncompleteAnswers, TopK, check_int
from .dispatch import Answered, run_packs
from .http11 import Http11Transport
from .limiter import AdaptiveLimiter
from .loop import LoopThread
from .packing import echo_plan
from .questions import answer_questions
from .responses import MalformedResponseError, continuation_of, echo_logprobs, prompt_tokens, top_k_of
from .sender import Sender
from .transports import DEFAULT_MAX_RESPONSE_BYTES, HttpxTransport, Transport

__all__ = ["Client"]

T = TypeVar("T")

# Headers that carry credentials: left out of a pickled client, as its api_key is.
SECRET_HEADERS = {"authorization", "api-key", "x-api-key", "proxy-authorization"}
# Guards the lazy start of a client's loop: two threads that share a client and make
# its first call at once must not start two loops (a coroutine on one would use the
# other's connections).
START_LOCK = threading.Lock()


class Client(Backend):
    """A completions API over HTTP: ACS, vLLM, OpenAI, llama.cpp servers.

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
    max_retries : retries of a failed request (what is retried: :mod:`~calibkit.backends.http.retries`).
    timeout : seconds to wait for an answer to one request before retrying it.
    echo_max_tokens : ``max_tokens`` of echo scoring requests; 0 where the server
        allows it with echo (ACS, ``calibkit serve``), 1 elsewhere (the extra token is
        left out of the score).
    cache : a :class:`~calibkit.cache.ResponseCache`, a path, True/None for the
        default file, False for none.
    max_response_bytes : the largest answer read (64 MiB); a larger one is an error
        naming this setting, never unbounded memory.
    transport : what carries the requests, a
        :class:`~calibkit.backends.http.transports.Transport`; by default calibkit's own
        HTTP/1.1 connections, or httpx's where a proxy is set in the environment or a
        base URL holds a user:password, a query or a fragment.

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
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: Transport | None = None,
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
            ("max_response_bytes=", max_response_bytes, 1),
        ):
            check_int(pname, v, lo)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ValueError(f"timeout= must be a positive number of seconds (got {timeout!r})")
        if logprobs_cap is not None and (isinstance(logprobs_cap, bool) or not isinstance(logprobs_cap, int)
                                         or logprobs_cap < 0):
            raise ValueError(f"logprobs_cap must be a non-negative integer or None (got {logprobs_cap!r})")
        self.logprobs_cap = logprobs_cap
        self.max_prompts_per_request = max_prompts_per_request
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.echo_max_tokens = echo_max_tokens
        self.headers = dict(headers or {})
        self.max_response_bytes = max_response_bytes
        self._transport = transport
        # Enough questions to fill every request in flight: the most that are asked and not yet
        # cached at any time (a killed run loses at most these); the client is handed
        # window_batches of them at once and keeps its requests in flight across them.
        self.batch_size = max_in_flight * max_prompts_per_request
        self.limiter = AdaptiveLimiter(max_in_flight)
        self._sender = Sender(self.base_urls, self.limiter, timeout=self.timeout, max_retries=max_retries)
        self._loop: LoopThread | None = None
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

    @property
    def http_requests(self) -> int:
        """HTTP requests answered (a pack of prompts is one), by this object."""
        return self._sender.http_requests

    @property
    def splits(self) -> int:
        """Requests of several prompts that timed out and went again as two halves."""
        return self._sender.splits

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
        body = self._run(self._sender.call("GET", "/models", None, self._headers()))
        if not isinstance(body, dict):
            raise MalformedResponseError(f"{self.base_urls[0]}/models answered {type(body).__name__}, not an object")
        return [m["id"] for m in body.get("data", []) if isinstance(m, dict) and "id" in m]

    # -- the connections and their loop ---------------------------------------------------
    @property
    def transport(self) -> Transport:
        """What carries this client's requests, opened on first use (see ``transport=``)."""
        self._started()
        assert self._sender.transport is not None
        return self._sender.transport

    async def _open(self) -> Transport:
        """The transport given, or calibkit's own connections where they serve, else httpx's."""
        if self._transport is not None:
            return self._transport
        if Http11Transport.serves(self.base_urls):
            return Http11Transport(self.max_response_bytes)
        return HttpxTransport(self.max_in_flight, max_response_bytes=self.max_response_bytes)

    def _started(self) -> LoopThread:
        """The client's loop, its transport opened, started on first use."""
        if self._closed:
            raise RuntimeError("this Client is closed; make a new one")
        with START_LOCK:
            if self._loop is None:
                loop = LoopThread()
                self._sender.transport = transport = loop.run(self._open())
                self._loop = loop
                # A client dropped without close() still stops its thread and connections.
                weakref.finalize(self, loop.close, transport.aclose)
            return self._loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            loop = self._started()
        except BaseException:
            coro.close()
            raise
        return loop.run(coro)

    def close(self) -> None:
        """Close the connections, their thread and the cache's file handle; the client is done."""
        if self._loop is not None:
            transport = self._sender.transport
            self._loop.close(transport.aclose if transport is not None else None)
            self._loop = None
            self._sender.transport = None
        self._closed = True
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # The key never travels: a pickle on disk or sent to a worker must not hold it.
        state["api_key"] = None
        state["headers"] = {k: v for k, v in self.headers.items() if k.lower() not in SECRET_HEADERS}
        state["_loop"] = None  # a copy opens its own connections on first use
        state["_closed"] = False  # ... even where this one is closed
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.api_key = os.environ.get("ACS_API_KEY") or None

    # -- completions requests ---------------------------------------------------------------
    def _run_packs(self, requests: list[CompletionRequest], report: Callable[[list[Answered]], None] | None = None,
                   gated: bool = False) -> Coroutine[Any, Any, list[CompletionResponse]]:
        return run_packs(self._sender, requests, self._headers(), max_prompts_per_request=self.max_prompts_per_request,
                         report=report, gated=gated)

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
        """The answers to ``n`` questions from ``requests`` (see :func:`~.questions.answer_questions`)."""
        return answer_questions(self._started(), lambda report, gated: self._run_packs(requests, report, gated),
                                read, questions_of, n, keep, gated=self.cache is not None)

    def _where(self) -> str:
        return f"{self.model_name} at {self.base_urls[0]}"

    def _answer_top_k(self, prompts: list[str], k: int,
                      keep: Callable[[dict[int, Any]], None] | None = None) -> list[TopK]:
        requests = [self.make_request(p, max_tokens=1, logprobs=k, temperature=0) for p in prompts]
        where = self._where()
        return self._send(
            requests,
            lambda resps, js: [MISSING if resps[j] is MISSING else top_k_of(resps[j], k, prompts[j], where)
                               for j in js],
            [[i] for i in range(len(prompts))], len(prompts), keep,
        )

    def _answer_continuations(self, pairs: list[tuple[str, str]],
                              keep: Callable[[dict[int, Any]], None] | None = None) -> list[Continuation | None]:
        plan = echo_plan(pairs)
        requests = [self.make_request(t, max_tokens=self.echo_max_tokens, echo=True, logprobs=0, temperature=0)
                    for t in plan.texts]
        own: dict[str, Any] = {"": []}  # each prompt's own tokens, read once
        where = self._where()

        def read(resps: list[Any], js: list[int]) -> list[Continuation | None]:
            out: list[Any] = []
            for j in js:
                p, c = pairs[j]
                if p not in own:
                    if resps[plan.prompt_at[p]] is MISSING:
                        out.append(MISSING)
                        continue
                    own[p] = prompt_tokens(echo_logprobs(resps[plan.prompt_at[p]], where), p)
                resp = resps[plan.pair_at[j]]
                out.append(MISSING if resp is MISSING else
                           continuation_of(echo_logprobs(resp, where), p, c, own[p], where))
            return out

        return self._send(requests, read, plan.questions_of, len(pairs), keep)
