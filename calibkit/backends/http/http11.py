"""calibkit's own keep-alive HTTP/1.1 connections: the client's transport where no proxy is set.

Why calibkit speaks HTTP/1.1 itself, beside httpx: at the client's default packing
(16 prompts a request) it costs a fraction of httpx's or aiohttp's CPU per request,
and the client's one loop thread carries more answers for it
(``benchmarks/bench_http.py``; the figures are in the README and benchmarks/RESULTS.md).
It does what the completions API needs and no more: Content-Length, chunked and
connection-close bodies, gzip and deflate, TLS with httpx's certificates. What it does
not do (a proxy in the environment, a ``user:password``, query or fragment in a base
URL) goes through :class:`~calibkit.backends.http.transports.HttpxTransport`; see :meth:`Http11Transport.serves`.

>>> Http11Transport.serves(["http://127.0.0.1:8000/v1?api-version=1"])
False
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any, Mapping, Sequence

import httpx

from .transports import (DEFAULT_MAX_RESPONSE_BYTES, ConnectError, ConnectionLost, ConnectTimeout, ReadTimeout,
                         Response, TransportError, check_size, connect_timeout, decode_body)

__all__ = ["Http11Transport"]

KEEPALIVE_S = 5.0  # as httpx: an idle connection older than this is closed, not reused
DEFAULT_HEADERS = [("accept", b"Accept: */*"), ("connection", b"Connection: keep-alive"),
                   ("user-agent", b"User-Agent: calibkit")]
DEFAULT_NAMES = {name for name, _ in DEFAULT_HEADERS}
DEFAULT_LINES = [line for _, line in DEFAULT_HEADERS]
Head = tuple[int, dict[str, str], "int | None", bool, bool]  # status, headers, length, chunked, keep-alive


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its answer read by :meth:`data_received`."""

    def __init__(self, url: str, limit: int) -> None:
        self.url = url
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._buf = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._head: Head | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def eof_received(self) -> None:
        self.closed = True  # not to be picked for a request before connection_lost comes

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self._waiter
        if w is None or w.done():
            return
        if self._head is not None and self._head[2] is None and not self._head[3]:
            self._finish(bytes(self._buf))  # a body that runs to the end of the connection
        elif self._buf or self._head is not None:
            w.set_exception(ConnectionLost("the server closed the connection before the whole answer"))
        elif exc is not None:
            w.set_exception(ConnectionLost(str(exc) or type(exc).__name__))
        else:
            w.set_exception(ConnectionLost("the server closed the connection without an answer"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def send(self, url: str, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self.url = url
        self._buf.clear()
        self._head = None
        self._waiter = asyncio.get_running_loop().create_future()
        if self.closed or self.transport.is_closing():  # a write would be dropped: no answer would come
            self._waiter.set_exception(ConnectionLost("the server closed the connection without an answer"))
        else:
            self.transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiter is None or self._waiter.done():
            return
        try:
            self._parse()
        except (ValueError, IndexError) as e:
            self._fail(ConnectionLost(f"malformed HTTP answer: {e}"))
        except TransportError as e:
            self._fail(e)

    def _fail(self, e: TransportError) -> None:
        assert self._waiter is not None
        self._waiter.set_exception(e)
        self.close()

    def _parse(self) -> None:
        buf = self._buf
        while self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                check_size(self.url, len(buf), self.limit)  # a head that never ends
                return
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            status = int(lines[0].split(" ", 2)[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            if 100 <= status < 200:  # an interim answer: the real one follows
                continue
            length = int(headers["content-length"]) if "content-length" in headers else None
            if length is not None:
                check_size(self.url, length, self.limit)
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            keep = not lines[0].startswith("HTTP/1.0")
            conn = headers.get("connection", "").lower()
            if conn:
                keep = conn != "close" if keep else conn == "keep-alive"
            self._head = (status, headers, 0 if status in (204, 304) else length, chunked, keep)
        _, _, length, chunked, _ = self._head
        if chunked:
            body = self._dechunk()
            if body is not None:
                self._finish(body)
        elif length is not None and len(buf) >= length:
            self._finish(bytes(buf[:length]))
        else:
            check_size(self.url, len(buf), self.limit)

    def _dechunk(self) -> bytes | None:
        """The body of a chunked answer, once it is all here; None before."""
        buf, at, parts, size = self._buf, 0, [], 0
        while True:
            eol = buf.find(b"\r\n", at)
            if eol < 0:
                return None
            n = int(bytes(buf[at:eol]).split(b";")[0], 16)
            size += n
            check_size(self.url, size, self.limit)
            if n == 0:
                return b"".join(parts) if buf.find(b"\r\n\r\n", eol) >= 0 else None  # trailers end with an empty line
            if len(buf) < eol + 2 + n + 2:
                return None
            parts.append(bytes(buf[eol + 2 : eol + 2 + n]))
            at = eol + 2 + n + 2

    def _finish(self, body: bytes) -> None:
        assert self._head is not None and self._waiter is not None
        status, headers, _, _, keep = self._head
        if not keep:
            self.close()
        try:
            if "content-encoding" in headers:
                body = decode_body(self.url, body, headers["content-encoding"], self.limit)
            self._waiter.set_result(Response(status, headers, body))
        except TransportError as e:
            self._fail(e)


class Http11Transport:
    """calibkit's own keep-alive HTTP/1.1 connections, as many to each server as are in flight.

    A :class:`~calibkit.backends.http.transports.Transport`; answers over
    ``max_response_bytes`` end their connection with
    :class:`~calibkit.backends.http.transports.ResponseTooLarge`.
    """

    def __init__(self, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.max_response_bytes = max_response_bytes
        self._ssl: Any = None
        self._where: dict[str, tuple[tuple[str, int, bool], bytes, bytes]] = {}
        self._idle: dict[tuple[str, int, bool], list[Connection]] = {}
        self._open: set[Connection] = set()

    @staticmethod
    def serves(base_urls: Sequence[str]) -> bool:
        """Whether these base URLs need nothing of httpx's that this does not do: no proxy set in the
        environment (httpx reads it), http(s) without user:password, query or fragment."""
        proxies = {k for k in urllib.request.getproxies() if k in ("http", "https", "all")}
        return not proxies and all(
            (u := httpx.URL(b)).scheme in ("http", "https") and not u.userinfo and not u.query and not u.fragment
            for b in base_urls
        )

    def _parsed(self, url: str) -> tuple[tuple[str, int, bool], bytes, bytes]:
        """(host, port, https), the Host header and the request target of ``url``, worked out once."""
        where = self._where.get(url)
        if where is None:
            u = httpx.URL(url)
            https = u.scheme == "https"
            if https and self._ssl is None:
                self._ssl = httpx.create_ssl_context()  # httpx's own: the same certificates as it trusts
            where = self._where[url] = ((u.host, u.port or (443 if https else 80), https), u.netloc, u.raw_path)
        return where

    async def _connect(self, server: tuple[str, int, bool], timeout: float) -> Connection:
        host, port, https = server
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection("", self.max_response_bytes), host, port,
                                       ssl=self._ssl if https else None, server_hostname=host if https else None),
                timeout,
            )
        except asyncio.TimeoutError as e:
            raise ConnectTimeout(f"no connection to {host}:{port} within {timeout:g} s") from e
        except OSError as e:
            raise ConnectError(str(e) or type(e).__name__) from e
        self._open.add(conn)
        return conn

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                      timeout: float) -> Response:
        server, netloc, target = self._parsed(url)
        idle, now = self._idle.setdefault(server, []), time.monotonic()
        conn = None
        while idle:
            c = idle.pop()
            if not c.closed and now - c.idle_since < KEEPALIVE_S and c.transport and not c.transport.is_closing():
                conn = c
                break
            c.close()
            self._open.discard(c)
        if conn is None:
            conn = await self._connect(server, connect_timeout(timeout))
        own = {k.lower() for k in headers}
        head = [method.encode() + b" " + target + b" HTTP/1.1"]
        head += [d for name, d in DEFAULT_HEADERS if name not in own] if own & DEFAULT_NAMES else DEFAULT_LINES
        if "host" not in own:
            head.append(b"Host: " + netloc)
        head += [f"{k}: {v}".encode("latin-1") for k, v in headers.items()]
        if body is not None:
            head.append(b"Content-Length: " + str(len(body)).encode())
        waiter = conn.send(url, b"\r\n".join(head) + b"\r\n\r\n" + (body or b""))
        timer = asyncio.get_running_loop().call_later(
            timeout, lambda: waiter.done() or waiter.set_exception(ReadTimeout(f"no answer within {timeout:g} s")))
        try:
            r = await waiter
        except BaseException:  # a timeout, a broken connection, a cancel: its state is unknown
            conn.close()
            self._open.discard(conn)
            raise
        finally:
            timer.cancel()
        if conn.closed:
            self._open.discard(conn)
        else:
            conn.idle_since = time.monotonic()
            idle.append(conn)
        return r

    async def aclose(self) -> None:
        for c in self._open:
            c.close()
        self._open.clear()
