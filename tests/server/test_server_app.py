"""calibkit serve: the ACS completions API contract.

The first half runs the app in-process over a scripted model (fast: request rules,
limits, auth, errors, streaming, the OpenAPI document). The second half starts a real
``calibkit serve`` on 127.0.0.1 over the embedded model and runs the reference page's
curl and Python examples, the openai package and calibkit's own Client against it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from calibkit.api import NUMERIC_FIELDS, Choice, CompletionRequest, CompletionResponse, InvalidRequestError, Logprobs, Usage
from calibkit.server import ServerConfig, create_app, create_key, revoke_key

from server_harness import (
    ServerProcess, ThreadedServer, assert_error_shape, assert_raw_error_shape, parse_raw_response, read_all,
)


# -- a scripted model, for the rules that do not need a real one ---------------------------
class ScriptedModel:
    """Answers " ok" to every prompt; ``gate`` holds the worker inside complete()."""

    name = "scripted/base-model"
    n_ctx = 128

    def __init__(self) -> None:
        self.seen: list[CompletionRequest] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def complete(self, req: CompletionRequest) -> CompletionResponse:
        self.seen.append(req)
        if self.gate is not None:
            self.entered.set()
            assert self.gate.wait(60)
        choices = []
        for pi, prompt in enumerate(req.prompts):
            if "CRASH" in prompt:
                raise RuntimeError("the scripted model broke")
            if "TOO LONG" in prompt:
                raise InvalidRequestError("the prompt is 9999 tokens, longer than the context of 128", param="prompt")
            for j in range(req.n or 1):
                toks, lps, offs = [" o", "k"], [-0.5, -0.25], [0, 2]
                text = " ok"
                if req.echo:
                    toks, lps, offs = ["", prompt] + toks, [None, -3.0] + lps, [0, 0] + [len(prompt) + o for o in offs]
                    text = prompt + text
                lp = None
                if req.logprobs is not None:
                    tops = [None if v is None else {t: v} for t, v in zip(toks, lps)]
                    lp = Logprobs(tokens=toks, token_logprobs=lps, top_logprobs=tops, text_offset=offs)
                choices.append(Choice(index=pi * (req.n or 1) + j, text=text, logprobs=lp, finish_reason="length"))
        return CompletionResponse(id="cmpl-scripted", model=self.name, choices=choices,
                                  usage=Usage(3, 2, 5), created=1)


LIMITS = ServerConfig(max_body_bytes=4096, max_prompts=4, max_tokens_limit=8, max_n=2, queue_size=2)


def _run(app, calls):
    """Run ``calls(client)`` (a coroutine function) against ``app`` in-process."""

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await calls(client)

    return asyncio.run(go())


def _post(app, body, headers=None, path="/v1/completions", raw: bytes | None = None):
    if raw is None:  # json.dumps escapes lone surrogates, as a JSON client may send them
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}

    async def call(client):
        return await client.post(path, content=raw, headers=headers or {})

    return _run(app, call)


@pytest.fixture
def scripted():
    model = ScriptedModel()
    app = create_app({"llama-8b": model}, config=LIMITS)
    yield app, model
    app.state.worker.close()


def _body(**kw):
    return {"model": "llama-8b", "prompt": "The capital of France is", "max_tokens": 1, **kw}


@pytest.mark.parametrize("field", NUMERIC_FIELDS)
@pytest.mark.parametrize("value", [True, False])
def test_every_numeric_field_rejects_booleans(scripted, field, value):
    app, model = scripted
    r = _post(app, _body(**{field: value}))
    err = assert_error_shape(r, 400, param=field)
    assert "boolean" in err["message"]
    assert model.seen == []


@pytest.mark.parametrize(
    "body, param",
    [
        (_body(echo=1), "echo"),
        (_body(stream="yes"), "stream"),
        (_body(logprobs=21), "logprobs"),
        (_body(logprobs=-1), "logprobs"),
        (_body(logprobs=2.0), "logprobs"),
        (_body(prompt_logprobs=21), "prompt_logprobs"),
        (_body(max_tokens=0), "max_tokens"),
        (_body(temperature=2.5), "temperature"),
        (_body(repetition_penalty=0), "repetition_penalty"),
        (_body(api_key="sk-..."), "api_key"),
        (_body(stop=5), "stop"),
        (_body(stop={"a": 1}), "stop"),
        (_body(stop=["a", "b", "c", "d", "e"]), "stop"),
        (_body(prompt=[]), "prompt"),
        (_body(prompt=["ok", 3]), "prompt"),
        (_body(prompt="\ud800 lone surrogate"), "prompt"),
        ({"model": None, "prompt": "x"}, "model"),
        ({"model": "llama-8b"}, "prompt"),
        ({"model": 3, "prompt": "x"}, "model"),
    ],
)
def test_invalid_fields_are_400_naming_the_field(scripted, body, param):
    app, model = scripted
    err = assert_error_shape(_post(app, body), 400, param=param)
    assert param in err["message"]
    assert model.seen == []


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b'{"model": "llama-8b", "prompt": "x", "temperature": NaN}', "NaN"),
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, None),  # larger than the limit: 413 below
        (b"[" * 2000 + b"]" * 2000, "JSON"),
    ],
)
def test_malformed_bodies_are_4xx_in_the_error_shape(scripted, raw, words):
    app, model = scripted
    r = _post(app, None, raw=raw, headers={"Content-Type": "application/json"})
    if words is None:
        assert_error_shape(r, 413)
    else:
        assert words in assert_error_shape(r, 400)["message"]
    assert model.seen == []


def test_server_limits_are_400_or_413(scripted):
    app, model = scripted
    assert "at most 8" in assert_error_shape(_post(app, _body(max_tokens=9)), 400, "max_tokens")["message"]
    assert_error_shape(_post(app, _body(n=3)), 400, "n")
    assert_error_shape(_post(app, _body(best_of=3)), 400, "best_of")
    assert "at most 4" in assert_error_shape(_post(app, _body(prompt=["a"] * 5)), 400, "prompt")["message"]
    big = assert_error_shape(_post(app, _body(prompt="x" * 5000)), 413)
    assert big["code"] == "request_too_large" and "4096" in big["message"]
    assert model.seen == []
    assert _post(app, _body(prompt=["a"] * 4, max_tokens=8, n=2)).status_code == 200


def test_the_prompt_too_long_for_the_context_is_400_not_500(scripted):
    app, _ = scripted
    err = assert_error_shape(_post(app, _body(prompt="TOO LONG")), 400, "prompt")
    assert "context" in err["message"]


def test_an_engine_failure_is_a_500_in_the_error_shape_and_the_server_goes_on(scripted):
    app, _ = scripted
    err = assert_error_shape(_post(app, _body(prompt="CRASH")), 500)
    assert err["type"] == "server_error" and "broke" not in err["message"]
    assert _post(app, _body()).status_code == 200


def test_defaults_and_normalisations_reach_the_model(scripted):
    app, model = scripted
    assert _post(app, {"model": "llama-8b", "prompt": "x"}).status_code == 200
    assert model.seen[-1].max_tokens == 8  # the default 16, lowered to the server's limit
    # extreme sampler values go to the model as sent: its sampler copes (tests/test_server_completions.py)
    assert _post(app, _body(temperature=5e-324, seed=-1, max_tokens=None)).status_code == 200
    req = model.seen[-1]
    assert req.temperature == 5e-324 and req.seed == -1 and req.max_tokens == 8
    assert _post(app, _body(temperature=0.7, seed=7, logprobs=None, echo=None)).status_code == 200
    assert (model.seen[-1].temperature, model.seen[-1].seed, model.seen[-1].echo) == (0.7, 7, False)


def test_a_list_of_prompts_gets_one_choice_per_prompt_by_index(scripted):
    app, _ = scripted
    r = _post(app, _body(prompt=["a", "b", "c"], n=2, echo=True, logprobs=1))
    assert r.status_code == 200
    body = r.json()
    assert [c["index"] for c in body["choices"]] == list(range(6))
    assert [c["text"] for c in body["choices"]] == ["a ok", "a ok", "b ok", "b ok", "c ok", "c ok"]
    assert body["choices"][0]["logprobs"]["token_logprobs"][0] is None
    assert body["model"] == "scripted/base-model" and body["id"].startswith("cmpl-")


def test_unknown_models_routes_and_methods_are_404_or_405(scripted):
    app, _ = scripted
    err = assert_error_shape(_post(app, _body(model="gpt-4")), 404, "model")
    assert err["code"] == "model_not_found" and "llama-8b" in err["message"]
    assert assert_error_shape(_post(app, {}, path="/v1/chat/completions"), 404)["code"] == "not_found"
    r = _run(app, lambda c: c.get("/v1/completions"))
    assert_error_shape(r, 405)
    assert r.headers["allow"] == "POST"
    assert _run(app, lambda c: c.get("/nowhere")).status_code == 404


def test_both_route_spellings_and_the_model_list(scripted):
    app, _ = scripted
    assert _post(app, _body(), path="/completions").status_code == 200
    for path in ("/v1/models", "/models"):
        data = _run(app, lambda c: c.get(path)).json()["data"]
        assert [(m["id"], m["root"]) for m in data] == [("llama-8b", "scripted/base-model")]
    assert _run(app, lambda c: c.get("/health")).json()["status"] == "ok"


def test_keys_are_required_checked_and_revocable_without_restart(tmp_path):
    path = tmp_path / "keys.json"
    key, entry = create_key(path, name="t")
    other, _ = create_key(tmp_path / "other.json")
    model = ScriptedModel()
    app = create_app({"llama-8b": model}, keys=path, config=LIMITS)
    try:
        for headers, code in [
            ({}, "missing_api_key"),
            ({"Authorization": key}, "invalid_api_key"),  # no Bearer
            ({"Authorization": "Basic dTpw"}, "invalid_api_key"),
            ({"Authorization": f"Bearer {other}"}, "invalid_api_key"),
        ]:
            r = _post(app, _body(), headers=headers)
            err = assert_error_shape(r, 401)
            assert err["code"] == code and key not in r.text and r.headers["www-authenticate"] == "Bearer"
        assert model.seen == []
        ok = {"Authorization": f"Bearer {key}"}
        assert _post(app, _body(), headers=ok).status_code == 200
        assert _post(app, _body(logprobs=True), headers={}).status_code == 401  # auth comes first
        assert _run(app, lambda c: c.get("/v1/models")).status_code == 401
        assert _run(app, lambda c: c.get("/health")).status_code == 200
        assert _run(app, lambda c: c.get("/openapi.json")).status_code == 200
        revoke_key(path, entry["id"])
        assert_error_shape(_post(app, _body(), headers=ok), 401)
    finally:
        app.state.worker.close()


async def _until(condition, polls: int = 6000) -> None:
    for _ in range(polls):  # bounded: a hang fails the test instead of stalling it
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never came true")


def test_a_full_queue_is_503_with_retry_after(scripted):
    app, model = scripted  # queue_size=2
    model.gate = threading.Event()

    async def calls(client):
        first = asyncio.create_task(client.post("/v1/completions", json=_body(prompt="first")))
        await _until(model.entered.is_set)  # the worker holds "first"; the queue is empty
        queued = [asyncio.create_task(client.post("/v1/completions", json=_body(prompt=f"q{i}"))) for i in range(2)]
        await _until(lambda: app.state.worker.pending == 2)
        refused = await client.post("/v1/completions", json=_body(prompt="refused"))
        model.gate.set()
        return refused, await first, await asyncio.gather(*queued)

    refused, first, queued = _run(app, calls)
    err = assert_error_shape(refused, 503)
    assert err["code"] == "queue_full" and refused.headers["retry-after"] == "1"
    assert first.status_code == 200 and [q.status_code for q in queued] == [200, 200]
    assert [r.prompts[0] for r in model.seen] == ["first", "q0", "q1"]


def test_a_request_whose_client_left_is_never_run(scripted):
    """A client that times out closes its connection; its queued request is dropped, not
    worked through while the client's retry waits behind it. Over real HTTP (uvicorn on
    127.0.0.1): the in-process transport never disconnects."""
    import uvicorn

    app, model = scripted
    model.gate = threading.Event()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(6000):
            if server.started:
                break
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/v1/completions"
        first = threading.Thread(target=httpx.post, args=(url,), kwargs={"json": _body(prompt="first"), "timeout": 60})
        first.start()
        assert model.entered.wait(60)  # the worker holds "first"
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json=_body(prompt="left"), timeout=0.5)
        for _ in range(6000):  # the server notices the closed connection
            if app.state.worker.clients_gone == 1:
                break
            time.sleep(0.01)
        model.gate.set()
        first.join(60)
        after = httpx.post(url, json=_body(prompt="after"), timeout=60)
        assert after.status_code == 200
        assert [r.prompts[0] for r in model.seen] == ["first", "after"]
        assert app.state.worker.skipped == 1
    finally:
        model.gate.set()
        server.should_exit = True
        thread.join(30)


def _events(r: httpx.Response) -> list:
    assert r.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in r.text.split("\n\n") if b]
    assert all(b.startswith("data: ") for b in blocks)
    assert blocks[-1] == "data: [DONE]"
    return [json.loads(b[len("data: "):]) for b in blocks[:-1]]


def test_stream_sends_each_token_as_an_event_then_done(scripted):
    app, _ = scripted
    whole = _post(app, _body(prompt=["p", "q"], echo=True, logprobs=1)).json()
    events = _events(_post(app, _body(prompt=["p", "q"], echo=True, logprobs=1, stream=True)))
    for c in whole["choices"]:
        mine = [e["choices"][0] for e in events if e["choices"][0]["index"] == c["index"]]
        assert "".join(m["text"] for m in mine) == c["text"]
        assert [m["logprobs"]["tokens"][0] for m in mine] == c["logprobs"]["tokens"]
        assert [m["finish_reason"] for m in mine] == [None] * (len(mine) - 1) + ["length"]
    plain = _events(_post(app, _body(stream=True)))
    assert "".join(e["choices"][0]["text"] for e in plain) == " ok"
    assert all(e["choices"][0]["logprobs"] is None for e in plain)  # none asked for
    assert {e["id"] for e in plain} == {"cmpl-scripted"}


def test_the_openapi_document_states_the_request_rules(tmp_path):
    import schemathesis

    key, _ = create_key(tmp_path / "keys.json")
    app = create_app({"llama-8b": ScriptedModel()}, keys=tmp_path / "keys.json", config=LIMITS)
    try:
        doc = _run(app, lambda c: c.get("/openapi.json")).json()
    finally:
        app.state.worker.close()
    schemathesis.openapi.from_dict(doc)  # a valid OpenAPI document
    req = doc["components"]["schemas"]["CompletionRequest"]
    props = req["properties"]
    assert req["additionalProperties"] is False and set(req["required"]) == {"model", "prompt"}
    assert set(props) == {f for f in CompletionRequest.__dataclass_fields__ if f != "logprobs_cap"}
    assert (props["logprobs"]["type"], props["logprobs"]["minimum"], props["logprobs"]["maximum"]) == ("integer", 0, 20)
    assert props["max_tokens"]["maximum"] == 8 and props["n"]["maximum"] == 2
    assert props["model"]["enum"] == ["llama-8b"]
    for name in NUMERIC_FIELDS:
        assert props[name]["type"] in ("integer", "number"), name
    assert [n for n, p in props.items() if p.get("type") == "boolean"] == ["echo", "stream"]
    post = doc["paths"]["/v1/completions"]["post"]
    assert {"200", "400", "401", "404", "413", "503"} <= set(post["responses"])
    assert "Retry-After" in post["responses"]["503"]["headers"]
    err = doc["components"]["schemas"]["ErrorResponse"]["properties"]["error"]
    assert set(err["required"]) == {"message", "type", "param", "code"}
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


# -- hardening, over real HTTP (uvicorn on 127.0.0.1, as calibkit serve runs it) -------------
def _scripted_app(config: ServerConfig = LIMITS, **kw):
    model = ScriptedModel()
    return create_app({"llama-8b": model}, config=config, **kw), model


def _head(length: int | str, extra: str = "", ctype: str = "application/json") -> bytes:
    return (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


@pytest.fixture
def uvicorn_logs(caplog):
    """caplog, also fed by uvicorn's own loggers (which its logging config keeps from the root)."""
    import logging

    caplog.set_level(logging.DEBUG, logger="calibkit")
    caplog.set_level(logging.DEBUG, logger="uvicorn")
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    for lg in loggers:
        lg.addHandler(caplog.handler)
    yield caplog
    for lg in loggers:
        lg.removeHandler(caplog.handler)


