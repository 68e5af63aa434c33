"""The AdaptiveLimiter alone, and the client pacing itself by it against real servers."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np
import pytest

import calibkit as ck
from calibkit.backends.http import AdaptiveLimiter

from helpers import ScriptedServer, sst2
from http_fakes import TPL, VERB, ok, one_at_a_time, scores_from_a_fast_server


def test_adaptive_limiter_bounds_waits_in_order_and_cuts_once_per_burst() -> None:
    lim = AdaptiveLimiter(4)
    most = 0
    order: list[int] = []

    async def request(i: int, overloaded: bool) -> None:
        nonlocal most
        async with lim.slot() as s:
            order.append(i)
            most = max(most, lim.in_flight)
            await asyncio.sleep(0.01)
            s.overloaded() if overloaded else s.succeeded()

    async def main() -> None:
        # four sent at once all meet overload: one burst, one cut
        await asyncio.gather(*(request(i, True) for i in range(4)))
        assert (lim.limit, lim.backoffs) == (2, 1)
        # sent under the new limit, they cut again; then answers grow it back
        await asyncio.gather(*(request(i, i == 4) for i in range(4, 12)))

    asyncio.run(main())
    assert order == list(range(12)) and most <= 4 and lim.in_flight == 0
    assert lim.backoffs == 2 and lim.limit >= 2
    with pytest.raises(ValueError, match="maximum"):
        AdaptiveLimiter(0)


def test_a_slow_one_at_a_time_server_paces_the_client_and_the_scores_are_right(scripted_server, caplog) -> None:
    X, _ = sst2("dev", 24)
    settings = dict(model="m", max_prompts_per_request=2, cache=False)
    expected = scores_from_a_fast_server(X, settings, "auto")
    assert expected.censored.any() and expected.exact.any()  # both passes: top-k, then echo
    # 8 requests at once take 0.8 s at this server: the last ones time out at 0.5 s.
    scripted_server.default = one_at_a_time(0.1)
    api = ck.Client(scripted_server.url, timeout=0.5, max_in_flight=8, max_retries=4, **settings)
    with caplog.at_level(logging.WARNING, logger="calibkit.http"):
        got = ck.score(X, TPL, VERB, api, method="auto", k=3, check=False)
    np.testing.assert_array_equal(got.logprobs, expected.logprobs)
    np.testing.assert_array_equal(got.censored, expected.censored)
    np.testing.assert_array_equal(got.exact, expected.exact)
    assert len(scripted_server.requests) > api.http_requests  # some tries timed out and were sent again
    assert api.limiter.backoffs >= 1 and api.limiter.limit < 8
    cuts = [r.getMessage() for r in caplog.records if r.name == "calibkit.http"]
    assert cuts and all(r.levelno == logging.WARNING for r in caplog.records if r.name == "calibkit.http")
    assert "within 0.5 s: requests in flight cut from 8 to 4" in cuts[0]


@pytest.mark.parametrize("status, headers", [(503, {"retry-after": "0.05"}), (503, {}), (429, {"retry-after-ms": "20"})])
def test_an_overloaded_answer_halves_the_requests_in_flight(scripted_server, caplog, status, headers) -> None:
    scripted_server.script = [(status, headers, {"error": {"message": "busy", "type": "server_error"}})]
    scripted_server.default = ok
    api = ck.Client(scripted_server.url, model="m", max_in_flight=8, max_prompts_per_request=1, cache=False)
    with caplog.at_level(logging.WARNING, logger="calibkit.http"):
        api.complete(api.make_request("x", max_tokens=1))
    assert (api.limiter.limit, api.limiter.backoffs) == (4, 1)
    assert len(scripted_server.requests) == 2  # retried, under the new limit
    [line] = [r.getMessage() for r in caplog.records if r.name == "calibkit.http"]
    assert f"answered {status} (busy" in line and line.endswith("requests in flight cut from 8 to 4")
    # a run of answers grows it back, one at a time
    api.complete([api.make_request(f"p{i}", max_tokens=1) for i in range(4 + 5 + 6 + 7)])
    assert (api.limiter.limit, api.limiter.backoffs) == (8, 1)


def test_requests_in_flight_are_bounded_and_spread_over_replicas() -> None:
    servers = [ScriptedServer(), ScriptedServer()]
    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    def slow(body: dict) -> tuple[int, dict, dict]:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return ok(body)

    try:
        for s in servers:
            s.default = slow
        api = ck.Client([s.url for s in servers], model="m", max_in_flight=3, max_prompts_per_request=1, cache=False)
        api.complete([api.make_request(f"p{i}", max_tokens=1) for i in range(12)])
        assert state["max"] == 3
        assert [len(s.requests) for s in servers] == [6, 6]
    finally:
        for s in servers:
            s.close()
