"""How a request reaches a server: the :class:`Transport` protocol, its errors, and httpx's transport.

A transport sends one HTTP request and returns the whole answer as a :class:`Response`.
What it may raise is calibkit's own :class:`TransportError` family, each transport
translating its library's errors, so that retries and messages (``calibkit.backends.http``'s
"could not reach", "lost the connection to", "timed out waiting for") are the same over any:

- :class:`ConnectError` (and :class:`ConnectTimeout`): the server was never reached;
- :class:`ReadTimeout`: reached, and no answer within the timeout;
- :class:`ConnectionLost`: reached, and the connection broke before a whole answer;
- :class:`ResponseTooLarge`: an answer over the transport's ``max_response_bytes`` (not retried).

>>> ReadTimeout("no answer within 0.5 s").__class__.__mro__[1].__name__
'TransportError'
"""

from __future__ import annotations

import http
import zlib
from dataclasses import dataclass, field
from typing import Mapping, Protocol

import httpx

__all__ = ["ConnectError", "ConnectTimeout", "ConnectionLost", "DEFAULT_MAX_RESPONSE_BYTES", "HttpxTransport",
           "ReadTimeout", "Response", "ResponseTooLarge", "Transport", "TransportError", "check_size",
           "connect_timeout", "decode_body"]

#: The largest answer a transport reads by default (64 MiB): 16 echoed prompts of 2,048 tokens take about 4.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 2**20


class TransportError(Exception):
    """A request that got no whole answer: the base of what a :class:`Transport` raises."""


class ConnectError(TransportError):
    """The server could not be reached: refused, unknown host, TLS or proxy failure."""


class ConnectTimeout(ConnectError):
    """No connection within the connect timeout."""


class ReadTimeout(TransportError):
    """The server was reached and did not answer within the timeout."""


class ConnectionLost(TransportError):
    """The server was reached and the connection broke, or the answer was not valid HTTP."""


class ResponseTooLarge(TransportError):
    """An answer larger than the transport's ``max_response_bytes``: never retried."""

    def __init__(self, url: str, limit: int, size: int | None = None):
        got = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
        super().__init__(
            f"the answer from {url} is {got}, over the limit of max_response_bytes={limit:,}; pass a larger "
            f"max_response_bytes= to Client, or a smaller max_prompts_per_request="
        )
        self.limit = limit


@dataclass
class Response:
    """A whole HTTP answer: status, headers (names in lower case) and the body, decoded."""

    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""

    @property
    def reason_phrase(self) -> str:
        """The standard phrase of the status, e.g. ``"Service Unavailable"``."""
        try:
            return http.HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""


class Transport(Protocol):
    """What carries :class:`~calibkit.Client`'s requests; it lives on the client's event loop.

    ``request`` sends ``body`` (JSON bytes, or None) and returns the whole answer, or
    raises a :class:`TransportError`; ``timeout`` bounds the wait for the answer. It is
    called from many tasks at once; ``aclose`` ends its connections.
    """

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                      timeout: float) -> Response: ...

    async def aclose(self) -> None: ...


def connect_timeout(timeout: float) -> float:
    """Seconds to wait for a connection: the request's timeout, at most 10.

    >>> connect_timeout(60.0), connect_timeout(0.5)
    (10.0, 0.5)
    """
    return min(10.0, timeout)


def check_size(url: str, size: int, limit: int) -> None:
    """Raise :class:`ResponseTooLarge` where ``size`` bytes are over ``limit``."""
    if size > limit:
        raise ResponseTooLarge(url, limit, size)