def test_a_body_shorter_than_its_content_length_is_a_json_408_not_a_hang():
    app, model = _scripted_app(dataclasses.replace(LIMITS, body_timeout=1))
    body = json.dumps(_body()).encode()
    try:
        with ThreadedServer(app) as srv:
            # Promise 100 bytes, send 10, then wait: the server answers and closes the connection.
            err = assert_raw_error_shape(srv.raw(_head(100) + body[:10]), 408)
            assert err["code"] == "request_timeout" and "Content-Length" in err["message"]
            # A body trickling in slower than the limit allows is cut off the same way. The trickle
            # stops half way to the limit: a byte sent just after the server closed would draw a
            # reset from the kernel, which discards the answer not yet read.
            with srv.connect() as sock:
                sock.sendall(_head(len(body)))
                for i in range(5):
                    if select.select([sock], [], [], 0.1)[0]:  # the answer came: stop sending
                        break
                    sock.sendall(body[i:i + 1])
                status, headers, _ = parse_raw_response(read_all(sock))
            assert status == 408 and headers["connection"] == "close"
            assert model.seen == []
            assert httpx.post(srv.url + "/v1/completions", json=_body(), timeout=60).status_code == 200
    finally:
        app.state.worker.close()


@pytest.mark.parametrize("raw", [
    _head("abc") + b"{}",                                  # a non-numeric Content-Length
    _head("12, 13") + b"{}",
    b"HELLO THERE\r\n\r\n",                                # not HTTP
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS ClientHello, to a plain port
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
])
def test_malformed_http_is_a_json_400_in_the_error_shape(raw):
    app, model = _scripted_app()
    try:
        with ThreadedServer(app) as srv:
            err = assert_raw_error_shape(srv.raw(raw), 400)
            assert err["code"] == "malformed_http" and "Content-Length" in err["message"]
            assert httpx.post(srv.url + "/v1/completions", json=_body(), timeout=60).status_code == 200
        assert len(model.seen) == 1  # only the well-formed request reached the model
    finally:
        app.state.worker.close()


