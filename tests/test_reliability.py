"""Reliability end to end: a real ``calibkit serve`` behind a fault-injecting proxy.

- the fault run: 400 prompts (200 requests) scored top-k through 10 % injected faults (429 with and
  without Retry-After, 500, 502, 503, dropped connections, read timeouts, truncated and
  malformed 200 JSON) give exactly the embedded model's scores, nothing lost, the
  server asked each question once, and each body sent again only after a fault;
- top-k through serve where the likeliest next token ends the text is the embedded
  model's (serve answered those with an empty top_logprobs when this was written);
- a fault that is not transient ends the run with an error naming the prompt and saying
  the finished answers are cached, and they are;
- a scoring run killed with SIGKILL half way (the library, and ``calibkit eval
  --api-base``) asks, when started again, exactly the questions that had not finished,
  and ends with the uninterrupted run's scores (and metrics.csv).

Every subprocess has a timeout; nothing asserts on how long anything takes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import calibkit as ck
from calibkit.cache import ResponseCache
from calibkit.server import create_key

from fault_proxy import TRANSIENT, FaultProxy
from helpers import SHARED_DATA, sst2
from server_harness import ServerProcess

pytestmark = pytest.mark.model

K = 3
N_PROMPTS = 400  # 200 requests; benchmarks/reliability.py runs 2,000 prompts and more, with its load run
TIMEOUT = 3.0  # the client's timeout in the fault run, far above a two-prompt answer: an injected
# read timeout costs this much
RUN_LIMIT_S = 600  # bound on any subprocess of this module


def distinct_prompts(n: int) -> list[str]:
    """``n`` short distinct prompts: the starts of SST-2 training sentences."""
    if not (SHARED_DATA / "sst2" / "train.txt").exists():
        pytest.skip(f"no SST-2 at {SHARED_DATA / 'sst2'}")
    texts, _ = sst2("train", n=7000)
    out = list(dict.fromkeys(t[:24] for t in texts))
    if len(out) < n:
        pytest.skip(f"SST-2 gives only {len(out)} distinct prompts")
    return out[:n]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``calibkit serve --model llama-8b --threads 1`` with a keys file; ``server.key`` is a valid key."""
    pytest.importorskip("llama_cpp")
    work = tmp_path_factory.mktemp("reliability-serve")
    key, _ = create_key(work / "keys.json", name="reliability")
    with ServerProcess(["--model", "llama-8b", "--keys-file", str(work / "keys.json")], work) as srv:
        srv.key = key  # type: ignore[attr-defined]
        yield srv
    assert "Traceback" not in srv.stderr(), srv.stderr()[-3000:]


# -- the fault run ------------------------------------------------------------------------------
def test_hundreds_of_requests_through_ten_percent_faults_score_as_without(server, local_model):
    # The fault-free answers: the embedded model's own, in process (serve answers as it does,
    # exactly: every one of them is compared below), so the server scores the prompts once,
    # in the faulty run.
    prompts = distinct_prompts(N_PROMPTS)
    want = local_model.top_k(prompts, k=K)
    with FaultProxy(server.base, rate=0.1, seed=7, sleep_s=TIMEOUT + 1.5, max_faults_per_body=2) as proxy:
        # two prompts a request: 200 requests, some 20 of them faulty, and every kind of fault comes up
        client = ck.Client(proxy.url, server.key, model="llama-8b", cache=False, max_prompts_per_request=2,
                           max_in_flight=4, timeout=TIMEOUT, max_retries=2)
        with client:
            got = client.top_k(prompts, k=K)

    # Every score is the fault-free one, exactly, in the same order; none is lost.
    assert len(got) == len(prompts)
    assert [list(g.items()) for g in got] == [list(w.items()) for w in want]
    # Every kind of transient fault happened, and all the server itself answered was 200.
    assert set(proxy.faults) == set(TRANSIENT), proxy.faults
    assert sum(proxy.faults.values()) >= 0.05 * len(proxy.seen)
    assert set(proxy.statuses) == {200}, proxy.statuses
    # The server was asked each question exactly once: no lost work, no repeated work.
    asked = [p for _, p in proxy.upstream_questions]
    assert sorted(asked) == sorted(prompts)
    assert max(proxy.forwarded.values()) == 1
    # A body came again only after a fault, at most max_retries times; one that timed
    # out with several prompts was not sent again whole but split in two.
    for d, n in proxy.seen.items():
        faults = proxy.body_faults[d]
        assert n == proxy.forwarded[d] + len(faults)
        assert n <= 1 + client.max_retries, (proxy.prompts_of[d], faults)
        if not proxy.forwarded[d]:
            assert faults[-1] == "timeout" and len(proxy.prompts_of[d]) > 1, (proxy.prompts_of[d], faults)
    retries = sum(proxy.seen.values()) - len(proxy.seen)
    assert retries <= sum(proxy.faults.values())
    split = sum(1 for d in proxy.seen if not proxy.forwarded[d])
    assert client.splits == split


