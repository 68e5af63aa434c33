"""The public Client: settings, the two questions, its one loop and connection pool, pickling,
resuming through the cache, and the numbers against the embedded model over llama-cpp-python's server."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

import calibkit as ck
from calibkit.api import APIError, InvalidRequestError
from calibkit.backends.http.transports import HttpxTransport

from helpers import completion_body, sst2, unpadded
from http_fakes import TPL, VERB, ok


def test_from_env_reads_base_and_key(monkeypatch, scripted_server) -> None:
    monkeypatch.setenv("ACS_API_BASE", scripted_server.url)
    monkeypatch.setenv("ACS_API_KEY", "sk-test-123")
    scripted_server.default = ok
    api = ck.Client.from_env(model="llama-8b", cache=False)
    r = api.complete(api.make_request("The capital of France is", max_tokens=1, logprobs=5))
    assert r.choices[0].logprobs.top_logprobs[0] == {" a": -0.5, " b": -1.5}
    sent = scripted_server.requests[0]
    assert sent["path"] == "/v1/completions"
    assert sent["headers"]["Authorization"] == "Bearer sk-test-123"
    assert sent["body"] == {"model": "llama-8b", "prompt": "The capital of France is", "max_tokens": 1, "logprobs": 5}
    monkeypatch.delenv("ACS_API_BASE")
    with pytest.raises(ValueError, match="ACS_API_BASE is not set"):
        ck.Client.from_env()


def test_bad_values_fail_locally_before_anything_is_sent(scripted_server) -> None:
    api = ck.Client(scripted_server.url, model="m", cache=False)
    with pytest.raises(InvalidRequestError) as e:
        api.make_request("x", max_tokens=1, logprobs=True)
    assert e.value.param == "logprobs"
    with pytest.raises(InvalidRequestError, match="between 0 and 5"):
        ck.Client(scripted_server.url, model="m", logprobs_cap=5, cache=False).make_request("x", logprobs=6)
    assert scripted_server.requests == []
    with pytest.raises(ValueError, match="base_url"):
        ck.Client("localhost:8000")


def test_pacing_settings_are_checked_in_their_argument_names() -> None:
    for bad in (0, -1.0, float("nan"), float("inf"), True, "60"):
        with pytest.raises(ValueError, match=r"^timeout= must be a positive number of seconds"):
            ck.Client("http://127.0.0.1:1/v1", model="m", timeout=bad, cache=False)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=r"^max_in_flight= must be an integer >= 1"):
            ck.Client("http://127.0.0.1:1/v1", model="m", max_in_flight=bad, cache=False)


def test_works_inside_a_running_event_loop_without_a_thread_per_call(scripted_server, monkeypatch) -> None:
    scripted_server.default = ok
    api = ck.Client(scripted_server.url, model="m", cache=False)

    async def notebook_cell() -> str:
        return api.complete(api.make_request("x", max_tokens=1)).choices[0].text

    assert asyncio.run(notebook_cell()) == " a"  # the first call starts the client's one loop thread
    started: list[str] = []
    thread_start = threading.Thread.start

    def recording_start(self: threading.Thread) -> None:
        started.append(self.name)
        thread_start(self)

    monkeypatch.setattr(threading.Thread, "start", recording_start)
    for _ in range(5):
        assert asyncio.run(notebook_cell()) == " a"
    # no thread, nor a pool of them, per call (the test server's request handlers aside)
    assert [name for name in started if "process_request" not in name] == []
    api.close()


def test_one_connection_pool_for_the_clients_life_and_close(scripted_server, monkeypatch) -> None:
    started: list[threading.Thread] = []
    thread_start = threading.Thread.start

    def recording_start(self: threading.Thread) -> None:
        started.append(self)
        thread_start(self)

    monkeypatch.setattr(threading.Thread, "start", recording_start)
    scripted_server.default = ok
    with ck.Client(scripted_server.url, model="m", max_in_flight=1, cache=False) as api:
        for p in "abc":
            api.complete(api.make_request(p, max_tokens=1))
        api.top_k(["d"], 2)
        assert api.continuation_logprobs([("e", " a")])[0] is not None
    assert len({r["peer"] for r in scripted_server.requests}) == 1  # one kept-alive connection served all
    loops = [t for t in started if t.name == "calibkit-http"]
    assert len(loops) == 1 and not loops[0].is_alive()  # one loop thread for the client's life, ended by close
    with pytest.raises(RuntimeError, match="closed"):
        api.complete(api.make_request("x", max_tokens=1))


def test_the_two_questions_over_http(scripted_server) -> None:
    scripted_server.default = ok
    api = ck.Client(scripted_server.url, model="m", logprobs_cap=5, cache=False)
    assert api.top_k(["x"], 2) == [{" a": -0.5, " b": -1.5}]
    assert scripted_server.requests[-1]["body"] == {"model": "m", "prompt": "x", "max_tokens": 1, "logprobs": 2,
                                                    "temperature": 0}
    with pytest.raises(ValueError, match="top-k cap is 5"):
        api.top_k(["x"], 6)
    scripted_server.default = lambda body: (200, {}, completion_body([body["prompt"]], top={" a": -0.5}) | {
        "choices": [{"index": 0, "text": "x", "logprobs": None, "finish_reason": "length"}]})
    with pytest.raises(APIError, match="returned no top_logprobs"):
        api.top_k(["y"], 2)
    api.close()


def test_model_defaults_to_the_first_listed(scripted_server) -> None:
    scripted_server.script = [(200, {}, {"object": "list", "data": [{"id": "llama-8b"}, {"id": "other"}]})]
    scripted_server.default = ok
    api = ck.Client(scripted_server.url, cache=False)
    assert api.model_name == "llama-8b"
    assert scripted_server.requests[0]["path"] == "/v1/models"


def test_cache_key_ignores_the_api_key_and_an_interrupted_run_resumes(scripted_server, tmp_path) -> None:
    cache = ck.ResponseCache(tmp_path / "c.sqlite")
    answered: list[str] = []

    def fail_after_three(body: dict) -> tuple[int, dict, dict]:
        if body.get("echo"):  # the forms' tokens, learnt once per run
            return ok(body)
        if len(answered) == 3:
            return 401, {}, {"error": {"message": "key expired", "type": "authentication_error"}}
        answered.append(body["prompt"])
        return ok(body)

    scripted_server.default = fail_after_three
    api = ck.Client(scripted_server.url, "old-key", model="m", max_in_flight=1, max_prompts_per_request=1, cache=cache)
    X = [f"review {i}" for i in range(6)]
    with pytest.raises(APIError):
        ck.score(X, TPL, {0: " a", 1: " b"}, api, method="topk", k=2, check=False)
    failed_run = [r["body"]["prompt"] for r in scripted_server.requests if not r["body"].get("echo")]
    assert len(failed_run) == 4  # after the 401, nothing more was sent

    def record(body: dict) -> tuple[int, dict, dict]:
        if not body.get("echo"):
            answered.append(body["prompt"])
        return ok(body)

    scripted_server.default = record
    renewed = ck.Client(scripted_server.url, "new-key", model="m", max_in_flight=1, max_prompts_per_request=1, cache=cache)
    s = ck.score(X, TPL, {0: " a", 1: " b"}, renewed, method="topk", k=2, check=False)
    assert sorted(answered) == sorted(TPL.format(text=x) for x in X)  # every prompt answered exactly once
    assert s.provenance["requests"] == 3
    assert s.provenance["cache_hits"] == 3 + 2  # three answers and the two forms' tokens


def test_a_pickled_client_holds_no_api_key(scripted_server, monkeypatch) -> None:
    import pickle

    monkeypatch.delenv("ACS_API_KEY", raising=False)
    key = "sk-live-9f8e7d6c5b4a"
    api = ck.Client(scripted_server.url, key, model="m", headers={"X-Api-Key": key, "X-Trace": "t1"}, cache=False)
    blob = pickle.dumps(api)
    assert key.encode() not in blob
    clf = ck.LogprobClassifier(backend=api, template=TPL, verbalizer=VERB)
    assert key.encode() not in pickle.dumps(clf)

    # unpickled without ACS_API_KEY: no key, and a 401 says what to do
    copy = pickle.loads(blob)
    assert copy.api_key is None and copy.headers == {"X-Trace": "t1"}
    scripted_server.default = lambda body: (
        (401, {}, {"error": {"message": "missing key", "type": "authentication_error"}})
        if "Authorization" not in scripted_server.requests[-1]["headers"] else ok(body))
    with pytest.raises(APIError, match="set ACS_API_KEY or pass api_key=") as e:
        copy.top_k(["x"], 2)
    assert e.value.status_code == 401 and "no API key" in str(e.value)

    # unpickled with ACS_API_KEY: the key comes from there
    monkeypatch.setenv("ACS_API_KEY", "sk-from-env")
    copy = pickle.loads(blob)
    assert copy.top_k(["x"], 2) == [{" a": -0.5, " b": -1.5}]
    assert scripted_server.requests[-1]["headers"]["Authorization"] == "Bearer sk-from-env"
    again = pickle.loads(pickle.dumps(clf)).backend
    assert again.api_key == "sk-from-env" and b"sk-from-env" not in pickle.dumps(again)
    # the original keeps its key
    assert api.api_key == key


@pytest.mark.parametrize("method", ["auto", "topk", "exact"])
def test_a_merging_form_is_the_same_error_over_http_as_on_the_embedded_model(scripted_server, local_model,
                                                                               method) -> None:
    tpl, verb = "Review: {text}\nSentiment: pos", {"pos": "itive", "neg": "ition"}
    scripted_server.default = ok  # echo: whitespace-led words, so " pos" + "itive" is one token " positive"
    api = ck.Client(scripted_server.url, model="m", cache=False)
    with pytest.raises(ck.TokenizationError) as over_http:
        ck.score(["a great film"], tpl, verb, api, method=method)
    with pytest.raises(ck.TokenizationError) as embedded:
        ck.score(["a great film"], tpl, verb, local_model, method=method)
    assert str(over_http.value) == str(embedded.value)
    assert "the form 'itive' merges with the end of prompt 0" in str(over_http.value)
    assert not any(r["body"].get("logprobs", 0) > 0 for r in scripted_server.requests)  # no top-k was asked


class AlternatingModels(httpx.AsyncBaseTransport):
    """Sends each request to the next of two aliases of the same model.

    llama-cpp-python's server reuses the previous request's key/value cache for any
    shared prefix (BOS at least), and llama.cpp's numbers depend on how a prompt is
    cut into decode batches. Its proxy reloads the model when the alias changes, so
    alternating aliases makes every request a fresh decode, as the embedded backend's.
    """

    def __init__(self, aliases: list[str]):
        self.aliases = aliases
        self.i = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            body["model"] = self.aliases[self.i % len(self.aliases)]
            self.i += 1
            request = httpx.Request(request.method, request.url, headers={k: v for k, v in request.headers.items()
                                                                         if k.lower() != "content-length"},
                                    content=json.dumps(body).encode())
        async with httpx.AsyncHTTPTransport() as inner:  # one per request: each call has its own event loop
            response = await inner.handle_async_request(request)
            await response.aread()
        return response


@pytest.fixture(scope="module")
def llama_cpp_server(tmp_path_factory, local_model):
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server] (the dev extra)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # a small context: with logits_all the server keeps n_ctx x n_vocab floats
    model = {"model": local_model.model_path, "n_ctx": 256, "n_batch": local_model.n_batch,
             "n_ubatch": local_model.n_batch, "flash_attn": True, "logits_all": True, "verbose": False}
    cfg = tmp_path_factory.mktemp("server") / "config.json"
    cfg.write_text(json.dumps({"host": "127.0.0.1", "port": port,
                               "models": [{**model, "model_alias": "gemma-a"}, {**model, "model_alias": "gemma-b"}]}))
    # llama-cpp-python's own server, loading the model as the engine does
    proc = subprocess.Popen([sys.executable, "-m", "calibkit.backends.llamacpp.llama_server",
                             "--config_file", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("llama_cpp.server exited at start")
            time.sleep(0.25)
        else:
            raise RuntimeError("llama_cpp.server did not start in 60 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_http_topk_equals_embedded_exact_inside_the_top_k(llama_cpp_server, local_model) -> None:
    # prompts whose llama-cpp-python decode needs no pad rows, so both sides compute the same numbers;
    # the shortest first: the client echoes the first prompt with each label to read the labels' tokens,
    # and llama-cpp-python's echo sorts the whole vocabulary at every token (seconds per request)
    X = sorted((x for x in sst2("dev", 48)[0]
                if unpadded(len(local_model.token_ids(TPL.format(text=x), add_bos=True)), local_model.n_batch)),
               key=len)[:16]
    api = ck.Client(llama_cpp_server, model="gemma", max_prompts_per_request=1, max_in_flight=1,
                    echo_max_tokens=1, cache=False,
                    transport=HttpxTransport(1, transport=AlternatingModels(["gemma-a", "gemma-b"])))
    http = ck.score(X, TPL, VERB, api, method="topk", k=20)
    local = ck.score(X, TPL, VERB, local_model, method="exact")
    inside = ~http.censored
    assert inside.sum() >= 8, "too few labels inside the top-20 to compare"
    np.testing.assert_allclose(http.logprobs[inside], local.logprobs[inside], atol=1e-3, rtol=0)
    # outside the top-k, the bound holds
    assert (local.logprobs[~inside] <= http.logprobs[~inside] + 1e-3).all()
