"""A bounded load test on loopback: 16 concurrent clients, valid and invalid requests mixed.

Every valid request must get the embedded model's own answer, every invalid one its
4xx, none a 5xx, and the server must still be up afterwards.
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from calibkit.api import CompletionRequest
from calibkit.server import create_key
from calibkit.server.completions import LocalCompletions

from server_harness import ServerProcess

pytestmark = pytest.mark.model

CLIENTS = 16
PROMPTS = ["The capital of France is", "Review: a gorgeous film\nSentiment:", "1, 2, 3,", "Once upon a time"]
VALID = [
    {"model": "llama-8b", "prompt": p, "max_tokens": 2, "logprobs": 3, "temperature": 0} for p in PROMPTS
] + [
    {"model": "llama-8b", "prompt": PROMPTS[:2], "max_tokens": 0, "echo": True, "logprobs": 1},
    {"model": "llama-8b", "prompt": PROMPTS[3], "max_tokens": 3, "seed": 5, "n": 2},
]
# (body or raw bytes, headers override, expected status)
INVALID = [
    ({"model": "llama-8b", "prompt": "x", "max_tokens": 1, "logprobs": True}, None, 400),
    ({"model": "llama-8b", "prompt": "x", "max_tokens": True}, None, 400),
    ({"model": "llama-8b", "prompt": "x", "max_tokens": 1, "logprob": 5}, None, 400),
    ({"model": "llama-8b", "prompt": "x", "max_tokens": 1, "n": 99}, None, 400),
    ({"model": "llama-8b", "prompt": "word " * 2100, "max_tokens": 1}, None, 400),  # longer than the context
    ({"model": "gpt-4", "prompt": "x", "max_tokens": 1}, None, 404),
    ({"model": "llama-8b", "prompt": "x", "max_tokens": 1}, {}, 401),
    ({"model": "llama-8b", "prompt": "x", "max_tokens": 1}, {"Authorization": "Bearer ck_00000000_nope"}, 401),
    ({"model": "llama-8b", "prompt": "y" * 40_000, "max_tokens": 1}, None, 413),
    (b'{"model": "llama-8b", "prompt": ', None, 400),
]


def _expected(local_model) -> list[dict]:
    served = LocalCompletions(local_model)
    return [served.complete(CompletionRequest.from_json({**body, "model": local_model.name})).to_json()
            for body in VALID]


def _same_answer(got: dict, want: dict) -> bool:
    if [c["text"] for c in got["choices"]] != [c["text"] for c in want["choices"]]:
        return False
    if got["usage"] != want["usage"]:
        return False
    for g, w in zip(got["choices"], want["choices"]):
        if (g["logprobs"] is None) != (w["logprobs"] is None):
            return False
        if g["logprobs"] is None:
            continue
        if g["logprobs"]["tokens"] != w["logprobs"]["tokens"]:
            return False
        for a, b in zip(g["logprobs"]["token_logprobs"], w["logprobs"]["token_logprobs"]):
            if (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-6):
                return False
        for ta, tb in zip(g["logprobs"]["top_logprobs"], w["logprobs"]["top_logprobs"]):
            if (ta is None) != (tb is None) or (ta is not None and (
                    set(ta) != set(tb) or any(abs(ta[k] - tb[k]) > 1e-6 for k in ta))):
                return False
    return True


def test_sixteen_clients_mixing_valid_and_invalid_requests(tmp_path, local_model):
    key, _ = create_key(tmp_path / "keys.json")
    expected = _expected(local_model)
    args = ["--model", "llama-8b", "--keys-file", str(tmp_path / "keys.json"), "--max-body-bytes", "32768"]
    with ServerProcess(args, tmp_path / "server") as srv:
        auth = srv.auth(key)
        url = srv.base + "/completions"
        start = threading.Barrier(CLIENTS)
        results: list[tuple[str, int, int, dict | None]] = []  # (kind, index, status, body)
        lock = threading.Lock()

        def client(c: int) -> None:
            # Each client interleaves the valid and invalid requests, from its own offset.
            plan = [("valid", (c + i) % len(VALID)) for i in range(len(VALID))]
            bad = [("invalid", (c + i) % len(INVALID)) for i in range(len(INVALID))]
            plan = [x for pair in zip(plan, bad) for x in pair] + bad[len(plan):]
            with httpx.Client(timeout=300) as http:
                start.wait(120)
                for kind, i in plan:
                    if kind == "valid":
                        r = http.post(url, json=VALID[i], headers=auth)
                    else:
                        body, headers, _ = INVALID[i]
                        h = {**(auth if headers is None else headers), "Content-Type": "application/json"}
                        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                        r = http.post(url, content=raw, headers=h)
                    try:
                        payload = r.json()
                    except ValueError:
                        payload = None
                    with lock:
                        results.append((kind, i, r.status_code, payload))

        threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert not any(t.is_alive() for t in threads)

        assert len(results) == CLIENTS * (len(VALID) + len(INVALID))
        assert [s for _, _, s, _ in results if s >= 500] == []
        wrong_valid = [(i, s) for kind, i, s, body in results
                       if kind == "valid" and (s != 200 or not _same_answer(body, expected[i]))]
        assert wrong_valid == []
        wrong_invalid = [(i, s, INVALID[i][2]) for kind, i, s, body in results
                         if kind == "invalid" and (s != INVALID[i][2] or set(body or {}) != {"error"})]
        assert wrong_invalid == []

        assert srv.alive
        assert httpx.get(srv.base.removesuffix("/v1") + "/health", timeout=60).json()["status"] == "ok"
        again = httpx.post(url, json=VALID[0], headers=auth, timeout=120)
        assert again.status_code == 200 and _same_answer(again.json(), expected[0])
    assert "Traceback" not in srv.stderr(), srv.stderr()[-3000:]