def test_top_k_through_serve_when_the_likeliest_next_token_ends_the_text(server, local_model):
    """The embedded model's likeliest token after this prompt is the end of text (''): serve must
    still give its top-k (as LocalModel does), not an empty top_logprobs."""
    prompt = ("a rigorously structured and exquisitely filmed drama about a father and son connection that is a "
              "brief shooting sta")  # '' leads the next most likely token by 0.23 nats
    want = local_model.top_k([prompt], k=K)[0]
    assert next(iter(want)) == ""  # the premise: the end of text is the likeliest next token
    with ck.Client(server.base, server.key, model="llama-8b", cache=False) as client:
        got = client.top_k([prompt], k=K)[0]
    assert list(got.items()) == list(want.items())


# -- a fault that does not pass -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["400", "truncated"])
def test_a_lasting_fault_names_its_prompt_and_keeps_the_finished_answers(server, tmp_path, kind):
    prompts = distinct_prompts(48)
    bad = "POISONED prompt #7"
    prompts.insert(30, bad)
    cache_path = tmp_path / "answers.sqlite"
    with FaultProxy(server.base, rate=0.0, always={bad: kind}) as proxy:
        client = ck.Client(proxy.url, server.key, model="llama-8b", cache=cache_path, max_prompts_per_request=2,
                           max_in_flight=2, timeout=30, max_retries=2)
        with client, pytest.raises(Exception) as info:
            client.top_k(prompts, k=K)
        message = str(info.value)
        kept = len(ResponseCache(cache_path))
        # Every answer received is cached: at least the batches before the failing one (4
        # questions each), and the answers of its requests that did succeed.
        received = {p for d, n in proxy.forwarded.items() if n for p in proxy.prompts_of[d]}
        assert bad not in received
        assert kept >= 28, kept
        assert kept == len(received), (kept, len(received))
        # The bad body was sent at most 1 + max_retries times, the others once.
        bad_bodies = [d for d, ps in proxy.prompts_of.items() if bad in ps]
        assert bad_bodies and all(proxy.seen[d] <= 3 for d in bad_bodies)
        assert all(n == 1 for d, n in proxy.seen.items() if d not in bad_bodies)

        # Without the fault, a rerun asks the server only what was not cached.
        proxy.always.clear()
        proxy.quiet(idle_s=0.5)
        proxy.reset_counts()
        with ck.Client(proxy.url, server.key, model="llama-8b", cache=cache_path, max_prompts_per_request=2,
                       max_in_flight=2, timeout=30) as again:
            again.top_k(prompts, k=K)
        assert len(proxy.upstream_questions) == len(prompts) - kept
    # The error names the prompt that failed and says the finished answers are cached.
    assert bad in message, message
    assert "cache" in message.lower(), message


# -- interrupted and resumed ----------------------------------------------------------------------
LIBRARY_RUN = textwrap.dedent("""
    import sys
    import numpy as np
    import calibkit as ck
    from helpers import sst2

    base, key, out = sys.argv[1:4]
    texts, _ = sst2("dev", n=80)
    with ck.Client(base, key, model="llama-8b", max_prompts_per_request=2, max_in_flight=2, timeout=60) as api:
        s = ck.score(texts, "Review: {text}\\nSentiment:", {0: " negative", 1: " positive"}, api,
                     method="topk", k=5, progress=False, check=False)
    np.save(out, s.logprobs)
""")


def _run_killed_at_half(cmd: list[str], env: dict[str, str], proxy: FaultProxy, half: int, cwd: Path) -> None:
    """Start ``cmd`` and SIGKILL it once the server was asked ``half`` questions; then let the proxy settle."""
    err = cwd / "killed-run.err"  # a file, not a pipe: a full pipe would stall the run
    with open(err, "wb") as err_file:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err_file)
    try:
        deadline = time.monotonic() + RUN_LIMIT_S
        while proxy.questions_asked() < half:
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before it was killed: {err.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the run did not get half way")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    proxy.quiet(idle_s=1.0)  # what the dead run had sent is counted before the counts restart


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> None:
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=RUN_LIMIT_S)
    assert r.returncode == 0, r.stderr[-3000:]


