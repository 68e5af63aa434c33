"""Test helpers: SST-2 from ../shared/data, an in-memory backend for fast logic tests,
and a scripted HTTP server on 127.0.0.1 for the client's wire behaviour."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from calibkit.backends.base import Backend, Continuation

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def sst2(split: str = "dev", n: int = 30) -> tuple[list[str], list[int]]:
    lines = (SHARED_DATA / "sst2" / f"{split}.txt").read_text().splitlines()[:n]
    return [line[2:] for line in lines], [int(line[0]) for line in lines]


class TableBackend(Backend):
    """An in-memory backend: each prompt's next-token distribution is given as a dict.

    ``continuations[prompt + form]`` gives exact log-probabilities, all on the form's
    last token. Tokens are whitespace-led words (" positive"), so a form's tokens are
    its words, and a form that does not start with a space merges with the prompt.
    ``asked`` records every question the model answered.
    """

    def __init__(self, next_token: dict[str, dict[str, float]], continuations: dict[str, float] | None = None,
                 logprobs_cap: int | None = 20, cache: Any = False):
        super().__init__(cache=cache)
        self.next_token = next_token
        self.continuations = continuations or {}
        self.logprobs_cap = logprobs_cap
        self.asked: list[tuple] = []

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "table", "model": "table"}

    def _answer_top_k(self, prompts: list[str], k: int, *, keep=None) -> list[dict[str, float]]:
        self.asked += [("top_k", p) for p in prompts]
        return [dict(sorted(self.next_token[p].items(), key=lambda kv: -kv[1])[:k]) for p in prompts]

    def _answer_continuations(self, pairs: list[tuple[str, str]], *, keep=None) -> list[Continuation | None]:
        self.asked += [("continuation", p, c) for p, c in pairs]
        out: list[Continuation | None] = []
        for p, c in pairs:
            words = re.findall(r"\s*\S+", c)
            if not c[0].isspace() and p and not p[-1].isspace():
                out.append(None)
                continue
            lps = [0.0] * (len(words) - 1) + [self.continuations.get(p + c, -30.0)]
            out.append(Continuation(tuple(words), tuple(lps)))
        return out


class ScriptedServer:
    """A real HTTP server on 127.0.0.1 whose answers a test scripts, one per request.

    ``script`` is a list of (status, headers, body) or a callable(request_json) -> that;
    ``requests`` records every request body and its headers.
    """

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.default: Callable[[dict], tuple[int, dict, Any]] | None = None
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so that a client's connection reuse shows

            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with server.lock:
                    server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers),
                                            "peer": self.client_address[1]})
                    step = server.script.pop(0) if server.script else server.default
                if step is None:
                    status, headers, payload = 500, {}, {"error": {"message": "no scripted answer"}}
                elif callable(step):
                    status, headers, payload = step(body)
                else:
                    status, headers, payload = step
                if isinstance(payload, tuple) and payload and payload[0] == "sleep":
                    time.sleep(payload[1])
                    payload = payload[2]
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout): nobody to answer

            do_POST = _answer
            do_GET = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion_body(prompts: list[str], top: dict[str, float] | None = None, n: int = 1) -> dict:
    """A well-formed response body with one choice per prompt (times n)."""
    top = top or {" a": -0.5, " b": -1.5}
    best = max(top, key=top.get)
    return {
        "id": "cmpl-test",
        "object": "text_completion",
        "model": "m",
        "choices": [
            {
                "index": i,
                "text": best,
                "logprobs": {"tokens": [best], "token_logprobs": [top[best]], "top_logprobs": [top], "text_offset": [0]},
                "finish_reason": "length",
            }
            for i in range(len(prompts) * n)
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


def logsumexp(*xs: float) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def echo_body(prompts: list[str]) -> dict:
    """An echo response: whitespace-led words as tokens, each with logprob -1 (the first null)."""
    choices = []
    for i, p in enumerate(prompts):
        toks = re.findall(r"\s*\S+", p)
        offsets = [sum(len(t) for t in toks[:j]) for j in range(len(toks))]
        lps = [None] + [-1.0] * (len(toks) - 1)
        choices.append({"index": i, "text": p, "finish_reason": "length", "logprobs": {
            "tokens": toks, "token_logprobs": lps, "top_logprobs": [None] * len(toks), "text_offset": offsets}})
    return {"id": "cmpl-echo", "object": "text_completion", "model": "m", "choices": choices}


def unpadded(n_tokens: int, n_batch: int) -> bool:
    """True when llama-cpp-python's own decode of ``n_tokens`` (in ``n_batch`` pieces) needs no pad rows:
    every piece is then a batch of the engine's canonical shape, and the numbers must agree bit for bit."""
    last = n_tokens % n_batch
    return last == 0 or (last % 4 == 0 and last >= 8)