def test_a_client_leaving_mid_body_is_one_info_line_not_a_traceback(uvicorn_logs):
    import logging

    app, model = _scripted_app()
    try:
        with ThreadedServer(app, log_level="info", log_config=None) as srv:  # keep caplog's handlers
            for _ in range(20):
                with srv.connect() as sock:
                    sock.sendall(_head(100) + b'{"model": ')
                    time.sleep(0.02)
            for _ in range(6000):
                if sum("left while sending" in r.getMessage() for r in uvicorn_logs.records) == 20:
                    break
                time.sleep(0.01)
        left = [r for r in uvicorn_logs.records if "left while sending" in r.getMessage()]
        assert len(left) == 20 and {r.levelno for r in left} == {logging.INFO}
        mine = [r for r in uvicorn_logs.records if r.name.startswith(("uvicorn", "calibkit"))]
        assert [r.getMessage() for r in mine if r.levelno >= logging.WARNING] == []
        assert [r for r in mine if r.exc_info] == []
        assert "Traceback" not in uvicorn_logs.text and model.seen == []
    finally:
        app.state.worker.close()


def test_keys_in_the_query_string_are_refused_and_never_logged(tmp_path, uvicorn_logs):
    key, _ = create_key(tmp_path / "keys.json")
    for keys in (tmp_path / "keys.json", None):
        app, model = _scripted_app(keys=keys)
        try:
            with ThreadedServer(app, log_level="info", log_config=None) as srv:  # keep caplog's handlers
                for name in ("api_key", "key", "access_token"):
                    r = httpx.post(f"{srv.url}/v1/completions?{name}={key}", json=_body(), timeout=60)
                    err = assert_error_shape(r, 401, param=name)
                    assert err["code"] == "key_in_query" and "Authorization: Bearer" in err["message"]
                    assert key not in r.text
                r = httpx.get(f"{srv.url}/v1/models?api_key={key}", timeout=60)
                assert_error_shape(r, 401, param="api_key")
                assert httpx.get(f"{srv.url}/health?x={key}", timeout=60).status_code == 200
            assert model.seen == []
        finally:
            app.state.worker.close()
    access = [r.getMessage() for r in uvicorn_logs.records if r.name == "uvicorn.access"]
    assert len(access) == 10 and all("?[redacted]" in line for line in access), access
    server_lines = [r.getMessage() for r in uvicorn_logs.records if r.name.startswith(("uvicorn", "calibkit"))]
    assert not [line for line in server_lines if key.split("_", 2)[2] in line]  # (httpx logs its own URLs)


