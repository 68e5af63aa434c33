"""The HTTP app of ``calibkit serve``: the ACS completions API over local models.

Routes: ``POST /v1/completions`` (and ``/completions``), ``GET /v1/models`` (and
``/models``), ``GET /health``, ``GET /openapi.json``. Requests are validated with
:meth:`calibkit.api.CompletionRequest.from_json` (booleans rejected in numeric
fields, unknown fields rejected), then by the server's own limits, then queued for
the one worker thread that owns the models (:mod:`calibkit.server.engine`). Every
error is ``{"error": {"message", "type", "param", "code"}}``. A POST body must be sent
as ``Content-Type: application/json`` (else 415) within ``body_timeout`` seconds (else
408); an API key is taken from the Authorization header only (one in the query string
is 401); one request may ask for at most ``max_request_tokens`` generated tokens
(prompts x max(n, best_of) x max_tokens). When a client leaves, its queued request is
dropped and a running one is stopped at its next token (for a model whose
``complete`` takes ``cancel=``, a :class:`threading.Event`). A response names the
model behind the served name (``"model": "google/gemma-3-270m"`` for a request to
"llama-8b"), as the ACS API answers "llama-8b" with "meta-llama/Llama-3.1-8B";
``GET /v1/models`` lists the served names, each with its ``root`` (the model's own name),
the ``weights`` that answer (a GGUF file's name, a checkpoint folder's or a hub name) and
the ``backend`` running them.

Example
-------
>>> from calibkit.server import create_app, load_models
>>> app = create_app(load_models(["llama-8b"]))                      # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import os
import threading
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Mapping

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..api import CompletionRequest, CompletionResponse, InvalidRequestError
from .config import ServerConfig
from .engine import Cancelled, QueueFull, Worker
from .keys import KeyFile
from .schema import openapi_schema

__all__ = ["ServerConfig", "create_app"]

log = logging.getLogger("calibkit.server")

# Query parameters that would carry an API key; the API takes keys in the Authorization header only.
_KEY_PARAMS = frozenset({"api_key", "apikey", "api-key", "key", "access_token", "token"})


class _Error(Exception):
    """An answer in the error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return _json(body, self.status, self.headers)


def _dumps(obj: Any) -> str:
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # a lone surrogate from the request: escape it, as JSON allows
        return json.dumps(obj, ensure_ascii=True, allow_nan=False)


def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_dumps(obj), status_code=status, headers=dict(headers or {}), media_type="application/json")


def _short(value: Any, limit: int = 80) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; numbers must be finite")


class _ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body is read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _takes_cancel(model: Any) -> bool:
    """Whether ``model.complete`` takes ``cancel=`` (a threading.Event it polls between tokens)."""
    try:
        return "cancel" in inspect.signature(model.complete).parameters
    except (TypeError, ValueError):
        return False


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Turn _Error into its response and anything unexpected into a logged 500, in the error shape."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except _Error as e:
            return e.response()
        except _ClientGone:
            return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
        except Exception:
            log.exception("internal error answering %s %s", request.method, request.url.path)
            return _Error(
                500, "the server failed to answer this request; it was logged",
                type="server_error", code="internal_error",
            ).response()

    return wrapper


