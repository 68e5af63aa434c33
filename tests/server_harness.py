"""Start ``calibkit serve`` as a real process on 127.0.0.1 for a test, and stop it after.

    with ServerProcess(["--model", "llama-8b", "--keys-file", str(keys)], tmp_path) as srv:
        httpx.get(srv.base + "/models", headers=srv.auth(key))

Or an app made in the test, served by uvicorn as ``calibkit serve`` configures it, in a thread:

    with ThreadedServer(create_app({"llama-8b": model})) as srv:
        srv.raw(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{")
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import httpx

# Bounds for a machine under load; no test asserts on how long anything takes.
START_POLLS = 600
POLL_S = 0.25


class ServerProcess:
    """``python -m calibkit.cli serve --port 0 ARGS``; ``base`` is its URL ending in /v1."""

    def __init__(self, args: Sequence[str], workdir: Path):
        self.args = list(args)
        self.workdir = Path(workdir)
        self.proc: subprocess.Popen | None = None
        self.base = ""

    def __enter__(self) -> "ServerProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.out_path = self.workdir / "serve.out"
        self.err_path = self.workdir / "serve.err"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "calibkit.cli", "serve", "--port", "0", "--host", "127.0.0.1",
                 # One thread: llama.cpp's spinning threads crawl when the cores are shared.
                 "--log-level", "warning", "--threads", "1", *self.args],
                stdout=out, stderr=err, env=env, cwd=self.workdir,
            )
        for _ in range(START_POLLS):
            m = re.search(r"on (http://127\.0\.0\.1:\d+/v1)", self.out_path.read_text(errors="replace"))
            if m:
                self.base = m.group(1)
                break
            if self.proc.poll() is not None:
                break
            time.sleep(POLL_S)
        if not self.base:
            self.stop()
            raise RuntimeError(f"calibkit serve did not start; its stderr:\n{self.stderr()[-3000:]}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    @staticmethod
    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def post(self, body: object, key: str | None = None, **kw: object) -> httpx.Response:
        headers = self.auth(key) if key else {}
        return httpx.post(self.base + "/completions", json=body, headers=headers, timeout=120, **kw)


def assert_error_shape(r: httpx.Response, status: int, param: str | None = "any") -> dict:
    """The response is ``status`` with {"error": {message, type, param, code}}; returns the inner object."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    if param != "any":
        assert err["param"] == param, err
    if 400 <= status < 500 and status != 429:
        assert err["type"] == "invalid_request_error"
    return err


class ThreadedServer:
    """uvicorn on 127.0.0.1 (any free port) over ``app``, in a thread, configured as ``calibkit serve``
    configures it (:func:`calibkit.server.protocol.uvicorn_config`); ``url`` is its origin."""

    def __init__(self, app: Any, **config: Any):
        import uvicorn

        from calibkit.server.protocol import uvicorn_config

        config = {"host": "127.0.0.1", "port": 0, "log_level": "warning", "lifespan": "off", **config}
        self.app = app
        self.server = uvicorn.Server(uvicorn_config(app, **config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> "ThreadedServer":
        self.thread.start()
        for _ in range(START_POLLS * 10):
            if self.server.started:
                break
            time.sleep(POLL_S / 10)
        assert self.server.started, "uvicorn did not start"
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def connect(self, timeout: float = 60) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def raw(self, data: bytes, timeout: float = 60) -> bytes:
        """Send ``data`` on a new connection; return all the server sends until it closes."""
        with self.connect(timeout) as sock:
            sock.sendall(data)
            return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    """Everything ``sock`` receives until the peer closes it (or its timeout passes: socket.timeout)."""
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def parse_raw_response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """(status, lower-cased headers, JSON body or the text) of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        return status, headers, json.loads(body)
    except ValueError:
        return status, headers, body.decode("latin-1")


def assert_raw_error_shape(raw: bytes, status: int) -> dict:
    """Like :func:`assert_error_shape`, for a raw response; returns the inner error object."""
    got, headers, body = parse_raw_response(raw)
    assert got == status, raw[:500]
    assert headers.get("content-type", "").startswith("application/json"), raw[:500]
    assert isinstance(body, dict) and set(body) == {"error"}, raw[:500]
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    assert err["type"] == "invalid_request_error", err
    return err
