"""The HTTP client at scale: its transports side by side, and calibkit's Client against the openai package, on a local server that answers after a fixed delay.

A hand-rolled asyncio HTTP/1.1 server in another process stands in for a remote GPU
fleet behind several base URLs (one port each): it answers ``POST /v1/completions``
after ``--delay`` seconds (a timer, so that any number of requests wait at once), with
a top-k for each prompt of its own (so that an answer routed to the wrong prompt
shows). Cache off, top-k questions (``Client.top_k``), 64 requests in flight.

The transports: ``ck.Client(urls, max_in_flight=64, max_prompts_per_request=P,
transport=T, cache=False)`` with T each of the client's possible transports, at the
default packing (P = 16 prompts a request) and at P = 1:

- http11: calibkit's own keep-alive HTTP/1.1 connections (``Http11Transport``, the default);
- httpx: httpx's connections in small pools of 8 (``HttpxTransport``: one pool of 64
  scans its connections on every request);
- aiohttp: one ``aiohttp.ClientSession`` (what lm-evaluation-harness uses), as a
  :class:`~calibkit.backends.http.transports.Transport` written here.

Against other clients, one prompt per request:

- calibkit: ``ck.Client(urls, max_in_flight=F, max_prompts_per_request=1, cache=False)``;
- openai: one ``AsyncOpenAI`` per URL taken round-robin, an ``asyncio.Semaphore(F)``,
  ``completions.create(model=..., prompt=..., max_tokens=1, logprobs=k)``.

Each runs a warm-up, then ``--n`` prompts (4 times as many at 16 a request),
``--repeat`` times (the best run counts, for every client alike; every run's rate is
printed); throughput is compared with the ideal, ``F x P / delay`` prompts per second,
and the client's own overhead is its process's CPU time (all threads; the server's CPU
is in the other process) per prompt. The server's own CPU per request and the most
requests it saw in flight at once are printed too. A bare asyncio loop (64 kept-alive
connections, no client library) doing the same shows what the machine allows at the
time. Goals at 64 in flight: >= 0.9 of the ideal, < 1 ms of CPU per prompt; calibkit's
own transport is kept only while it beats both others by >= 15% in throughput or CPU
per prompt at 16 prompts a request.

    python benchmarks/bench_http.py [--n 5000] [--delay 0.05] [--ports 4] [--k 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from calibkit.backends.http.http11 import Http11Transport
from calibkit.backends.http.transports import (DEFAULT_MAX_RESPONSE_BYTES, ConnectError, ConnectionLost, ConnectTimeout,
                                               HttpxTransport, ReadTimeout, Response, Transport, check_size,
                                               connect_timeout)

MODEL = "bench-model"
TOKENS = [" positive", " negative", " the", " a", " neutral", " good", " bad", " it"]


def top_of(prompt: str, k: int) -> dict[str, float]:
    """The server's top-k for a prompt: its own order and values, from a hash of the prompt."""
    h = zlib.crc32(prompt.encode())
    lps = {t: -0.25 - ((h >> (3 * i)) % 61) / 8 - i * 1e-3 for i, t in enumerate(TOKENS)}
    return dict(sorted(lps.items(), key=lambda kv: -kv[1])[:k])


# -- the server (its own process) ---------------------------------------------------------


class _Stats:
    requests = 0
    in_flight = 0
    max_in_flight = 0


def _completion(body: dict[str, Any]) -> bytes:
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    k = body.get("logprobs") or 1
    choices = []
    for i, p in enumerate(prompts):
        top = top_of(p, k)
        best = next(iter(top))
        choices.append({
            "index": i, "text": best, "finish_reason": "length",
            "logprobs": {"tokens": [best], "token_logprobs": [top[best]], "top_logprobs": [top], "text_offset": [0]},
        })
    return json.dumps({
        "id": "cmpl-bench", "object": "text_completion", "created": 0, "model": MODEL, "choices": choices,
        "usage": {"prompt_tokens": 8 * len(prompts), "completion_tokens": len(prompts), "total_tokens": 9 * len(prompts)},
    }).encode()