def decode_body(url: str, data: bytes, encoding: str, limit: int) -> bytes:
    """A body as sent under its ``content-encoding`` (gzip, deflate or none), decoded, at most ``limit`` bytes.

    >>> import gzip
    >>> decode_body("u", gzip.compress(b"{}"), "gzip", 100)
    b'{}'
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ConnectionLost(f"{url} answered with content-encoding {encoding!r}, which calibkit does not decode")
    wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
    try:
        inflate = zlib.decompressobj(wbits)
        out = inflate.decompress(data, limit + 1)
    except zlib.error:
        if encoding != "deflate":
            raise ConnectionLost(f"{url} sent a {encoding} body that does not decode") from None
        try:  # a raw deflate stream, as some servers send
            inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            out = inflate.decompress(data, limit + 1)
        except zlib.error as e:
            raise ConnectionLost(f"{url} sent a deflate body that does not decode: {e}") from None
    if len(out) > limit or inflate.unconsumed_tail:
        raise ResponseTooLarge(url, limit)
    return out


class HttpxTransport:
    """httpx's connections, in small pools: requests to each server go to its pool with the fewest in flight.

    Small pools, not one: httpcore's pool scans all its connections on every request
    (quadratic in its size), which at 64 connections in one pool cost more CPU than the
    rest of a request. Each server (scheme, host, port) gets pools of ``pool_size`` for
    ``max_connections`` in all, opened on its first request. A ``transport`` given
    (an ``httpx.AsyncBaseTransport``) is one pool already: one httpx client over it serves all.
    httpx reads the environment's proxy settings and sends a URL's ``user:password`` as basic auth.

    >>> HttpxTransport(max_connections=20).sizes
    [8, 8, 4]
    """

    def __init__(self, max_connections: int = 8, *, pool_size: int = 8,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.max_response_bytes = max_response_bytes
        self._transport = transport
        pools = -(-max_connections // pool_size)
        self.sizes = [pool_size] * (pools - 1) + [max_connections - pool_size * (pools - 1)]
        if transport is not None:
            self.sizes = [max_connections]
        self.clients: dict[tuple[str, str, int | None], list[httpx.AsyncClient]] = {}
        self._in_flight: dict[int, int] = {}

    def _pools(self, url: httpx.URL) -> list[httpx.AsyncClient]:
        origin = ("", "", None) if self._transport is not None else (url.scheme, url.host, url.port)
        pools = self.clients.get(origin)
        if pools is None:
            pools = self.clients[origin] = [
                httpx.AsyncClient(limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                                  transport=self._transport) for n in self.sizes]
            self._in_flight.update((id(c), 0) for c in pools)
        return pools

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                      timeout: float) -> Response:
        u = httpx.URL(url)
        n = self._in_flight
        client = min(self._pools(u), key=lambda c: n[id(c)])
        n[id(client)] += 1
        limit = self.max_response_bytes
        try:
            req = client.build_request(method, u, headers=headers, content=body,
                                       timeout=httpx.Timeout(timeout, connect=connect_timeout(timeout)))
            r = await client.send(req, stream=True)
            try:
                check_size(url, int(r.headers.get("content-length") or 0), limit)
                parts, size = [], 0
                async for chunk in r.aiter_bytes():  # decoded, as httpx decodes gzip, deflate, br
                    size += len(chunk)
                    check_size(url, size, limit)
                    parts.append(chunk)
            finally:
                await r.aclose()
            return Response(r.status_code, {k.lower(): v for k, v in r.headers.items()}, b"".join(parts))
        except httpx.ConnectTimeout as e:
            raise ConnectTimeout(str(e) or f"no connection to {u.host} in time") from e
        except httpx.TimeoutException as e:  # read, write, pool
            raise ReadTimeout(str(e) or "timed out") from e
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.DecodingError) as e:
            raise ConnectionLost(str(e) or type(e).__name__) from e
        except httpx.TransportError as e:  # connect, proxy, unsupported protocol
            raise ConnectError(str(e) or type(e).__name__) from e
        finally:
            n[id(client)] -= 1

    async def aclose(self) -> None:
        for c in {id(c): c for cs in self.clients.values() for c in cs}.values():
            await c.aclose()
        self.clients.clear()