def _env(cache_dir: Path, **extra: str) -> dict[str, str]:
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "CALIBKIT_CACHE_DIR": str(cache_dir), "PYTHONPATH": path, "MPLBACKEND": "Agg", **extra}


def _top_k_keys(proxy: FaultProxy, questions: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The cache key of each top-k question among (settings, prompt) wire questions."""
    identity = ck.Client(proxy.url, model="llama-8b", cache=False).identity
    out = {}
    for settings, prompt in questions:
        d = json.loads(settings)
        if not d.get("echo"):
            out[(settings, prompt)] = ResponseCache.key(identity, {"question": "top_k", "prompt": prompt,
                                                                   "k": d["logprobs"]})
    return out


def _resume_check(proxy: FaultProxy, whole: Path, cut: Path, run, kill, batch: int) -> None:
    """Run uninterrupted with the cache dir ``whole``; with ``cut``, run killed half way and then
    again: the second start asks exactly the questions the first had not finished.

    A question is finished when its answer is in the cache; the run writes them batch by
    batch (``batch`` questions), so at most one batch in progress at the kill is asked again.
    """
    run(whole)
    everything = set(proxy.upstream_questions)
    assert len(everything) == len(proxy.upstream_questions), "the uninterrupted run asked a question twice"
    proxy.reset_counts()

    kill(cut, len(everything) // 2)
    before = set(proxy.upstream_questions)
    keys = _top_k_keys(proxy, everything)
    cached = ResponseCache(cut / "responses.sqlite").get_many(keys.values())
    finished = {q for q, key in keys.items() if key in cached}
    assert 0 < len(finished) < len(keys), (len(finished), len(keys))
    proxy.reset_counts()

    run(cut)
    after = proxy.upstream_questions
    assert len(set(after)) == len(after), "a question was asked twice after the restart"
    assert before | set(after) == everything  # nothing lost, nothing extra
    # The top-k questions asked again are exactly those not finished before the kill ...
    assert {q for q in after if q in keys} == set(keys) - finished
    # ... and every question asked both times was one of the batch in progress at the kill.
    assert len(before & set(after)) <= batch, (len(before & set(after)), batch)


def test_a_library_run_killed_half_way_resumes_with_only_the_unfinished_questions(server, tmp_path):
    script = tmp_path / "score_run.py"
    script.write_text(LIBRARY_RUN)
    with FaultProxy(server.base, rate=0.0) as proxy:
        def cmd(cache: Path) -> list[str]:
            return [sys.executable, str(script), proxy.url, server.key, str(cache / "scores.npy")]

        _resume_check(
            proxy, tmp_path / "whole", tmp_path / "cut",
            run=lambda c: _run(cmd(c), _env(c), tmp_path),
            kill=lambda c, half: _run_killed_at_half(cmd(c), _env(c), proxy, half, tmp_path),
            batch=2 * 2,  # max_in_flight x max_prompts_per_request
        )
    whole = np.load(tmp_path / "whole" / "scores.npy")
    resumed = np.load(tmp_path / "cut" / "scores.npy")
    assert whole.shape == (80, 2)
    np.testing.assert_array_equal(resumed, whole)


def test_calibkit_eval_killed_half_way_resumes_and_writes_the_same_metrics(server, tmp_path):
    data = SHARED_DATA / "sst2" / "dev.txt"
    if not data.exists():
        pytest.skip(f"no SST-2 at {data}")
    with FaultProxy(server.base, rate=0.0) as proxy:
        def cmd(cache: Path) -> list[str]:
            return [sys.executable, "-m", "calibkit.cli", "eval", str(data), "--limit", "40", "--stratify",
                    "--api-base", proxy.url, "--model", "llama-8b", "--method", "topk", "-k", "5",
                    "--max-in-flight", "1", "--bootstrap", "50", "--out", str(cache / "report")]

        _resume_check(
            proxy, tmp_path / "whole", tmp_path / "cut",
            run=lambda c: _run(cmd(c), _env(c, ACS_API_KEY=server.key), tmp_path),
            kill=lambda c, half: _run_killed_at_half(cmd(c), _env(c, ACS_API_KEY=server.key), proxy, half, tmp_path),
            batch=1 * 16,  # --max-in-flight 1 x the client's default max_prompts_per_request
        )
    whole = (tmp_path / "whole" / "report" / "metrics.csv").read_text()
    resumed = (tmp_path / "cut" / "report" / "metrics.csv").read_text()
    assert whole.count("\n") >= 2
    assert resumed == whole