def _response(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 404: "Not Found"}.get(status, "Error")
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: keep-alive\r\n\r\n").encode() + body


class _Http(asyncio.Protocol):
    """Keep-alive HTTP/1.1, Content-Length bodies only: what both clients send."""

    def __init__(self, delay: float, stats: type[_Stats]):
        self.delay = delay
        self.stats = stats
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4 : end + 4 + length], self.buf[end + 4 + length :]
            self._handle(head[0].split(" "), body)

    def _handle(self, request_line: list[str], body: bytes) -> None:
        method, path = request_line[0], request_line[1]
        s = self.stats
        if method == "POST" and path == "/v1/completions":
            s.requests += 1
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
            answer = _response(200, _completion(json.loads(body)))
            asyncio.get_running_loop().call_later(self.delay, self._answer, answer)
        elif method == "GET" and path == "/v1/models":
            self._write(_response(200, json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()))
        elif method == "GET" and path == "/stats":  # and start counting again
            out = {"requests": s.requests, "max_in_flight": s.max_in_flight, "cpu_s": time.process_time()}
            s.requests = s.max_in_flight = 0
            self._write(_response(200, json.dumps(out).encode()))
        else:
            self._write(_response(404, b'{"error": {"message": "not found"}}'))

    def _answer(self, data: bytes) -> None:
        self.stats.in_flight -= 1
        self._write(data)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def _serve(delay: float, ports: int) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda: _Http(delay, _Stats), "127.0.0.1", 0, backlog=1024)
               for _ in range(ports)]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    await asyncio.Event().wait()  # until killed


class Server:
    """The server in a child process (``--serve``), killed on exit; ``urls`` are its base URLs."""

    def __init__(self, delay: float, ports: int):
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", "--delay", str(delay), "--ports", str(ports)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.strip():
            self.close()
            raise RuntimeError("the benchmark server did not start")
        self.urls = [f"http://127.0.0.1:{p}/v1" for p in line.split()]

    def stats(self) -> dict[str, Any]:
        """Requests answered and the most in flight at once since the last call, and the server's CPU seconds."""
        import httpx

        return httpx.get(self.urls[0].removesuffix("/v1") + "/stats").json()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the clients ---------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    in_flight: int
    n: int
    wall_s: float
    cpu_s: float
    server: dict[str, Any]  # what /stats said after the run
    server_cpu_s: float
    ideal: float  # requests per second: in flight / delay

    @property
    def rate(self) -> float:
        return self.n / self.wall_s

    @property
    def fraction(self) -> float:
        return self.rate / self.ideal

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_s / self.n

    @property
    def server_ms(self) -> float:
        return 1000 * self.server_cpu_s / self.n

    def __str__(self) -> str:
        return (f"{self.name:>21}, {self.in_flight:>2} in flight: {self.n} prompts in {self.wall_s:.2f} s, "
                f"{self.rate:.0f}/s = {self.fraction:.3f} of the ideal {self.ideal:.0f}/s; client CPU "
                f"{self.cpu_ms:.3f} ms per prompt; server: at most {self.server['max_in_flight']} in flight, "
                f"{self.server_ms:.3f} ms CPU per request")


def measure(name: str, in_flight: int, prompts: list[str], ideal: float, server: Server,
            run: Callable[[list[str]], Any], requests: int | None = None) -> tuple[Result, Any]:
    before = server.stats()
    cpu, wall = time.process_time(), time.perf_counter()
    answers = run(prompts)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = server.stats()
    expected = len(prompts) if requests is None else requests
    assert stats["requests"] == expected, f"{name}: {stats['requests']} requests for {len(prompts)} prompts"
    return (Result(name, in_flight, len(prompts), wall, cpu, stats, (stats["cpu_s"] - before["cpu_s"]) * len(prompts)
                   / expected, ideal), answers)