def create_app(
    models: Mapping[str, Any],
    *,
    keys: KeyFile | str | os.PathLike[str] | None = None,
    config: ServerConfig | None = None,
) -> Starlette:
    """The ASGI app serving ``models`` (served name -> model, e.g. from :func:`~calibkit.server.load_models`).

    ``keys``: a keys file (path or :class:`KeyFile`) whose keys alone are accepted;
    None serves without authentication. A backend needs ``complete(CompletionRequest)``
    and a ``name`` (the model reported in responses; the served name if absent).

    >>> app = create_app(load_models(["llama-8b"]), keys="keys.json")  # doctest: +SKIP
    """
    if not models:
        raise ValueError("create_app needs at least one model to serve")
    cfg = config or ServerConfig()
    keyfile = KeyFile(keys) if keys is not None and not isinstance(keys, KeyFile) else keys
    worker = Worker(cfg.queue_size, cfg.batch_size)
    cancellable = {name: _takes_cancel(m) for name, m in models.items()}
    n_ctx = min((getattr(m, "n_ctx", 0) or 0 for m in models.values()), default=0) or None
    schema_text = _dumps(openapi_schema(
        list(models), auth=keyfile is not None, logprobs_cap=cfg.logprobs_cap,
        max_tokens_limit=cfg.max_tokens_limit, max_prompts=cfg.max_prompts, max_n=cfg.max_n,
        max_body_bytes=cfg.max_body_bytes, n_ctx=n_ctx,
    ))
    started = int(time.time())

    async def authorize(request: Request) -> None:
        challenge = {"WWW-Authenticate": "Bearer"}
        for name in request.query_params.keys():
            if name.lower() in _KEY_PARAMS:
                # Refused with or without a keys file: a key in a URL lands in logs and histories.
                raise _Error(401, f"API keys are not accepted in the query string ({name}=...): send the "
                                  f"header 'Authorization: Bearer <key>' instead, and treat that key as exposed",
                             param=name, code="key_in_query", headers=challenge)
        if keyfile is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if not header:
            raise _Error(401, "no API key: send the header 'Authorization: Bearer <key>' "
                         "(keys come from: calibkit keys create --keys-file PATH)",
                         code="missing_api_key", headers=challenge)
        if scheme.lower() != "bearer" or not token:
            raise _Error(401, "malformed Authorization header: expected 'Bearer <key>'",
                         code="invalid_api_key", headers=challenge)
        known, key_id = keyfile.remembered(token)  # no scrypt: cheap enough for the event loop
        if not known:
            key_id = await run_in_threadpool(keyfile.verify, token)
        if key_id is None:
            raise _Error(401, "invalid API key: this server's keys file does not hold it "
                         "(revoked, or from another server?)", code="invalid_api_key", headers=challenge)
        request.state.key_id = key_id

    def require_json(request: Request) -> None:
        ctype = request.headers.get("content-type")
        if ctype is None or ctype.partition(";")[0].strip().lower() != "application/json":
            got = "no Content-Type header" if ctype is None else f"Content-Type {_short(ctype, 60)}"
            raise _Error(415, f"the request body must be JSON, sent with the header "
                              f"'Content-Type: application/json' (got {got})", code="unsupported_media_type")

    async def read_body(request: Request) -> Any:
        limit = cfg.max_body_bytes
        too_large = _Error(413, f"the request body is larger than this server's limit of {limit} bytes; "
                                f"send fewer or shorter prompts", code="request_too_large")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0

        async def collect() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)

        try:
            await asyncio.wait_for(collect(), cfg.body_timeout)
        except asyncio.TimeoutError:
            got = f"{size} of {declared} bytes" if declared.isdigit() else f"{size} bytes"
            raise _Error(408, f"the request body did not arrive within {cfg.body_timeout} s ({got} came); "
                              f"send the whole body at once, with a Content-Length that matches it",
                         code="request_timeout", headers={"Connection": "close"}) from None
        except ClientDisconnect:
            log.info("client %s left while sending its request body (%d of %s bytes came)",
                     _client(request), size, declared or "?")
            raise _ClientGone from None
        raw = b"".join(chunks)
        if not raw.strip():
            raise _Error(400, "the request body is empty; send a JSON object such as "
                              '{"model": "...", "prompt": "...", "max_tokens": 1}')
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError as e:
            raise _Error(400, f"the request body is not UTF-8 ({e.reason} at byte {e.start})") from None
        except (ValueError, RecursionError) as e:
            msg = str(e) if isinstance(e, ValueError) else "nested too deeply"
            raise _Error(400, f"the request body is not valid JSON: {msg}") from None

    def parse(body: Any) -> CompletionRequest:
        if not isinstance(body, dict):
            raise _Error(400, f"the request body must be a JSON object (got {type(body).__name__})")
        body = dict(body)
        if body.get("max_tokens") is None:
            body["max_tokens"] = min(16, cfg.max_tokens_limit)
        try:
            req = CompletionRequest.from_json(body, logprobs_cap=cfg.logprobs_cap, strict=True)
        except InvalidRequestError as e:
            raise _Error(400, e.message, param=e.param) from None
        prompts = req.prompts
        if len(prompts) > cfg.max_prompts:
            raise _Error(400, f"prompt holds {len(prompts)} prompts; this server takes at most "
                              f"{cfg.max_prompts} per request: split them", param="prompt")
        if req.max_tokens is not None and req.max_tokens > cfg.max_tokens_limit:
            raise _Error(400, f"max_tokens must be at most {cfg.max_tokens_limit} on this server "
                              f"(got {req.max_tokens})", param="max_tokens")
        for name in ("n", "best_of"):
            v = getattr(req, name)
            if v is not None and v > cfg.max_n:
                raise _Error(400, f"{name} must be at most {cfg.max_n} on this server (got {v})", param=name)
        samples = max(req.n or 1, req.best_of or 1)
        cost = len(prompts) * samples * (req.max_tokens or 0)
        if cost > cfg.max_request_tokens:
            raise _Error(400, f"this request may generate {len(prompts)} prompt(s) x {samples} "
                              f"(the larger of n and best_of) x {req.max_tokens} max_tokens = {cost} tokens; "
                              f"this server takes at most {cfg.max_request_tokens} per request: lower "
                              f"max_tokens, n or best_of, or split the prompts over several requests",
                         param="max_tokens", code="request_too_costly")
        return req

    async def run(model: Any, req: CompletionRequest, request: Request) -> CompletionResponse:
        cancel = threading.Event()  # set when the client leaves: a running generation stops at its next token
        job = (functools.partial(model.complete, req, cancel=cancel) if cancellable[req.model]
               else functools.partial(model.complete, req))
        try:
            fut = worker.submit(job, sort_key=req.prompts[0])
        except QueueFull as e:
            raise _Error(503, str(e), type="server_error", code="queue_full",
                         headers={"Retry-After": str(cfg.retry_after)}) from None
        answer = asyncio.wrap_future(fut)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not answer.done():
                # The client gave up (a timeout closes its connection), or the server is
                # stopping: drop the job if it is still queued, so that a busy server does
                # not work through abandoned requests while the client's retries wait.
                answer.cancel()
                cancel.set()
        if answer.cancelled():
            worker.clients_gone += 1
            raise _ClientGone
        try:
            return answer.result()
        except InvalidRequestError as e:  # e.g. the prompt is longer than the context
            raise _Error(400, e.message, param=e.param) from None
        except Cancelled:  # stopped for this request's client, which has left
            raise _ClientGone from None

    @_guarded
    async def completions(request: Request) -> Response:
        await authorize(request)
        require_json(request)
        req = parse(await read_body(request))
        model = models.get(req.model)
        if model is None:
            raise _Error(404, f"model {_short(req.model)} is not served here; served: {', '.join(models)} "
                              f"(see GET /v1/models)", param="model", code="model_not_found")
        if req.stream:
            # Answered whole, then sent token by token: the wire format of a stream.
            # logprobs=0 (the sampled token only) gives the token boundaries.
            inner = dataclasses.replace(req, logprobs=0) if req.logprobs is None else req
            resp = await run(model, inner, request)
            return StreamingResponse(
                _sse(resp, keep_logprobs=req.logprobs is not None),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        resp = await run(model, req, request)
        return _json(resp.to_json())

    @_guarded
    async def list_models(request: Request) -> Response:
        await authorize(request)
        # root: the model's own name (the served name may be an alias); the weights behind it
        # and the backend running them where the model says (LocalCompletions.weights).
        data = [
            {"id": name, "object": "model", "created": started, "owned_by": "calibkit",
             "root": str(getattr(m, "name", name)), **getattr(m, "weights", {})}
            for name, m in models.items()
        ]
        return _json({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        return _json({"status": "ok", "models": list(models),
                      "queue": {"pending": worker.pending, "capacity": cfg.queue_size}})

    async def openapi(request: Request) -> Response:
        return Response(schema_text, media_type="application/json")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; try POST /v1/completions or GET /v1/models"
            code = "not_found"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
            code = "method_not_allowed"
        else:
            message, code = str(exc.detail), None
        return _Error(exc.status_code, message, code=code, headers=exc.headers).response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(worker.close)

    routes = [
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/completions", completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.worker = worker
    app.state.config = cfg
    return app


def _client(request: Request) -> str:
    c = request.client
    return f"{c.host}:{c.port}" if c else "?"


def _sse(resp: CompletionResponse, keep_logprobs: bool) -> Iterator[str]:
    """A whole response as server-sent events: one event per token of each choice, then [DONE]."""

    def event(choice: dict[str, Any]) -> str:
        chunk = {"id": resp.id, "object": "text_completion", "created": resp.created,
                 "model": resp.model, "choices": [choice]}
        return f"data: {_dumps(chunk)}\n\n"

    for c in resp.choices:
        lp = c.logprobs
        n_events = len(lp.tokens) if lp is not None and lp.tokens else 1
        full = lp.to_json() if lp is not None else None
        for i in range(n_events):
            if n_events == 1 and (lp is None or not lp.tokens):
                text, part = c.text, None
            else:
                start = 0 if i == 0 else lp.text_offset[i]
                end = lp.text_offset[i + 1] if i + 1 < n_events else len(c.text)
                text = c.text[start:end]
                part = {k: [full[k][i]] for k in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
            choice: dict[str, Any] = {
                "index": c.index,
                "text": text,
                "logprobs": part if keep_logprobs else None,
                "finish_reason": c.finish_reason if i == n_events - 1 else None,
            }
            if i == 0 and c.prompt_logprobs is not None:
                choice["prompt_logprobs"] = c.prompt_logprobs
            yield event(choice)
    yield "data: [DONE]\n\n"
