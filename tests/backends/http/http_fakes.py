"""Servers and answers the HTTP client's tests share: correct completions, a one-at-a-time
server, asyncio servers on several ports that hold or delay their answers."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import threading
import time
import zlib

import calibkit as ck

from helpers import ScriptedServer, completion_body, echo_body

TPL = "Review: {text}\nSentiment:"


VERB = {0: " negative", 1: " positive"}


def ok(body: dict) -> tuple[int, dict, dict]:
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    if body.get("echo"):
        return 200, {}, echo_body(prompts)
    return 200, {}, completion_body(prompts, n=body.get("n", 1))


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


PROXY_VARS = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
              "no_proxy"]


def no_proxy(monkeypatch) -> None:
    """No proxy in the environment for this test."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