class AiohttpTransport:
    """aiohttp's connections (one ``ClientSession``) as a calibkit transport: what lm-evaluation-harness uses."""

    def __init__(self, max_connections: int, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self.session: Any = None

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                      timeout: float) -> Response:
        import aiohttp

        if self.session is None:  # made on the client's loop, which it belongs to
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.max_connections))
        try:
            async with self.session.request(method, url, headers=headers, data=body, timeout=aiohttp.ClientTimeout(
                    total=timeout, connect=connect_timeout(timeout))) as r:
                check_size(url, r.content_length or 0, self.max_response_bytes)
                if r.content_length is not None:
                    content = await r.read()
                else:
                    parts, size = [], 0
                    async for chunk in r.content.iter_any():
                        size += len(chunk)
                        check_size(url, size, self.max_response_bytes)
                        parts.append(chunk)
                    content = b"".join(parts)
                return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, content)
        except aiohttp.ConnectionTimeoutError as e:
            raise ConnectTimeout(str(e)) from e
        except asyncio.TimeoutError as e:
            raise ReadTimeout(str(e) or "timed out") from e
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as e:
            raise ConnectionLost(str(e) or type(e).__name__) from e
        except aiohttp.ClientError as e:
            raise ConnectError(str(e) or type(e).__name__) from e

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


TRANSPORTS: dict[str, Callable[[int], Transport]] = {
    "http11": lambda in_flight: Http11Transport(),
    "httpx": lambda in_flight: HttpxTransport(in_flight),
    "aiohttp": AiohttpTransport,
}


def run_client(name: str, transport: str | None, per_request: int, urls: list[str], in_flight: int, k: int,
               prompts: list[str], warm: list[str], ideal: float, server: Server) -> tuple[Result, list[dict[str, float]]]:
    import calibkit as ck

    with ck.Client(urls, model=MODEL, max_in_flight=in_flight, max_prompts_per_request=per_request, cache=False,
                   transport=TRANSPORTS[transport](in_flight) if transport else None) as api:
        api.top_k(warm, k)
        result, answers = measure(name, in_flight, prompts, ideal, server, lambda ps: api.top_k(ps, k),
                                  requests=-(-len(prompts) // per_request))
        assert api.limiter.backoffs == 0 and api.limiter.limit == in_flight, api.limiter
    return result, answers


def run_calibkit(urls: list[str], in_flight: int, k: int, prompts: list[str], warm: list[str],
                 ideal: float, server: Server) -> tuple[Result, list[dict[str, float]]]:
    return run_client("calibkit", None, 1, urls, in_flight, k, prompts, warm, ideal, server)


def run_openai(urls: list[str], in_flight: int, k: int, prompts: list[str], warm: list[str],
               ideal: float, server: Server) -> tuple[Result, list[dict[str, float]]]:
    from openai import AsyncOpenAI

    async def main() -> tuple[Result, list[dict[str, float]]]:
        clients = [AsyncOpenAI(base_url=u, api_key="bench") for u in urls]
        sem = asyncio.Semaphore(in_flight)

        async def one(i: int, p: str) -> dict[str, float]:
            async with sem:
                r = await clients[i % len(clients)].completions.create(model=MODEL, prompt=p, max_tokens=1, logprobs=k)
            return dict(r.choices[0].logprobs.top_logprobs[0])

        async def all_of(ps: list[str]) -> list[dict[str, float]]:
            return await asyncio.gather(*(one(i, p) for i, p in enumerate(ps)))

        await all_of(warm)
        before = await asyncio.to_thread(server.stats)
        cpu, wall = time.process_time(), time.perf_counter()
        answers = await all_of(prompts)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        for c in clients:
            await c.close()
        stats = await asyncio.to_thread(server.stats)
        assert stats["requests"] == len(prompts), f"openai: {stats['requests']} requests for {len(prompts)} prompts"
        return (Result("openai", in_flight, len(prompts), wall, cpu, stats, stats["cpu_s"] - before["cpu_s"], ideal),
                answers)

    return asyncio.run(main())


def run_bare(urls: list[str], in_flight: int, k: int, prompts: list[str], warm: list[str],
             ideal: float, server: Server) -> tuple[Result, list[dict[str, float]]]:
    """The machine's ceiling: no client library, ``in_flight`` kept-alive connections in one asyncio loop,
    each sending the next prompt as soon as its answer is in (read by Content-Length, as the server sends)."""

    async def main() -> tuple[Result, list[dict[str, float]]]:
        conns = [await asyncio.open_connection("127.0.0.1", int(urls[i % len(urls)].split(":")[2].split("/")[0]))
                 for i in range(in_flight)]

        async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, todo: Any,
                         out: list[Any]) -> None:
            for i, p in todo:
                body = json.dumps({"model": MODEL, "prompt": p, "max_tokens": 1, "logprobs": k}).encode()
                writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(body), body))
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                out[i] = json.loads(await reader.readexactly(length))["choices"][0]["logprobs"]["top_logprobs"][0]

        async def all_of(ps: list[str]) -> list[dict[str, float]]:
            out: list[Any] = [None] * len(ps)
            todo = iter(enumerate(ps))  # shared: each worker takes the next prompt
            await asyncio.gather(*(worker(r, w, todo, out) for r, w in conns))
            return out

        await all_of(warm)
        before = await asyncio.to_thread(server.stats)
        cpu, wall = time.process_time(), time.perf_counter()
        answers = await all_of(prompts)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stats = await asyncio.to_thread(server.stats)
        for _, w in conns:
            w.close()
        return (Result("bare loop", in_flight, len(prompts), wall, cpu, stats, stats["cpu_s"] - before["cpu_s"], ideal),
                answers)

    return asyncio.run(main())


