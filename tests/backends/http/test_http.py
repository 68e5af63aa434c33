"""The HTTP client against real servers on 127.0.0.1: a scripted one for the wire
behaviour (packing, routing, retries, concurrency, resumption) and llama-cpp-python's
own server over the same GGUF for the numbers."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
import zlib
from typing import Any

import httpx
import numpy as np
import pytest

import calibkit as ck
from calibkit.api import APIError, InvalidRequestError
from calibkit.backends.http import AdaptiveLimiter, MalformedResponseError

from helpers import ScriptedServer, completion_body, echo_body, sst2, unpadded

TPL = "Review: {text}\nSentiment:"
VERB = {0: " negative", 1: " positive"}


def ok(body: dict) -> tuple[int, dict, dict]:
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    if body.get("echo"):
        return 200, {}, echo_body(prompts)
    return 200, {}, completion_body(prompts, n=body.get("n", 1))


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


def test_many_prompts_per_request_routed_back_by_index(scripted_server) -> None:
    def answer(body: dict) -> tuple[int, dict, dict]:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        out = completion_body(prompts)
        for c, p in zip(out["choices"], prompts):  # each choice names its prompt
            c["text"] = p.upper()
        out["choices"].reverse()  # servers need not keep order: the index routes
        return 200, {}, out

    scripted_server.default = answer
    api = ck.Client(scripted_server.url, model="m", max_prompts_per_request=2, cache=False)
    reqs = [api.make_request(f"p{i}", max_tokens=1, logprobs=1) for i in range(5)]
    out = api.complete(reqs)
    assert [r.choices[0].text for r in out] == ["P0", "P1", "P2", "P3", "P4"]
    assert sorted(len(r["body"]["prompt"]) if isinstance(r["body"]["prompt"], list) else 1
                  for r in scripted_server.requests) == [1, 2, 2]
    merged = api.complete(api.make_request(["a", "b", "c"], max_tokens=1, logprobs=1))
    assert [c.text for c in merged.choices] == ["A", "B", "C"] and [c.index for c in merged.choices] == [0, 1, 2]


def test_a_server_that_takes_one_prompt_per_request_gets_a_clear_error(scripted_server) -> None:
    scripted_server.default = lambda body: (200, {}, completion_body(["only one"]))
    api = ck.Client(scripted_server.url, model="m", max_prompts_per_request=4, cache=False)
    with pytest.raises(ValueError, match="max_prompts_per_request=1"):
        api.complete([api.make_request(p, max_tokens=1) for p in "abc"])


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


# -- pacing: a server slower than the client's defaults ------------------------------------


def top_of(prompt: str, k: int) -> dict[str, float]:
    """The top-k of a next-token distribution of the prompt's own, so that an answer
    routed to the wrong prompt would change the scores."""
    h = zlib.crc32(prompt.encode())
    dist = {" the": -0.4, " a": -2.0, " positive": -1.2 - (h % 97) / 40, " negative": -1.2 - (h // 97 % 89) / 40}
    return dict(sorted(dist.items(), key=lambda kv: -kv[1])[:k])


def faithful(body: dict) -> tuple[int, dict, dict]:
    """Correct completions: top-k from ``top_of``, echo from ``echo_body``."""
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    if body.get("echo"):
        return 200, {}, echo_body(prompts)
    out = completion_body(prompts)
    out["choices"] = [completion_body([p], top=top_of(p, body.get("logprobs") or 1))["choices"][0] | {"index": i}
                      for i, p in enumerate(prompts)]
    return 200, {}, out


def one_at_a_time(seconds: float, per_prompt: bool = False):
    """A ScriptedServer answer that works on one request at a time, ``seconds`` each (or
    each prompt), as a one-worker server does (a request whose client gave up is still
    worked on)."""
    worker = threading.Lock()

    def answer(body: dict) -> tuple[int, dict, dict]:
        with worker:
            n = len(body["prompt"]) if per_prompt and isinstance(body["prompt"], list) else 1
            time.sleep(seconds * n)
            return faithful(body)

    return answer


def scores_from_a_fast_server(X: list[str], settings: dict, method: str) -> ck.LabelScores:
    """What a client with ``settings`` scores against a server that answers at once."""
    fast = ScriptedServer()
    try:
        fast.default = faithful
        return ck.score(X, TPL, VERB, ck.Client(fast.url, **settings), method=method, k=3, check=False)
    finally:
        fast.close()


def test_a_slow_one_at_a_time_server_paces_the_client_and_the_scores_are_right(scripted_server, caplog) -> None:
    X, _ = sst2("dev", 24)
    settings = dict(model="m", max_prompts_per_request=2, cache=False)
    expected = scores_from_a_fast_server(X, settings, "auto")
    assert expected.censored.any() and expected.exact.any()  # both passes: top-k, then echo
    # 8 requests at once take 0.8 s at this server: the last ones time out at 0.5 s.
    scripted_server.default = one_at_a_time(0.1)
    api = ck.Client(scripted_server.url, timeout=0.5, max_in_flight=8, max_retries=4, **settings)
    with caplog.at_level(logging.WARNING, logger="calibkit.http"):
        got = ck.score(X, TPL, VERB, api, method="auto", k=3, check=False)
    np.testing.assert_array_equal(got.logprobs, expected.logprobs)
    np.testing.assert_array_equal(got.censored, expected.censored)
    np.testing.assert_array_equal(got.exact, expected.exact)
    assert len(scripted_server.requests) > api.http_requests  # some tries timed out and were sent again
    assert api.limiter.backoffs >= 1 and api.limiter.limit < 8
    cuts = [r.getMessage() for r in caplog.records if r.name == "calibkit.http"]
    assert cuts and all(r.levelno == logging.WARNING for r in caplog.records if r.name == "calibkit.http")
    assert "within 0.5 s: requests in flight cut from 8 to 4" in cuts[0]


def test_a_request_too_big_to_answer_in_time_is_split_until_it_is_not(scripted_server, caplog) -> None:
    X, _ = sst2("dev", 16)
    settings = dict(model="m", max_prompts_per_request=16, cache=False)
    expected = scores_from_a_fast_server(X, settings, "topk")
    # 0.1 s a prompt: 16 prompts take 1.6 s, more than the timeout even alone; 4 take 0.4 s.
    scripted_server.default = one_at_a_time(0.1, per_prompt=True)
    api = ck.Client(scripted_server.url, timeout=0.7, max_in_flight=1, max_retries=2, **settings)
    with caplog.at_level(logging.WARNING, logger="calibkit.http"):
        got = ck.score(X, TPL, VERB, api, method="topk", k=3, check=False)
    np.testing.assert_array_equal(got.logprobs, expected.logprobs)
    sizes = [len(p) if isinstance(p := r["body"]["prompt"], list) else 1 for r in scripted_server.requests]
    assert max(sizes) == 16 and min(sizes) <= 4 and api.splits >= 2
    assert any("request of 16 prompts: sending them as requests of 8" in r.getMessage() for r in caplog.records)


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
    assert isinstance(e.value.__cause__, httpx.ReadTimeout)
    assert len(scripted_server.requests) == 2


@pytest.mark.parametrize("status, headers", [(503, {"retry-after": "0.05"}), (503, {}), (429, {"retry-after-ms": "20"})])
def test_an_overloaded_answer_halves_the_requests_in_flight(scripted_server, caplog, status, headers) -> None:
    scripted_server.script = [(status, headers, {"error": {"message": "busy", "type": "server_error"}})]
    scripted_server.default = ok
    api = ck.Client(scripted_server.url, model="m", max_in_flight=8, max_prompts_per_request=1, cache=False)
    with caplog.at_level(logging.WARNING, logger="calibkit.http"):
        api.complete(api.make_request("x", max_tokens=1))
    assert (api.limiter.limit, api.limiter.backoffs) == (4, 1)
    assert len(scripted_server.requests) == 2  # retried, under the new limit
    [line] = [r.getMessage() for r in caplog.records if r.name == "calibkit.http"]
    assert f"answered {status} (busy" in line and line.endswith("requests in flight cut from 8 to 4")
    # a run of answers grows it back, one at a time
    api.complete([api.make_request(f"p{i}", max_tokens=1) for i in range(4 + 5 + 6 + 7)])
    assert (api.limiter.limit, api.limiter.backoffs) == (8, 1)


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


def test_adaptive_limiter_bounds_waits_in_order_and_cuts_once_per_burst() -> None:
    lim = AdaptiveLimiter(4)
    most = 0
    order: list[int] = []

    async def request(i: int, overloaded: bool) -> None:
        nonlocal most
        async with lim.slot() as s:
            order.append(i)
            most = max(most, lim.in_flight)
            await asyncio.sleep(0.01)
            s.overloaded() if overloaded else s.succeeded()

    async def main() -> None:
        # four sent at once all meet overload: one burst, one cut
        await asyncio.gather(*(request(i, True) for i in range(4)))
        assert (lim.limit, lim.backoffs) == (2, 1)
        # sent under the new limit, they cut again; then answers grow it back
        await asyncio.gather(*(request(i, i == 4) for i in range(4, 12)))

    asyncio.run(main())
    assert order == list(range(12)) and most <= 4 and lim.in_flight == 0
    assert lim.backoffs == 2 and lim.limit >= 2
    with pytest.raises(ValueError, match="maximum"):
        AdaptiveLimiter(0)


def test_pacing_settings_are_checked_in_their_argument_names() -> None:
    for bad in (0, -1.0, float("nan"), float("inf"), True, "60"):
        with pytest.raises(ValueError, match=r"^timeout= must be a positive number of seconds"):
            ck.Client("http://127.0.0.1:1/v1", model="m", timeout=bad, cache=False)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=r"^max_in_flight= must be an integer >= 1"):
            ck.Client("http://127.0.0.1:1/v1", model="m", max_in_flight=bad, cache=False)


def test_requests_in_flight_are_bounded_and_spread_over_replicas() -> None:
    servers = [ScriptedServer(), ScriptedServer()]
    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    def slow(body: dict) -> tuple[int, dict, dict]:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return ok(body)

    try:
        for s in servers:
            s.default = slow
        api = ck.Client([s.url for s in servers], model="m", max_in_flight=3, max_prompts_per_request=1, cache=False)
        api.complete([api.make_request(f"p{i}", max_tokens=1) for i in range(12)])
        assert state["max"] == 3
        assert [len(s.requests) for s in servers] == [6, 6]
    finally:
        for s in servers:
            s.close()


class PortsServer(abc.ABC):
    """An asyncio server on several ports of 127.0.0.1 (a thread with its own loop) that reads
    completions requests and answers each with what :meth:`respond` returns, after it returns."""

    def __init__(self, ports: int):
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(ports),), daemon=True)
        self.thread.start()
        assert self.ready.wait(30)

    async def _main(self, ports: int) -> None:
        self.stop = asyncio.Event()
        await self.started()
        servers = [await asyncio.start_server(self._serve, "127.0.0.1", 0) for _ in range(ports)]
        self.urls = [f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}/v1" for s in servers]
        self.ready.set()
        await self.stop.wait()
        for s in servers:
            s.close()
        self.stopped()

    async def started(self) -> None:
        """Set up on the server's loop, before it listens."""

    def stopped(self) -> None:
        """Clean up on the server's thread, after it stopped listening."""

    @abc.abstractmethod
    async def respond(self, body: dict) -> dict:
        """The completions body answering ``body``."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected()
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                data = json.dumps(await self.respond(json.loads(await reader.readexactly(length)))).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                             % len(data) + data)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def connected(self) -> None:
        """Called for each connection a client opens."""

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


class HoldingServer(PortsServer):
    """Holds every completions request until ``hold`` of them are in flight at once, then answers
    those; counts the most in flight at once and the connections opened."""

    def __init__(self, ports: int, hold: int):
        self.hold = hold
        self.in_flight = self.most = self.requests = self.connections = 0
        super().__init__(ports)

    async def started(self) -> None:
        self.full = asyncio.Event()

    def connected(self) -> None:
        self.connections += 1

    async def respond(self, body: dict) -> dict:
        self.requests += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= self.hold:
            self.full.set()
        # Held until the rest of the round is in; a client that never gets there is
        # let go after a while, and the count of the most in flight shows it.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.full.wait(), 10)
        self.in_flight -= 1
        if self.in_flight == 0:
            self.full.clear()
        return faithful(body)[2]


def test_the_configured_requests_are_in_flight_at_once_over_several_base_urls() -> None:
    server = HoldingServer(ports=4, hold=64)
    try:
        with ck.Client(server.urls, model="m", max_in_flight=64, max_prompts_per_request=1, cache=False) as api:
            prompts = [f"review {i}" for i in range(64 * 5)]
            assert api.top_k(prompts, 2) == [top_of(p, 2) for p in prompts]
        assert server.requests == len(prompts)
        assert server.most == 64  # every round had all 64 out at once: none waited for a connection
        # and the rounds reused the connections of the ones before (320 requests); a few more than 64
        # may open where a replica's next request goes out before its last answer is read
        assert 64 <= server.connections < 2 * 64
    finally:
        server.close()


class DelayingServer(PortsServer):
    """Answers each completions request from ``delay`` to twice that after it came, each prompt its
    own time. At each request's arrival it notes how many others were in flight, and how many
    answers ``cache`` (read on its own thread) held."""

    def __init__(self, ports: int, delay: float, cache: ck.ResponseCache):
        self.delay, self.cache = delay, cache
        self.in_flight = 0
        self.seen: list[int] = []  # in flight at each arrival, the arrival not counted
        self.cached: list[int] = []  # answers in the cache at each arrival
        super().__init__(ports)

    def stopped(self) -> None:
        self.cache.close()  # this thread's connection

    async def respond(self, body: dict) -> dict:
        self.seen.append(self.in_flight)
        self.cached.append(len(self.cache))
        self.in_flight += 1
        # from delay to twice that, each prompt its own: answers do not all come at once
        await asyncio.sleep(self.delay * (1 + zlib.crc32(json.dumps(body["prompt"]).encode()) % 1000 / 1000))
        self.in_flight -= 1
        return faithful(body)[2]


def test_requests_stay_in_flight_across_batches_and_answers_are_cached_as_they_come(tmp_path) -> None:
    # Backend._ask used to hand the client a batch of max_in_flight x max_prompts_per_request
    # questions at a time and wait for all its answers (then cache them) before the next: the
    # first request of every batch found nothing in flight. Now the client gets a window of
    # many batches and keeps max_in_flight requests out all along, handing each answer back to
    # be cached as it comes; a request goes out only while fewer than max_in_flight are sent and
    # not yet cached, so that a run killed at any point loses at most that many.
    n = 16
    server = DelayingServer(ports=2, delay=0.05, cache=ck.ResponseCache(tmp_path / "c.sqlite"))
    progress: list[int] = []
    try:
        with ck.Client(server.urls, model="m", max_in_flight=n, max_prompts_per_request=1,
                       cache=tmp_path / "c.sqlite") as api:
            prompts = [f"review {i}" for i in range(5 * n)]
            assert api.top_k(prompts, 2, progress=progress.append) == [top_of(p, 2) for p in prompts]
            assert api.requests_made == 5 * n and sum(progress) == 5 * n
            assert len(progress) > 1  # handed back in groups as they came, not all at the end
    finally:
        server.close()
    assert len(server.seen) == 5 * n and max(server.seen) == n - 1
    later = server.seen[n:]
    assert min(later) >= 1, server.seen  # no barrier: never all answered and nothing sent
    assert sum(k >= n // 2 for k in later) >= 0.75 * len(later), str(server.seen)
    # At the arrival of request i, at most n requests were sent and not yet cached.
    assert all(c >= i - n + 1 for i, c in enumerate(server.cached)), str(server.cached)
    assert server.cached[2 * n] > n  # the third round: the answers of the first are in the cache
    assert len(ck.ResponseCache(tmp_path / "c.sqlite")) == 5 * n


def test_answers_chunked_compressed_or_closing_the_connection_are_read(monkeypatch) -> None:
    import gzip

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    peers: list[int] = []

    def answer(n: int, body: dict) -> bytes:
        data = json.dumps(faithful(body)[2]).encode()
        if n % 3 == 0:  # chunked, with an interim 100 Continue first
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 7]), data[i:i + 7]) for i in range(0, len(data), 7))
            return (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                    + chunks + b"0\r\n\r\n")
        if n % 3 == 1:
            z = gzip.compress(data)
            return b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s" % (len(z), z)
        return b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + data  # a body that ends with the connection

    def serve() -> None:
        n = 0
        while n < 6:
            conn, addr = listener.accept()
            peers.append(addr[1])
            with conn, conn.makefile("rb") as f:
                while n < 6:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = f.readline()
                        if not line:
                            break
                        head += line
                    if not head:
                        break
                    length = int(next(v for k, v in (line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
                                      if k.lower() == b"content-length"))
                    conn.sendall(answer(n, json.loads(f.read(length))))
                    n += 1
                    if n % 3 == 0:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with ck.Client(f"http://127.0.0.1:{port}/v1", model="m", max_in_flight=1, max_prompts_per_request=1,
                       max_retries=0, timeout=10, cache=False) as api:
            prompts = [f"review {i}" for i in range(6)]
            assert api.top_k(prompts, 3) == [top_of(p, 3) for p in prompts]
        assert len(peers) == 2  # the connection was kept between answers, and opened again after a close
    finally:
        thread.join(10)
        listener.close()


_PROXY_VARS = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
               "no_proxy"]


def _no_proxy(monkeypatch) -> None:
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


def _connections(api: ck.Client) -> Any:
    """What carries the client's requests: calibkit's own connections (_Http11) or httpx's (_HttpxPools)."""
    async def get() -> Any:
        assert api._loop is not None
        return api._loop.http

    return api._run(get())


