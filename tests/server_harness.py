"""Start ``calibkit serve`` as a real process on 127.0.0.1 for a test, and stop it after.

    with ServerProcess(["--model", "llama-8b", "--keys-file", str(keys)], tmp_path) as srv:
        httpx.get(srv.base + "/models", headers=srv.auth(key))
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

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
