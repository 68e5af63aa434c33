"""Scoring over HTTP against calibkit serve: exact (echo) requests against top-k requests and the embedded model.

Starts ``calibkit serve`` (the embedded gemma-3-270m, no keys: loopback only) as its
own process on a free 127.0.0.1 port, and scores the first ``--n`` reviews of
../shared/data/sst2/dev.txt with bench_scoring's template "Review: {text}\\nSentiment:"
and forms " positive" / " negative", three ways, in one run on one machine:

- HTTP exact: ``ck.score(..., ck.Client(url, cache=False), method="exact")``, the
  forms' log-probabilities from echo requests (the prompt alone, then one per form) to
  the server, which caches the prompt's positions across them;
- HTTP top-k: the same client with ``method="topk"`` (one request per prompt, the
  endpoint's top-20);
- embedded exact: ``ck.score(..., ck.LocalModel(cache=False), method="exact")`` in
  this process.

It prints examples/s of each and the ratios HTTP exact / embedded exact and HTTP exact /
HTTP top-k, for context: an echo answers every prompt position (a log-softmax over the
whole vocabulary at each), a top-k request one position; the server computes a prompt's
positions once however many forms are echoed after it. The exact scores over HTTP should equal the
embedded ones, bit for bit, as both run the same decode schedule: the largest absolute
difference is printed (goal 0), not asserted. Both sides are warmed with one example
first, so that no model load is timed, and the three take turns, a round of examples
each, so that load from anything else on the machine falls on all of them alike.

Both sides run llama.cpp as calibkit's LocalModel sets it: n_batch = n_ubatch = 32,
every decode padded to that canonical batch shape, flash attention on, n_threads = the
machine's cores (the server and this process share the cores; the server's threads
idle while this process waits for it, and the other way round).

    python benchmarks/bench_serve.py [--n 40] [--round 10]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

import calibkit as ck
from bench_scoring import DEFAULT_DATA, FORMS, TEMPLATE, load
from rows import row
from turns import take_turns

START_TIMEOUT_S = 300.0


@contextmanager
def calibkit_serve(workdir: Path) -> Iterator[str]:
    """``calibkit serve`` on 127.0.0.1, any free port, without keys; yields its base URL (ending in /v1).

    The server is stopped on the way out, whatever happened.
    """
    out_path, err_path = workdir / "serve.out", workdir / "serve.err"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "calibkit.cli", "serve", "--host", "127.0.0.1", "--port", "0",
             "--log-level", "warning"],
            stdout=out, stderr=err, env=env, cwd=workdir,
        )
    try:
        base = ""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not base and time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"on (http://127\.0\.0\.1:\d+/v1)", out_path.read_text(errors="replace"))
            if m:
                base = m.group(1)
            else:
                time.sleep(0.2)
        if not base:
            raise RuntimeError("calibkit serve did not start; its stderr:\n"
                               + err_path.read_text(errors="replace")[-3000:])
        yield base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def scorer(backend: ck.Backend, method: str) -> Callable[[list[str]], np.ndarray]:
    """A function from reviews to their (n, 2) log-probabilities, scored by ``backend`` with ``method``."""

    def run(texts: list[str]) -> np.ndarray:
        return ck.score(texts, TEMPLATE, FORMS, backend, method=method, progress=False, check=False).logprobs

    return run


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """The largest |a - b|, equal entries (infinities too) counting 0."""
    d = np.where(a == b, 0.0, np.abs(a - b))
    return float(np.nan_to_num(d, nan=np.inf).max()) if d.size else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="examples to score (default 40)")
    ap.add_argument("--round", type=int, default=10, help="examples per round (default 10)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SST-2 'label sentence' file")
    args = ap.parse_args()
    texts, y = load(args.data, args.n)
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp, calibkit_serve(Path(tmp)) as base:
        with ck.Client(base, cache=False) as client:
            local = ck.LocalModel(cache=False)
            methods = {
                "HTTP exact (calibkit serve)": scorer(client, "exact"),
                "HTTP top-k (calibkit serve)": scorer(client, "topk"),
                "embedded exact (in-process)": scorer(local, "exact"),
            }
            for run in methods.values():
                run(texts[:1])  # warm: the model loads on both sides, the client connects
            scores, seconds = take_turns(methods, texts, args.round)
    print(f"calibkit serve at {base}, {len(texts)} examples, rounds of {args.round}\n")
    rate: dict[str, float] = {}
    lp: dict[str, np.ndarray] = {}
    for name in methods:
        lp[name] = np.concatenate(scores[name])
        acc = float((np.argmax(lp[name], axis=1) == y).mean())
        rate[name] = len(texts) / seconds[name]
        print(f"{name:30s} accuracy {acc:.3f}   {rate[name]:7.2f} examples/s")
    http_exact, http_topk, embedded = (rate[name] for name in methods)
    diff = max_abs_diff(lp["HTTP exact (calibkit serve)"], lp["embedded exact (in-process)"])
    print(f"\nHTTP exact / HTTP top-k:       {http_exact / http_topk:.2f}x")
    print(f"HTTP exact / embedded exact:   {http_exact / embedded:.2f}x")
    print(f"HTTP exact vs embedded exact scores, largest absolute difference: {diff:.3g}   (goal 0)")
    print()
    print(row(f"zero-shot SST-2 (n = {len(texts)}), exact over HTTP (calibkit serve) vs top-k over HTTP",
              f"{http_exact / http_topk:.2f}x ({http_exact:.1f} vs {http_topk:.1f} examples/s)", "", None))
    # For context: an echo answers every prompt position (a log-softmax over the vocabulary each),
    # which the embedded path never computes; the server computes them once per prompt, however
    # many forms are echoed after it (tests/server/test_server_completions.py counts the decoded tokens).
    print(row(f"zero-shot SST-2 (n = {len(texts)}), exact over HTTP vs embedded exact",
              f"{http_exact / embedded:.2f}x ({http_exact:.1f} vs {embedded:.1f} examples/s)", "", None))
    print(row("HTTP exact scores equal embedded exact", f"{diff:.3g} (largest absolute difference)",
              "0 (same schedule)", diff == 0.0))


if __name__ == "__main__":
    main()