def test_only_plain_base_urls_without_a_proxy_go_over_calibkits_own_connections(monkeypatch) -> None:
    from calibkit.backends.http import _Http11

    _no_proxy(monkeypatch)
    urls = ["http://127.0.0.1:8000/v1", "https://api.example.com/v1"]
    assert _Http11.serves(urls)
    for name in ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"]:
        monkeypatch.setenv(name, "http://proxy.example.com:3128")
        assert not _Http11.serves(urls), name
        monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "example.com")  # a NO_PROXY alone sets no proxy
    assert _Http11.serves(urls)
    assert not _Http11.serves(["http://user:pw@127.0.0.1:8000/v1"])
    assert not _Http11.serves(["http://127.0.0.1:8000/v1?api-version=1"])
    assert not _Http11.serves(["http://127.0.0.1:8000/v1#x"])
    assert not _Http11.serves(urls + ["http://user:pw@127.0.0.1:8000/v1"])  # one that needs httpx: all go through it


def test_a_proxy_in_the_environment_carries_the_requests_through_httpx(scripted_server, monkeypatch) -> None:
    from calibkit.backends.http import _HttpxPools

    _no_proxy(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", scripted_server.url.removesuffix("/v1"))  # the scripted server is the proxy
    scripted_server.default = ok
    with ck.Client("http://api.example.invalid/v1", model="m", max_retries=0, cache=False) as api:
        assert isinstance(_connections(api), _HttpxPools)
        assert api.complete(api.make_request("x", max_tokens=1)).choices[0].text == " a"
    # a proxied request names the whole URL
    assert [r["path"] for r in scripted_server.requests] == ["http://api.example.invalid/v1/completions"]


def test_a_user_and_password_in_the_base_url_go_as_basic_auth_through_httpx(scripted_server, monkeypatch) -> None:
    from calibkit.backends.http import _HttpxPools

    _no_proxy(monkeypatch)
    scripted_server.default = ok
    url = scripted_server.url.replace("http://", "http://user:secret@")
    with ck.Client(url, model="m", max_retries=0, cache=False) as api:
        assert isinstance(_connections(api), _HttpxPools)
        assert api.complete(api.make_request("x", max_tokens=1)).choices[0].text == " a"
    headers = {k.lower(): v for k, v in scripted_server.requests[0]["headers"].items()}
    assert headers["authorization"] == "Basic dXNlcjpzZWNyZXQ="  # user:secret
    assert scripted_server.requests[0]["path"] == "/v1/completions"


def test_a_transport_given_carries_every_request_through_one_httpx_client(scripted_server, monkeypatch) -> None:
    from calibkit.backends.http import _HttpxPools

    _no_proxy(monkeypatch)
    seen: list[str] = []

    class Counting(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(str(request.url))
            return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    scripted_server.default = ok
    with ck.Client([scripted_server.url, scripted_server.url + "/"], model="m", max_retries=0, cache=False,
                   transport=Counting()) as api:
        http = _connections(api)
        assert isinstance(http, _HttpxPools)
        assert len({id(c) for cs in http.clients.values() for c in cs}) == 1  # the transport is the one pool
        for p in "abc":
            assert api.complete(api.make_request(p, max_tokens=1)).choices[0].text == " a"
    assert len(seen) == 3 == len(scripted_server.requests)


def test_through_httpx_too_the_configured_requests_are_in_flight_at_once_over_small_pools(monkeypatch) -> None:
    from calibkit.backends.http import _POOL_SIZE, _HttpxPools

    _no_proxy(monkeypatch)
    server = HoldingServer(ports=4, hold=64)
    try:
        urls = [u.replace("http://", "http://user:pw@") for u in server.urls]  # a user:password: through httpx
        with ck.Client(urls, model="m", max_in_flight=64, max_prompts_per_request=1, cache=False) as api:
            http = _connections(api)
            assert isinstance(http, _HttpxPools)
            assert all(len(cs) == 64 // _POOL_SIZE for cs in http.clients.values())
            prompts = [f"review {i}" for i in range(64 * 5)]
            assert api.top_k(prompts, 2) == [top_of(p, 2) for p in prompts]
        assert server.requests == len(prompts)
        assert server.most == 64  # every round had all 64 out at once: none waited for a connection
        assert 64 <= server.connections < 2 * 64  # and the rounds reused the connections
    finally:
        server.close()


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


# -- llama-cpp-python's server over the same GGUF -----------------------------------------


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
    # prompts whose llama-cpp-python decode needs no pad rows, so both sides compute the same numbers
    X = [x for x in sst2("dev", 48)[0]
         if unpadded(len(local_model.token_ids(TPL.format(text=x), add_bos=True)), local_model.n_batch)][:16]
    api = ck.Client(llama_cpp_server, model="gemma", max_prompts_per_request=1, max_in_flight=1,
                    echo_max_tokens=1, cache=False, transport=AlternatingModels(["gemma-a", "gemma-b"]))
    http = ck.score(X, TPL, VERB, api, method="topk", k=20)
    local = ck.score(X, TPL, VERB, local_model, method="exact")
    inside = ~http.censored
    assert inside.sum() >= 8, "too few labels inside the top-20 to compare"
    np.testing.assert_allclose(http.logprobs[inside], local.logprobs[inside], atol=1e-3, rtol=0)
    # outside the top-k, the bound holds
    assert (local.logprobs[~inside] <= http.logprobs[~inside] + 1e-3).all()


# -- answers that are not what the protocol says --------------------------------------------


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


@pytest.mark.parametrize("bad, says", [
    (lambda b: {**b, "choices": b["choices"][:1]}, "sent 0 choices for prompt 1"),
    (lambda b: {**b, "choices": b["choices"] + [b["choices"][0] | {"index": 7}]}, "choice index 7"),
    (lambda b: {**b, "choices": "none"}, "no choices list"),
    (lambda b: {**b, "choices": [c | {"logprobs": c["logprobs"] | {"token_logprobs": [0.5]}} for c in b["choices"]]},
     "log-probability <= 0"),
    (lambda b: {**b, "choices": [c | {"logprobs": c["logprobs"] | {"text_offset": [0, 1]}} for c in b["choices"]]},
     "text_offset has 2 entries for 1 tokens"),
])
def test_valid_json_that_breaks_the_protocol_is_an_error_naming_it_not_retried(scripted_server, bad, says) -> None:
    scripted_server.default = lambda body: (200, {}, bad(ok(body)[2]))
    api = ck.Client(scripted_server.url, model="m", max_retries=3, cache=False)
    with pytest.raises(ValueError, match=says) as e:
        api.top_k(["a", "b"], 2)
    assert isinstance(e.value, APIError)
    assert len(scripted_server.requests) == 1


def test_top_logprobs_as_real_servers_send_them(scripted_server) -> None:
    api = ck.Client(scripted_server.url, model="m", cache=False)
    # k + 1 entries (the sampled token added) and fewer than k are what servers send: kept
    scripted_server.default = lambda body: (200, {}, completion_body([body["prompt"]],
                                                                      top={" a": -0.5, " b": -1.5, " c": -3.0}))
    assert api.top_k(["x"], 2) == [{" a": -0.5, " b": -1.5, " c": -3.0}]
    scripted_server.default = lambda body: (200, {}, completion_body([body["prompt"]], top={" a": -0.5}))
    assert api.top_k(["y"], 2) == [{" a": -0.5}]
    # more than k + 1: the server ignored logprobs=
    scripted_server.default = lambda body: (200, {}, completion_body(
        [body["prompt"]], top={" a": -0.5, " b": -1.5, " c": -3.0, " d": -4.0}))
    with pytest.raises(MalformedResponseError, match="4 top_logprobs entries for logprobs=2"):
        api.top_k(["z"], 2)
    # two token ids with one string, as one repeated JSON key, and OpenAI's "bytes:" tokens
    raw = json.dumps(completion_body(["w"], top={" a": -0.5, "bytes:\\xe2\\x80": -2.0, " b": -2.0})).encode()
    raw = raw.replace(b'"bytes:\\\\xe2\\\\x80": -2.0', b'"bytes:\\\\xe2\\\\x80": -2.0, " b": -2.0')
    scripted_server.default = lambda body: ok(body) if body.get("echo") else (200, {}, raw)
    top = api.top_k(["w"], 3)[0]
    assert top[" b"] == pytest.approx(np.logaddexp(-2.0, -2.0)) and top["bytes:\\xe2\\x80"] == -2.0
    s = ck.score(["w"], "{text}", {0: " a", 1: " b"}, api, method="topk", k=3, check=False)
    assert np.exp(s.logprobs[0]) == pytest.approx([np.exp(-0.5), 2 * np.exp(-2.0)])  # bytes: counts for no form


def test_echo_spans_read_offsets_not_token_lengths() -> None:
    from calibkit.api import Logprobs
    from calibkit.backends.http import echo_span

    # OpenAI writes a token that is part of a character as "bytes:\\xe2\\x80": longer than the text it covers
    # "Say ’ yes": the 3-byte ’ comes as two tokens at one offset, each string longer than its text
    toks = ["Say", " ", "bytes:\\xe2\\x80", "bytes:\\x99", " yes"]
    lp = Logprobs(toks, [None, -1.0, -2.0, -0.1, -0.5], [], [0, 3, 4, 4, 5])
    assert echo_span(lp, 5, 9) == ([" yes"], [-0.5])  # by string length, bytes: would straddle the seam
    assert lp.span(5, 9) is None
    assert echo_span(lp, 4, 9) == (toks[2:], [-2.0, -0.1, -0.5])
    assert echo_span(lp, 1, 9) is None  # inside "Say"
    with pytest.raises(ValueError, match="out of order"):
        echo_span(Logprobs(["a", "b"], [None, -1.0], [], [1, 0]), 1, 2)


# -- pickling leaves the key out ---------------------------------------------------------------


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


# -- a form that merges with the prompt: the same rule as the embedded model ---------------


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


def test_a_continuation_that_changes_how_the_prompt_tokenizes_is_not_scored(scripted_server) -> None:
    def echo(body: dict) -> tuple[int, dict, dict]:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        resp = echo_body(prompts)
        for choice, p in zip(resp["choices"], prompts):
            if p == "Say hello world":  # a token boundary at the seam, but the prompt split otherwise
                choice["logprobs"].update(tokens=["Say", " he", "llo", " world"], text_offset=[0, 3, 6, 9],
                                          token_logprobs=[None, -1.0, -1.0, -1.0], top_logprobs=[None] * 4)
        return 200, {}, resp

    scripted_server.default = echo
    api = ck.Client(scripted_server.url, model="m", cache=False)
    got = api.continuation_logprobs([("Say hello", " world"), ("Say hello", " there")])
    assert got == [None, ck.Continuation((" there",), (-1.0,))]
    assert len(scripted_server.requests) == 1  # the prompt's own echo travels in the same request
    assert scripted_server.requests[0]["body"]["prompt"] == ["Say hello", "Say hello world", "Say hello there"]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.text(min_size=1, max_size=5), min_size=2, max_size=8), st.integers(min_value=0))
def test_echo_span_is_the_tokens_from_the_seam_or_none_inside_a_token(tokens, cut) -> None:
    from calibkit.api import Logprobs
    from calibkit.backends.http import echo_span

    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    values = [None] + [-float(i) for i in range(1, len(tokens))]
    text = "".join(tokens)
    start = 1 + cut % (len(text) - 1)  # a seam inside the text, after its first character
    got = echo_span(Logprobs(tokens, values, [], offsets), start, len(text))
    if start in offsets:  # a token starts at the seam: the form is exactly the tokens from there
        i = offsets.index(start)
        assert got == (tokens[i:], values[i:])
    else:  # the seam falls inside a token: no log-probability belongs to the form alone
        assert got is None
