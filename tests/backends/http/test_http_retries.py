"""What is retried and what is not, the waits, and the words of the error when the tries run out."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Any

import pytest

import calibkit as ck
from calibkit.api import APIError
from calibkit.backends.http import MalformedResponseError
from calibkit.backends.http.transports import ReadTimeout

from helpers import completion_body
from http_fakes import ok


@pytest.mark.parametrize("status", [408, 409, 429, 502, 503, 504])
def test_retryable_statuses_are_retried(scripted_server, status) -> None:
    scripted_server.script = [(status, {"retry-after-ms": "20"}, {"error": {"message": "busy"}})]
    scripted_server.default = ok
    api = ck.Client(scripted_server.url, model="m", cache=False)
    api.complete(api.make_request("x", max_tokens=1))
    assert len(scripted_server.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_never_retried(scripted_server, status) -> None:
    scripted_server.default = lambda body: (status, {"retry-after": "0.01"},
                                            {"error": {"message": "no", "type": "invalid_request_error", "param": "logprobs"}})
    api = ck.Client(scripted_server.url, model="m", max_retries=5, cache=False)
    with pytest.raises(APIError) as e:
        api.complete(api.make_request("x", max_tokens=1))
    assert e.value.status_code == status and e.value.param == "logprobs"
    assert len(scripted_server.requests) == 1
    if status == 401:
        assert "ACS_API_KEY" in str(e.value)


def test_a_500_is_retried_once_unless_it_says_it_is_transient(scripted_server) -> None:
    plain = (500, {"retry-after-ms": "10"}, {"error": {"message": "internal error"}})
    scripted_server.default = lambda body: plain
    api = ck.Client(scripted_server.url, model="m", max_retries=5, cache=False)
    with pytest.raises(APIError) as e:
        api.complete(api.make_request("x", max_tokens=1))
    assert e.value.status_code == 500 and len(scripted_server.requests) == 2

    scripted_server.requests.clear()
    transient = (500, {"retry-after-ms": "10"}, {"message": "transient failure, try again"})  # flat shape
    scripted_server.script = [transient, transient, transient]
    scripted_server.default = ok
    api.complete(api.make_request("y", max_tokens=1))
    assert len(scripted_server.requests) == 4


def test_retry_after_seconds_is_honoured_and_retries_are_bounded(scripted_server) -> None:
    scripted_server.script = [(429, {"retry-after": "0.3"}, {"error": {"message": "slow down"}})]
    scripted_server.default = ok
    api = ck.Client(scripted_server.url, model="m", cache=False)
    t = time.monotonic()
    api.complete(api.make_request("x", max_tokens=1))
    assert time.monotonic() - t >= 0.3
    scripted_server.requests.clear()
    scripted_server.default = lambda body: (503, {"retry-after-ms": "5"}, {"error": {"message": "down"}})
    with pytest.raises(APIError):
        ck.Client(scripted_server.url, model="m", max_retries=3, cache=False).complete(
            api.make_request("x", max_tokens=1))
    assert len(scripted_server.requests) == 4


def test_connection_errors_are_retried_then_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    api = ck.Client(f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, cache=False)
    with pytest.raises(APIError, match="could not reach .* after 2 tries: ConnectError") as e:
        api.complete(api.make_request("x", max_tokens=1))
    assert "timed out" not in str(e.value)
    assert api.limiter.backoffs == 0  # a server that is not there is not a busy one


def test_a_server_too_slow_for_any_try_is_reported_as_timed_out(scripted_server) -> None:
    scripted_server.default = lambda body: (200, {}, ("sleep", 1.0, ok(body)[2]))
    api = ck.Client(scripted_server.url, model="m", timeout=0.2, max_retries=1, cache=False)
    with pytest.raises(APIError) as e:
        api.complete(api.make_request("x", max_tokens=1))
    message = str(e.value)
    assert message.startswith(f"timed out waiting for {scripted_server.url}/completions: no answer within 0.2 s "
                               "on 2 tries (ReadTimeout; the server was reached but is slow or busy; the client had "
                               "cut its requests in flight from 8 to 2)")
    assert "pass a larger timeout= or a smaller max_in_flight=" in message
    assert "could not reach" not in message
    assert isinstance(e.value.__cause__, ReadTimeout)  # calibkit's own, whatever the transport
    assert len(scripted_server.requests) == 2


def test_a_server_that_drops_the_connection_is_not_said_to_be_unreachable() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    port = listener.getsockname()[1]
    done = threading.Event()

    def accept_and_hang_up() -> None:  # reads each request, then closes without a word
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)

    hang_up = threading.Thread(target=accept_and_hang_up, daemon=True)
    hang_up.start()
    try:
        api = ck.Client(f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, cache=False)
        with pytest.raises(APIError, match=r"lost the connection to .* on 2 tries: the server was reached") as e:
            api.complete(api.make_request("x", max_tokens=1))
        assert "could not reach" not in str(e.value) and api.limiter.backoffs == 0
    finally:
        done.set()
        hang_up.join()
        listener.close()


def test_a_200_cut_short_by_a_proxy_is_retried_like_a_dropped_connection(scripted_server, caplog) -> None:
    whole = json.dumps(completion_body(["x"])).encode()
    cut = (200, {}, whole[: len(whole) // 2])  # a proxy dropped the rest: valid HTTP, half the JSON
    scripted_server.script = [cut, (200, {}, b""), (200, {}, b"\xff\xfe not utf-8")]
    scripted_server.default = ok
    api = ck.Client(scripted_server.url, model="m", max_retries=3, cache=False)
    with caplog.at_level(logging.WARNING, logger="calibkit.http"):
        assert api.top_k(["x"], 2) == [{" a": -0.5, " b": -1.5}]
    assert len(scripted_server.requests) == 4 and api.http_requests == 1
    assert "not valid JSON" in caplog.text

    scripted_server.requests.clear()
    scripted_server.default = lambda body: cut
    with pytest.raises(MalformedResponseError) as e:
        ck.Client(scripted_server.url, model="m", max_retries=2, cache=False).top_k(["y"], 2)
    assert len(scripted_server.requests) == 3  # bounded by max_retries
    msg = str(e.value)
    assert "answered 200 with a body that is not valid JSON" in msg and "retried 2 times" in msg
    assert repr(whole[: len(whole) // 2].decode()[-20:])[1:-1] in msg  # what came back: its end, where the cut is
    assert isinstance(e.value, ValueError)


def test_a_truncated_answer_is_retried_within_a_pack_and_the_others_are_kept(scripted_server) -> None:
    calls = []

    def cut_first(body: dict) -> tuple[int, dict, Any]:
        calls.append(body["prompt"])
        whole = json.dumps(ok(body)[2]).encode()
        return (200, {}, whole[:-3]) if len(calls) == 1 else (200, {}, whole)

    scripted_server.default = cut_first
    api = ck.Client(scripted_server.url, model="m", max_prompts_per_request=2, cache=False)
    assert len(api.top_k(["a", "b", "c"], 2)) == 3
    assert len(scripted_server.requests) == 3  # two packs, one of them sent twice