def test_only_json_bodies_are_accepted(tmp_path):
    app, model = _scripted_app()
    body = json.dumps(_body())
    try:
        with ThreadedServer(app) as srv:
            url = srv.url + "/v1/completions"
            for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                          "application/jsonp", None):
                headers = {} if ctype is None else {"Content-Type": ctype}
                r = httpx.post(url, content=body, headers=headers, timeout=60)
                err = assert_error_shape(r, 415, param=None)
                assert err["code"] == "unsupported_media_type"
                assert "Content-Type: application/json" in err["message"]
            assert model.seen == []
            for ok in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
                assert httpx.post(url, content=body, headers={"Content-Type": ok}, timeout=60).status_code == 200
    finally:
        app.state.worker.close()


def test_one_request_may_not_ask_for_more_tokens_than_max_request_tokens():
    app, model = _scripted_app(ServerConfig())  # the default limits
    try:
        with ThreadedServer(app) as srv:
            url = srv.url + "/v1/completions"
            huge = _body(prompt=[f"p{i}" for i in range(64)], n=16, max_tokens=512)
            err = assert_error_shape(httpx.post(url, json=huge, timeout=60), 400, param="max_tokens")
            assert err["code"] == "request_too_costly"
            for word in ("prompt", "n", "best_of", "max_tokens", "524288", "8192"):
                assert word in err["message"], word
            err = assert_error_shape(
                httpx.post(url, json=_body(prompt=["a"] * 4, n=2, best_of=5, max_tokens=500), timeout=60), 400)
            assert "4 prompt(s) x 5 (the larger of n and best_of) x 500 max_tokens = 10000" in err["message"]
            assert model.seen == []
            fits = _body(prompt=["a"] * 4, n=4, max_tokens=512)  # 8192 exactly
            assert httpx.post(url, json=fits, timeout=60).status_code == 200
    finally:
        app.state.worker.close()


