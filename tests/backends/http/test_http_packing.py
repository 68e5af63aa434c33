"""Packing prompts into requests and routing the answers back; a pack that times out split in
two; many packs in flight across batches, their answers cached as they come."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import calibkit as ck

from helpers import completion_body, sst2
from http_fakes import TPL, VERB, DelayingServer, one_at_a_time, scores_from_a_fast_server, top_of


def test_many_prompts_per_request_routed_back_by_index(scripted_server) -> None:
    def answer(body: dict) -> tuple[int, dict, dict]:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        out = completion_body(prompts)
        for c, p in zip(out["choices"], prompts):  # each choice names its prompt
            c["text"] = p.upper()
        out["choices"].reverse()  # servers need not keep order: the index routes
        return 200, {}, out

    scripted_server.default = answer
    api = ck.Client(scripted_server.url, model="m", max_prompts_per_request=2, cache=False)
    reqs = [api.make_request(f"p{i}", max_tokens=1, logprobs=1) for i in range(5)]
    out = api.complete(reqs)
    assert [r.choices[0].text for r in out] == ["P0", "P1", "P2", "P3", "P4"]
    assert sorted(len(r["body"]["prompt"]) if isinstance(r["body"]["prompt"], list) else 1
                  for r in scripted_server.requests) == [1, 2, 2]
    merged = api.complete(api.make_request(["a", "b", "c"], max_tokens=1, logprobs=1))
    assert [c.text for c in merged.choices] == ["A", "B", "C"] and [c.index for c in merged.choices] == [0, 1, 2]


def test_a_server_that_takes_one_prompt_per_request_gets_a_clear_error(scripted_server) -> None:
    scripted_server.default = lambda body: (200, {}, completion_body(["only one"]))
    api = ck.Client(scripted_server.url, model="m", max_prompts_per_request=4, cache=False)
    with pytest.raises(ValueError, match="max_prompts_per_request=1"):
        api.complete([api.make_request(p, max_tokens=1) for p in "abc"])


def test_a_request_too_big_to_answer_in_time_is_split_until_it_is_not(scripted_server, caplog) -> None:
    X, _ = sst2("dev", 16)
    settings = dict(model="m", max_prompts_per_request=16, cache=False)
    expected = scores_from_a_fast_server(X, settings, "topk")
    # 0.1 s a prompt: 16 prompts take 1.6 s, more than the timeout even alone; 4 take 0.4 s.
    scripted_server.default = one_at_a_time(0.1, per_prompt=True)
    api = ck.Client(scripted_server.url, timeout=0.7, max_in_flight=1, max_retries=2, **settings)
    with caplog.at_level(logging.WARNING, logger="calibkit.http"):
        got = ck.score(X, TPL, VERB, api, method="topk", k=3, check=False)
    np.testing.assert_array_equal(got.logprobs, expected.logprobs)
    sizes = [len(p) if isinstance(p := r["body"]["prompt"], list) else 1 for r in scripted_server.requests]
    assert max(sizes) == 16 and min(sizes) <= 4 and api.splits >= 2
    assert any("request of 16 prompts: sending them as requests of 8" in r.getMessage() for r in caplog.records)


def test_requests_stay_in_flight_across_batches_and_answers_are_cached_as_they_come(tmp_path) -> None:
    # Backend._ask used to hand the client a batch of max_in_flight x max_prompts_per_request
    # questions at a time and wait for all its answers (then cache them) before the next: the
    # first request of every batch found nothing in flight. Now the client gets a window of
    # many batches and keeps max_in_flight requests out all along, handing each answer back to
    # be cached as it comes; a request goes out only while fewer than max_in_flight are sent and
    # not yet cached, so that a run killed at any point loses at most that many.
    n = 16
    server = DelayingServer(ports=2, delay=0.05, cache=ck.ResponseCache(tmp_path / "c.sqlite"))
    progress: list[int] = []
    try:
        with ck.Client(server.urls, model="m", max_in_flight=n, max_prompts_per_request=1,
                       cache=tmp_path / "c.sqlite") as api:
            prompts = [f"review {i}" for i in range(5 * n)]
            assert api.top_k(prompts, 2, progress=progress.append) == [top_of(p, 2) for p in prompts]
            assert api.requests_made == 5 * n and sum(progress) == 5 * n
            assert len(progress) > 1  # handed back in groups as they came, not all at the end
    finally:
        server.close()
    assert len(server.seen) == 5 * n and max(server.seen) == n - 1
    later = server.seen[n:]
    assert min(later) >= 1, server.seen  # no barrier: never all answered and nothing sent
    assert sum(k >= n // 2 for k in later) >= 0.75 * len(later), str(server.seen)
    # At the arrival of request i, at most n requests were sent and not yet cached.
    assert all(c >= i - n + 1 for i, c in enumerate(server.cached)), str(server.cached)
    assert server.cached[2 * n] > n  # the third round: the answers of the first are in the cache
    assert len(ck.ResponseCache(tmp_path / "c.sqlite")) == 5 * n
