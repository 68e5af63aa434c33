"""uvicorn's HTTP layer as ``calibkit serve`` runs it: JSON errors for malformed HTTP, no keys in logs.

uvicorn answers a request h11 cannot parse (a non-numeric Content-Length, bytes that
are not HTTP, a header block over ``h11_max_incomplete_event_size``) itself, before
the app sees it, with a plain-text 400 written in ``H11Protocol.send_400_response``.
:class:`JsonErrorH11Protocol` overrides that one method to answer in the API's error
shape instead; :func:`uvicorn_config` passes it as ``http=`` (uvicorn's default
"auto" picks httptools when installed, whose 400 comes from a different class, so the
protocol is named explicitly). :class:`RedactQuery` keeps query strings, where a
client may have put its key (``?api_key=...``), out of the access log.

Example
-------
>>> cfg = uvicorn_config(object(), log_level="warning")
>>> cfg.http is JsonErrorH11Protocol
True
>>> RedactQuery.redact("/v1/completions?api_key=ck_1234abcd_secret")
'/v1/completions?[redacted]'
"""

from __future__ import annotations

import json
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["JsonErrorH11Protocol", "RedactQuery", "malformed_http_body", "uvicorn_config"]


def malformed_http_body(detail: str) -> bytes:
    """The JSON error (the API's shape) answering a request that is not valid HTTP/1.1.

    >>> json.loads(malformed_http_body("bad Content-Length"))["error"]["code"]
    'malformed_http'
    """
    message = (f"the request is not valid HTTP/1.1 ({detail}); send a POST with a numeric "
               "Content-Length (or chunked encoding) and a JSON body, as the API's curl example does")
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "malformed_http"}}
    return json.dumps(body).encode("utf-8")


class JsonErrorH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering unparseable requests with a JSON 400 in the error shape."""

    def send_400_response(self, msg: str) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            # A response is under way already (the error came mid-body): nothing to add.
            self.transport.close()
            return
        body = malformed_http_body("h11 could not parse it: a bad request line, header or Content-Length")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
        ]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:  # pragma: no cover - h11 refused to answer at all
            pass
        self.transport.close()


class RedactQuery(logging.Filter):
    """Rewrites uvicorn access-log records so that no query string (which may hold a key) is logged."""

    @staticmethod
    def redact(path: str) -> str:
        """``path`` with its query string, if any, replaced by ``[redacted]``."""
        head, sep, _ = path.partition("?")
        return f"{head}?[redacted]" if sep else head

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], self.redact(args[2]), *args[3:])
        return True


def _install_redaction() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuery) for f in access.filters):
        access.addFilter(RedactQuery())


def uvicorn_config(app: Any, **kwargs: Any) -> uvicorn.Config:
    """``uvicorn.Config(app, **kwargs)`` with the JSON-error protocol and the access-log redaction.

    Used by :func:`calibkit.server.serve`; tests start their servers through it too.
    """
    kwargs.setdefault("http", JsonErrorH11Protocol)
    config = uvicorn.Config(app, **kwargs)
    _install_redaction()  # after Config, which (re)configures uvicorn's loggers
    return config