class TokenModel(ScriptedModel):
    """Generates up to max_tokens "tokens", one per 10 ms, polling ``cancel`` between them."""

    def __init__(self) -> None:
        super().__init__()
        self.generated = 0
        self.stopped = threading.Event()

    def complete(self, req: CompletionRequest, cancel: threading.Event | None = None) -> CompletionResponse:
        from calibkit.server.engine import Cancelled

        self.seen.append(req)
        self.entered.set()
        for _ in range(req.max_tokens or 0):
            if cancel is not None and cancel.is_set():
                self.stopped.set()
                raise Cancelled("stopped")
            self.generated += 1
            time.sleep(0.01)
        return CompletionResponse(id="cmpl-tokens", model=self.name, choices=[
            Choice(index=0, text=" ok", logprobs=None, finish_reason="length")], usage=Usage(1, 1, 2), created=1)


def test_a_running_generation_stops_when_its_client_leaves():
    model = TokenModel()
    app = create_app({"llama-8b": model}, config=ServerConfig(max_tokens_limit=100_000, max_request_tokens=100_000))
    try:
        with ThreadedServer(app) as srv:
            url = srv.url + "/v1/completions"
            with pytest.raises(httpx.ReadTimeout):  # 100,000 tokens would take 1,000 s
                httpx.post(url, json=_body(max_tokens=100_000), timeout=1)
            assert model.stopped.wait(60)
            for _ in range(6000):
                if app.state.worker.cancelled == 1:
                    break
                time.sleep(0.01)
            assert app.state.worker.cancelled == 1 and app.state.worker.clients_gone == 1
            assert model.generated < 100_000
            assert httpx.post(url, json=_body(max_tokens=3), timeout=60).status_code == 200
    finally:
        app.state.worker.close()


