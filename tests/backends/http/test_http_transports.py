"""The transports: calibkit's HTTP/1.1 connections and httpx's, which carries what, every
request in flight at once, answers as servers send them, and their errors as calibkit's own."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
from typing import Mapping

import httpx
import pytest

import calibkit as ck
from calibkit.api import APIError
from calibkit.backends.http.http11 import Http11Transport
from calibkit.backends.http.transports import (ConnectError, ConnectionLost, HttpxTransport, ReadTimeout, Response,
                                               ResponseTooLarge, Transport, TransportError)

from helpers import completion_body
from http_fakes import HoldingServer, faithful, no_proxy, ok, top_of


def test_answers_chunked_compressed_or_closing_the_connection_are_read(monkeypatch) -> None:
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


def test_only_plain_base_urls_without_a_proxy_go_over_calibkits_own_connections(monkeypatch) -> None:
    no_proxy(monkeypatch)
    urls = ["http://127.0.0.1:8000/v1", "https://api.example.com/v1"]
    assert Http11Transport.serves(urls)
    for name in ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"]:
        monkeypatch.setenv(name, "http://proxy.example.com:3128")
        assert not Http11Transport.serves(urls), name
        monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "example.com")  # a NO_PROXY alone sets no proxy
    assert Http11Transport.serves(urls)
    assert not Http11Transport.serves(["http://user:pw@127.0.0.1:8000/v1"])
    assert not Http11Transport.serves(["http://127.0.0.1:8000/v1?api-version=1"])
    assert not Http11Transport.serves(["http://127.0.0.1:8000/v1#x"])
    assert not Http11Transport.serves(urls + ["http://user:pw@127.0.0.1:8000/v1"])  # one that needs httpx: all go through it


def test_a_proxy_in_the_environment_carries_the_requests_through_httpx(scripted_server, monkeypatch) -> None:
    no_proxy(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", scripted_server.url.removesuffix("/v1"))  # the scripted server is the proxy
    scripted_server.default = ok
    with ck.Client("http://api.example.invalid/v1", model="m", max_retries=0, cache=False) as api:
        assert isinstance(api.transport, HttpxTransport)
        assert api.complete(api.make_request("x", max_tokens=1)).choices[0].text == " a"
    # a proxied request names the whole URL
    assert [r["path"] for r in scripted_server.requests] == ["http://api.example.invalid/v1/completions"]


def test_a_user_and_password_in_the_base_url_go_as_basic_auth_through_httpx(scripted_server, monkeypatch) -> None:
    no_proxy(monkeypatch)
    scripted_server.default = ok
    url = scripted_server.url.replace("http://", "http://user:secret@")
    with ck.Client(url, model="m", max_retries=0, cache=False) as api:
        assert isinstance(api.transport, HttpxTransport)
        assert api.complete(api.make_request("x", max_tokens=1)).choices[0].text == " a"
    headers = {k.lower(): v for k, v in scripted_server.requests[0]["headers"].items()}
    assert headers["authorization"] == "Basic dXNlcjpzZWNyZXQ="  # user:secret
    assert scripted_server.requests[0]["path"] == "/v1/completions"


def test_a_transport_given_carries_every_request_through_one_httpx_client(scripted_server, monkeypatch) -> None:
    no_proxy(monkeypatch)
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
                   transport=HttpxTransport(transport=Counting())) as api:
        http = api.transport
        assert isinstance(http, HttpxTransport)
        for p in "abc":
            assert api.complete(api.make_request(p, max_tokens=1)).choices[0].text == " a"
        assert len({id(c) for cs in http.clients.values() for c in cs}) == 1  # the transport is the one pool
    assert len(seen) == 3 == len(scripted_server.requests)


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


def test_through_httpx_too_the_configured_requests_are_in_flight_at_once_over_small_pools(monkeypatch) -> None:
    no_proxy(monkeypatch)
    server = HoldingServer(ports=4, hold=64)
    try:
        urls = [u.replace("http://", "http://user:pw@") for u in server.urls]  # a user:password: through httpx
        with ck.Client(urls, model="m", max_in_flight=64, max_prompts_per_request=1, cache=False) as api:
            http = api.transport
            assert isinstance(http, HttpxTransport)
            prompts = [f"review {i}" for i in range(64 * 5)]
            assert api.top_k(prompts, 2) == [top_of(p, 2) for p in prompts]
            # small pools of 8 for each server, opened on its first request
            assert len(http.clients) == 4 and all(len(cs) == 64 // 8 for cs in http.clients.values())
        assert server.requests == len(prompts)
        assert server.most == 64  # every round had all 64 out at once: none waited for a connection
        assert 64 <= server.connections < 2 * 64  # and the rounds reused the connections
    finally:
        server.close()


# -- the transport protocol: calibkit's own errors, whatever the library --------------------


class RawServer:
    """A server on 127.0.0.1 that reads each request's head and body, then does ``what`` to it:
    answers with the bytes given, or hangs, or hangs up (``b""``)."""

    def __init__(self, what: bytes | None):
        self.what = what
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1/completions"
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                if self.what is None:
                    self.done.wait()  # no answer, ever
                elif self.what:
                    conn.sendall(self.what)

    def close(self) -> None:
        self.done.set()
        self.thread.join(10)
        self.listener.close()


TRANSPORTS = {"http11": lambda: Http11Transport(max_response_bytes=1000),
              "httpx": lambda: HttpxTransport(1, max_response_bytes=1000)}
BIG = b"x" * 5000


def send(transport_name: str, url: str, timeout: float = 0.5) -> Response:
    """One request over a fresh transport of that name, on a loop of its own."""
    async def main() -> Response:
        transport: Transport = TRANSPORTS[transport_name]()
        try:
            return await transport.request("POST", url, {"content-type": "application/json"}, b"{}", timeout)
        finally:
            await transport.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("name", TRANSPORTS)
@pytest.mark.parametrize("what, error, says", [
    (None, ReadTimeout, None),  # reached, never answers
    (b"", ConnectionLost, None),  # reached, hangs up without a word
    (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"id\": ", ConnectionLost, None),  # half an answer
    (b"what is HTTP?\r\n\r\n", ConnectionLost, None),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + BIG, ResponseTooLarge, "max_response_bytes=1,000"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"".join(b"3e8\r\n" + BIG[:1000] + b"\r\n"
                                                                         for _ in range(5)) + b"0\r\n\r\n",
     ResponseTooLarge, "max_response_bytes=1,000"),
    (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + BIG, ResponseTooLarge, "max_response_bytes=1,000"),
    (b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s" % (
        len(gzip.compress(BIG)), gzip.compress(BIG)), ResponseTooLarge, "max_response_bytes=1,000"),  # small, unzipped big
])
def test_each_transport_raises_calibkits_own_errors(name, what, error, says) -> None:
    server = RawServer(what)
    try:
        with pytest.raises(error, match=says) as e:
            send(name, server.url)
    finally:
        server.close()
    assert isinstance(e.value, TransportError) and not isinstance(e.value, httpx.HTTPError)
    if error is ResponseTooLarge:
        assert "pass a larger max_response_bytes=" in str(e.value)


@pytest.mark.parametrize("name", TRANSPORTS)
def test_a_port_nobody_listens_on_is_a_connect_error_and_an_answer_under_the_limit_is_read(name) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectError):
        send(name, f"http://127.0.0.1:{port}/v1/completions")
    server = RawServer(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nX-Trace: t1\r\n\r\n" + BIG[:1000])
    try:
        r = send(name, server.url)
    finally:
        server.close()
    assert (r.status_code, r.content, r.headers["x-trace"], r.reason_phrase) == (200, BIG[:1000], "t1", "OK")


def test_an_answer_over_the_limit_is_an_error_naming_it_and_not_retried(scripted_server) -> None:
    scripted_server.default = lambda body: (200, {}, json.dumps(completion_body([body["prompt"]])).encode() + b" " * 2000)
    api = ck.Client(scripted_server.url, model="m", max_response_bytes=1000, max_retries=3, cache=False)
    with pytest.raises(APIError, match=r"over the limit of max_response_bytes=1,000; pass a larger max_response_bytes= to"):
        api.top_k(["x"], 2)
    assert len(scripted_server.requests) == 1
    with pytest.raises(ValueError, match="max_response_bytes= must be an integer >= 1"):
        ck.Client(scripted_server.url, model="m", max_response_bytes=0)


def test_any_object_with_the_protocols_two_methods_is_a_transport(scripted_server) -> None:
    class Recording:  # no base class: the protocol is structural
        def __init__(self, fail: TransportError | None = None) -> None:
            self.inner, self.fail, self.urls = Http11Transport(), fail, []

        async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                          timeout: float) -> Response:
            self.urls.append(url)
            if self.fail is not None:
                raise self.fail
            return await self.inner.request(method, url, headers, body, timeout)

        async def aclose(self) -> None:
            await self.inner.aclose()

    scripted_server.default = ok
    recording = Recording()
    with ck.Client(scripted_server.url, model="m", cache=False, transport=recording) as api:
        assert api.top_k(["x"], 2) == [{" a": -0.5, " b": -1.5}] and api.transport is recording
    assert recording.urls == [scripted_server.url + "/completions"]
    # the client's words come from the error's class alone
    for fail, says in [(ConnectionLost("reset"), "lost the connection to"), (ConnectError("refused"), "could not reach"),
                       (ReadTimeout("slow"), "timed out waiting for")]:
        api = ck.Client(scripted_server.url, model="m", max_retries=0, timeout=1, cache=False,
                        transport=Recording(fail))
        with pytest.raises(APIError, match=says):
            api.top_k(["y"], 2)
        api.close()
