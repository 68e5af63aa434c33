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

from calibkit.api import Choice, CompletionRequest, CompletionResponse, Logprobs, Usage
from calibkit.backends.base import Backend

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def sst2(split: str = "dev", n: int = 30) -> tuple[list[str], list[int]]:
    lines = (SHARED_DATA / "sst2" / f"{split}.txt").read_text().splitlines()[:n]
    return [line[2:] for line in lines], [int(line[0]) for line in lines]


class TableBackend(Backend):
    """An in-memory backend: each prompt's next-token distribution is given as a dict.

    ``continuations[prompt + form]`` gives exact log-probabilities for echo scoring.
    Tokens are whitespace-led words (" positive"), so a form's tokens are its words.
    """

    def __init__(self, next_token: dict[str, dict[str, float]], continuations: dict[str, float] | None = None,
                 logprobs_cap: int | None = 20):
        super().__init__(cache=False)
        self.next_token = next_token
        self.continuations = continuations or {}
        self.logprobs_cap = logprobs_cap
        self.sent: list[CompletionRequest] = []

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "table", "model": "table"}

    @staticmethod
    def _words(text: str) -> list[str]:
        return re.findall(r"\s*\S+", text)

    def _complete_many(self, requests: list[CompletionRequest], on_done: Callable) -> None:
        for i, r in enumerate(requests):
            self.sent.append(r)
            self.requests_made += 1
            prompt = r.prompts[0]
            if r.echo:
                toks = self._words(prompt)
                offs, pos = [], 0
                for t in toks:
                    offs.append(pos)
                    pos += len(t)
                # All the log-probability of a known continuation sits on its last token.
                lps: list[float | None] = [None] + [0.0] * (len(toks) - 1)
                for full, lp in self.continuations.items():
                    if full == prompt:
                        lps[-1] = lp
                lp_obj = Logprobs(tokens=toks, token_logprobs=lps, top_logprobs=[None] * len(toks), text_offset=offs)
                choice = Choice(index=0, text=prompt, logprobs=lp_obj, finish_reason="length")
            else:
                dist = self.next_token[prompt]
                k = r.logprobs or 0
                top = dict(sorted(dist.items(), key=lambda kv: -kv[1])[:k])
                best = max(dist, key=dist.get)
                lp_obj = Logprobs(tokens=[best], token_logprobs=[dist[best]], top_logprobs=[top], text_offset=[0])
                choice = Choice(index=0, text=best, logprobs=lp_obj, finish_reason="length")
            on_done([i], [CompletionResponse(id="cmpl-t", model="table", choices=[choice], usage=Usage())])


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
            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with server.lock:
                    server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
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
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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