def test_thirty_two_first_requests_with_one_key_run_one_scrypt(tmp_path):
    from calibkit.server import KeyFile

    key, entry = create_key(tmp_path / "keys.json")
    keyfile = KeyFile(tmp_path / "keys.json")
    app, model = _scripted_app(keys=keyfile)
    head, kid, secret = key.split("_", 2)
    wrong = f"{head}_{kid}_{'A' * len(secret)}"
    try:
        with ThreadedServer(app) as srv:
            url = srv.url + "/v1/models"
            start = threading.Barrier(32)
            codes: list[int] = []

            def client(k: str) -> None:
                start.wait(60)
                codes.append(httpx.get(url, headers={"Authorization": f"Bearer {k}"}, timeout=120).status_code)

            threads = [threading.Thread(target=client, args=(key,)) for _ in range(32)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert codes == [200] * 32 and keyfile.kdf_calls == 1
            # A wrong secret for an existing id: one scrypt, then remembered, however often it is sent.
            for _ in range(10):
                assert httpx.get(url, headers={"Authorization": f"Bearer {wrong}"}, timeout=60).status_code == 401
            assert keyfile.kdf_calls == 2
            revoke_key(tmp_path / "keys.json", entry["id"])  # and revocation still takes effect at once
            assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=60).status_code == 401
    finally:
        app.state.worker.close()


# -- a real server over the embedded model -------------------------------------------------
REFERENCE_CURL = """curl -s "$ACS_API_BASE/completions" \\
  -H "Authorization: Bearer $ACS_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "llama-8b", "prompt": "The capital of France is", "max_tokens": 1, "logprobs": 5}'
"""

REFERENCE_PYTHON = """
resp = client.completions.create(
    model="llama-8b",
    prompt="The capital of France is",
    max_tokens=1,
    logprobs=5,
)
choice = resp.choices[0]
print(choice.text, choice.logprobs.top_logprobs[0])  # {' a': -1.74, ' Paris': -1.99, ...}
"""


REFERENCE_PAGE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "acs-api-logprobs.txt"


def test_the_examples_here_are_the_reference_pages_verbatim():
    if not REFERENCE_PAGE.exists():
        pytest.skip(f"the reference page is not at {REFERENCE_PAGE}")
    page = REFERENCE_PAGE.read_text()
    assert REFERENCE_CURL.strip() in page
    assert REFERENCE_PYTHON.strip() in page


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """calibkit serve --model llama-8b --keys-file ..., with ACS_API_BASE and ACS_API_KEY to reach it."""
    pytest.importorskip("llama_cpp")
    work = tmp_path_factory.mktemp("serve")
    keys = work / "keys.json"
    key, entry = create_key(keys, name="tests")
    with ServerProcess(["--model", "llama-8b", "--keys-file", str(keys), "--max-tokens-limit", "32"], work) as srv:
        srv.key, srv.keys_path = key, keys
        srv.env = {**os.environ, "ACS_API_BASE": srv.base, "ACS_API_KEY": key}
        yield srv
    assert "Traceback" not in srv.stderr(), srv.stderr()[-3000:]
    assert key not in srv.stderr() and key not in srv.out_path.read_text()


def _check_reference_shape(body: dict, k: int = 5) -> None:
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert body["model"] == "google/gemma-3-270m"  # the alias's real model, as the ACS API reports it
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length"
    lp = choice["logprobs"]
    assert set(lp) == {"text_offset", "tokens", "token_logprobs", "top_logprobs"}
    assert lp["tokens"] == [choice["text"]] and lp["text_offset"] == [0]
    top = lp["top_logprobs"][0]
    assert k <= len(top) <= k + 1  # the sampled token joins when it is not in the top k
    assert top[choice["text"]] == lp["token_logprobs"][0]
    assert all(v <= 0 for v in top.values())
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 1, "total_tokens": 7}