def check(name: str, prompts: list[str], answers: list[dict[str, float]], k: int) -> None:
    """Every answer is the server's top-k for its own prompt, in its order."""
    wrong = [p for p, a in zip(prompts, answers) if list(a.items()) != list(top_of(p, k).items())]
    assert len(answers) == len(prompts) and not wrong, f"{name}: {len(wrong)} wrong answers, e.g. for {wrong[:1]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="prompts at 64 in flight (a tenth of that at 8)")
    ap.add_argument("--delay", type=float, default=0.05, help="seconds the server takes to answer a request")
    ap.add_argument("--ports", type=int, default=4, help="base URLs (server ports)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each client; the best counts (default 3)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        asyncio.run(_serve(args.delay, args.ports))
        return

    from rows import row

    print(f"server: {args.ports} base URLs on 127.0.0.1, answers after {1000 * args.delay:g} ms; top-{args.k}, "
          f"cache off; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before the run")
    results: dict[tuple[str, int], Result] = {}
    runs: dict[tuple[str, int], list[Result]] = {}

    def best(name: str, in_flight: int, per_request: int, run: Callable[..., tuple[Result, Any]],
             prompts: list[str]) -> None:
        """One run; the best of them counts, alike for every client."""
        warm = [f"warm-up {i}" for i in range(2 * in_flight * per_request)]
        res, answers = run(server.urls, in_flight, args.k, prompts, warm, in_flight * per_request / args.delay, server)
        check(name, prompts, answers, args.k)
        runs.setdefault((name, in_flight), []).append(res)
        if (name, in_flight) not in results or res.rate > results[name, in_flight].rate:
            results[name, in_flight] = res

    def prompts_for(tag: str, n: int) -> list[str]:
        return [f"Review {tag}-{i}: the film was {'good' if i % 3 else 'not bad'}.\nSentiment:" for i in range(n)]

    with Server(args.delay, args.ports) as server:
        for per in (16, 1):  # the transports, each in turn within every repeat: drift in the machine's load hits all
            prompts = prompts_for(f"p{per}", args.n * min(per, 4))  # 20,000 prompts at 16 a request
            for _ in range(args.repeat):
                for t in TRANSPORTS:
                    name = f"{t}, {per:>2} a request"
                    best(name, 64, per, functools.partial(run_client, name, t, per), prompts)
            for t in TRANSPORTS:
                r = results[f"{t}, {per:>2} a request", 64]
                print(f"{r}; runs: {', '.join(f'{x.rate:.0f}/s' for x in runs[r.name, 64])}")
        results["calibkit", 64] = results["http11,  1 a request", 64]
        for in_flight, n in ((64, args.n), (8, max(args.n // 10, 8))):
            prompts = prompts_for(str(in_flight), n)
            clients = ([] if in_flight == 64 else [("calibkit", run_calibkit)]) + [("openai", run_openai)]
            for name, run in clients + ([("bare loop", run_bare)] if in_flight == 64 else []):
                for _ in range(args.repeat):
                    best(name, in_flight, 1, run, prompts)
                print(results[name, in_flight])
    server_ms = max(r.server_ms for r in results.values())
    print(f"server CPU: at most {server_ms:.3f} ms per request, {server_ms * 64 / args.delay / 1000:.2f} of a core "
          f"at the ideal rate for 64 in flight")
    print("answers: every one equals the server's top-k for its own prompt (every client, all runs)")

    for per in (16, 1):
        own, hx, aio = (results[f"{t}, {per:>2} a request", 64] for t in TRANSPORTS)
        lead = min(max(own.rate / o.rate, o.cpu_ms / own.cpu_ms) for o in (hx, aio))
        print(row(f"HTTP transports, {per} prompt{'s' if per > 1 else ''} a request, 64 in flight: calibkit's HTTP/1.1 "
                  f"vs httpx (pools of 8) vs aiohttp",
                  f"{own.fraction:.2f} / {hx.fraction:.2f} / {aio.fraction:.2f} of ideal; CPU {own.cpu_ms:.3f} / "
                  f"{hx.cpu_ms:.3f} / {aio.cpu_ms:.3f} ms per prompt; HTTP/1.1 {own.rate / hx.rate:.2f}x httpx's and "
                  f"{own.rate / aio.rate:.2f}x aiohttp's throughput, {hx.cpu_ms / own.cpu_ms:.2f}x and "
                  f"{aio.cpu_ms / own.cpu_ms:.2f}x less CPU",
                  ">= 1.15x both (throughput or CPU)" if per == 16 else "", lead >= 1.15 if per == 16 else None))
    ck, oa, bare = results["calibkit", 64], results["openai", 64], results["bare loop", 64]
    print(row("HTTP client, 64 in flight, vs the ideal", f"{ck.fraction:.2f} of ideal ({ck.rate:.0f}/s; a bare asyncio "
              f"loop on this machine now: {bare.fraction:.2f})", ">= 0.9", ck.fraction >= 0.9))
    print(row("HTTP client overhead per prompt, vs the openai package",
              f"{ck.cpu_ms:.2f} ms vs {oa.cpu_ms:.2f} ms ({oa.cpu_ms / ck.cpu_ms:.1f}x less)", "< 1 ms", ck.cpu_ms < 1))
    print(row("openai package, 64 in flight, vs the ideal", f"{oa.fraction:.2f} of ideal ({oa.rate:.0f}/s; calibkit "
              f"{ck.rate / oa.rate:.2f}x its throughput)", "", None))
    ck8 = results["calibkit", 8]
    print(row("HTTP client, 8 in flight, vs the ideal", f"{ck8.fraction:.2f} of ideal ({ck8.rate:.0f}/s)", "", None))


if __name__ == "__main__":
    main()