@pytest.mark.model
def test_the_reference_curl_example_runs_verbatim(served):
    r = subprocess.run(["bash", "-c", REFERENCE_CURL], env=served.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    _check_reference_shape(json.loads(r.stdout))
    for field, value in (("logprobs", 5), ("max_tokens", 1)):
        bad = REFERENCE_CURL.replace(f'"{field}": {value}', f'"{field}": true')
        out = subprocess.run(["bash", "-c", bad], env=served.env, capture_output=True, text=True, timeout=120)
        err = json.loads(out.stdout)["error"]
        assert err["type"] == "invalid_request_error" and err["param"] == field


@pytest.mark.model
def test_the_reference_python_example_runs_verbatim_with_openai(served, monkeypatch, capsys):
    from openai import OpenAI

    for k in ("ACS_API_BASE", "ACS_API_KEY"):
        monkeypatch.setenv(k, served.env[k])
    client = OpenAI(base_url=os.environ["ACS_API_BASE"], api_key=os.environ["ACS_API_KEY"])
    scope = {"client": client}
    exec(REFERENCE_PYTHON, scope)
    _check_reference_shape(scope["resp"].model_dump(exclude_none=True))
    printed = capsys.readouterr().out
    assert printed.startswith(scope["choice"].text + " {")


@pytest.mark.model
def test_openai_package_errors_streams_and_echo(served):
    import openai

    client = openai.OpenAI(base_url=served.base, api_key=served.key, max_retries=0)
    for field in ("logprobs", "max_tokens"):
        args = {"model": "llama-8b", "prompt": "x", "max_tokens": 1, field: True}
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(**args)
        assert e.value.status_code == 400 and e.value.body["param"] == field
        assert e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.base, api_key="ck_00000000_wrong", max_retries=0).completions.create(
            model="llama-8b", prompt="x", max_tokens=1)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="x", max_tokens=1)
    assert [m.id for m in client.models.list()] == ["llama-8b"]

    greedy = client.completions.create(model="llama-8b", prompt="The capital of France is", max_tokens=5,
                                       temperature=0, logprobs=2)
    chunks = list(client.completions.create(model="llama-8b", prompt="The capital of France is", max_tokens=5,
                                            temperature=0, logprobs=2, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == greedy.choices[0].text
    assert [c.choices[0].logprobs.tokens[0] for c in chunks] == greedy.choices[0].logprobs.tokens
    assert chunks[-1].choices[0].finish_reason == greedy.choices[0].finish_reason

    echo = client.completions.create(model="llama-8b", prompt="Hello world", max_tokens=0, echo=True, logprobs=0)
    lp = echo.choices[0].logprobs
    assert echo.choices[0].text == "Hello world" and lp.token_logprobs[0] is None and lp.tokens[0] == ""
    assert all(v < 0 for v in lp.token_logprobs[1:])

    a, b = (client.completions.create(model="llama-8b", prompt="Once upon a time", max_tokens=6, seed=11,
                                      temperature=1.0, n=2) for _ in range(2))
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # a seed makes draws repeatable
    assert a.usage.prompt_tokens > 0 and a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens


@pytest.mark.model
def test_the_model_list_says_which_weights_answer_an_alias(served):
    import jsonschema
    import openai

    body = httpx.get(f"{served.base}/models", headers=served.auth(served.key), timeout=60).json()
    (entry,) = body["data"]
    assert entry["id"] == "llama-8b" and entry["root"] == "google/gemma-3-270m"
    assert entry["weights"] == "gemma-3-270m-q4_k_m.gguf" and entry["backend"] == "llama.cpp"
    # The server's own OpenAPI document (what schemathesis checks against) states every field it sends.
    doc = httpx.get(served.base.removesuffix("/v1") + "/openapi.json", timeout=60).json()
    listed = doc["components"]["schemas"]["ModelList"]
    jsonschema.validate(body, listed)
    assert set(entry) <= set(listed["properties"]["data"]["items"]["properties"])
    # and the openai package reads the list, the extra fields kept
    (model,) = openai.OpenAI(base_url=served.base, api_key=served.key, max_retries=0).models.list()
    assert model.id == "llama-8b" and model.model_extra["weights"] == "gemma-3-270m-q4_k_m.gguf"


@pytest.mark.model
def test_greedy_logprobs_are_the_embedded_models(served, local_model):
    prompt = "The capital of France is"
    r = served.post({"model": "llama-8b", "prompt": prompt, "max_tokens": 1, "logprobs": 20, "temperature": 0},
                    served.key)
    top = r.json()["choices"][0]["logprobs"]["top_logprobs"][0]
    mine = dict(local_model.top_tokens(prompt, k=20))
    assert list(top)[:20] == list(mine)
    assert max(abs(top[t] - mine[t]) for t in mine) < 1e-9


@pytest.mark.model
def test_calibkit_client_scores_through_the_server_as_the_embedded_backend(served, local_model):
    import calibkit as ck

    from helpers import sst2

    texts, _ = sst2("dev", n=6)
    tpl = ck.PromptTemplate("Review: {text}\nSentiment:")
    client = ck.Client(served.base, served.key, model="llama-8b", cache=False)
    # Forms of one to three tokens: the server echoes each after the prompt (prefix-cached), the
    # library decodes their later tokens side by side; on the padded schedule they are the same numbers.
    for verb, methods in ((ck.Verbalizer({0: " negative", 1: " positive"}), ("exact", "topk")),
                          (ck.Verbalizer({0: [" bad", " not good at all"], 1: [" good", " very good"]}), ("exact",))):
        for method in methods:
            remote = ck.score(texts, tpl, verb, client, method=method, check=False)
            local = ck.score(texts, tpl, verb, local_model, method=method, check=False)
            assert remote.logprobs.shape == (6, 2)
            np.testing.assert_array_equal(remote.censored, local.censored)
            np.testing.assert_array_equal(remote.logprobs, local.logprobs)
    assert client.requests_made >= 2


@pytest.mark.model
def test_real_limits_a_long_prompt_and_a_revoked_key(served, tmp_path):
    long = served.post({"model": "llama-8b", "prompt": "word " * 3000, "max_tokens": 1}, served.key)
    assert "context" in assert_error_shape(long, 400, "prompt")["message"]
    key, entry = create_key(served.keys_path, name="short-lived")
    ok = {"model": "llama-8b", "prompt": "Hi", "max_tokens": 1}
    assert served.post(ok, key).status_code == 200
    r = subprocess.run([sys.executable, "-m", "calibkit.cli", "keys", "revoke", entry["id"],
                        "--keys-file", str(served.keys_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert_error_shape(served.post(ok, key), 401)
    assert served.post(ok, served.key).status_code == 200
    assert served.alive


@pytest.mark.parametrize(
    "args, words",
    [
        (["--host", "0.0.0.0"], "without authentication"),
        (["--keys-file", "absent.json"], "calibkit keys create --keys-file absent.json"),
        (["--keys-file", "k.json", "--no-auth"], "contradict"),
        (["--model", "tiny=/nonexistent/tiny.gguf"], "is not a file"),
        (["--model", "a", "--model", "a"], "given twice"),
    ],
)
def test_serve_refuses_unsafe_or_broken_setups_before_serving(tmp_path, args, words):
    create_key(tmp_path / "k.json")
    r = subprocess.run([sys.executable, "-m", "calibkit.cli", "serve", "--port", "0", *args],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and words in r.stderr, r.stderr[-2000:]
    assert "on http://" not in r.stdout


class _SetAfter(threading.Event):
    """An event that reads as set from its ``after + 1``-th poll on; counts the polls."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.polls = after, 0

    def is_set(self) -> bool:
        self.polls += 1
        return self.polls > self.after or super().is_set()


@pytest.mark.model
def test_local_completions_stop_between_tokens_once_cancelled(local_model):
    from calibkit.server.completions import LocalCompletions
    from calibkit.server.engine import Cancelled

    gen = LocalCompletions(local_model)
    req = CompletionRequest(model=gen.name, prompt="1, 2, 3, 4,", max_tokens=40, temperature=0)
    want = gen.complete(req)
    assert want.usage.completion_tokens > 5
    cancel = _SetAfter(6)  # one poll before the prompt, then one before each token
    with pytest.raises(Cancelled, match="after 5 token"):
        gen.complete(req, cancel=cancel)
    assert cancel.polls == 7
    again = gen.complete(req)  # the engine is in order after a stop
    assert again.choices[0].text == want.choices[0].text and again.usage == want.usage


@pytest.mark.model
def test_a_real_generation_stops_when_its_client_leaves(local_model):
    from calibkit.server.completions import LocalCompletions

    config = ServerConfig(max_tokens_limit=1500, max_request_tokens=100_000)
    app = create_app({"llama-8b": LocalCompletions(local_model)}, config=config)
    worker = app.state.worker
    try:
        with ThreadedServer(app) as srv:
            url = srv.url + "/v1/completions"
            long = _body(prompt="1, 2, 3, 4,", max_tokens=1500, n=16, temperature=0)  # 24,000 tokens
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(url, json=long, timeout=3)
            for _ in range(12000):
                if worker.cancelled == 1:
                    break
                time.sleep(0.01)
            assert worker.cancelled == 1 and worker.clients_gone == 1
            ok = httpx.post(url, json=_body(prompt="Hi", max_tokens=2), timeout=120)
            assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 2
    finally:
        worker.close()
