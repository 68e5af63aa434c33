"""Reading answers: JSON that breaks the protocol, top-k as real servers send it, echo spans by
text_offset, and the seam rule for continuations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import calibkit as ck
from calibkit.api import APIError, Logprobs
from calibkit.backends.http import MalformedResponseError

from helpers import completion_body, echo_body
from http_fakes import ok


@pytest.mark.parametrize("bad, says", [
    (lambda b: {**b, "choices": b["choices"][:1]}, "sent 0 choices for prompt 1"),
    (lambda b: {**b, "choices": b["choices"] + [b["choices"][0] | {"index": 7}]}, "choice index 7"),
    (lambda b: {**b, "choices": "none"}, "no choices list"),
    (lambda b: {**b, "choices": [c | {"logprobs": c["logprobs"] | {"token_logprobs": [0.5]}} for c in b["choices"]]},
     "log-probability <= 0"),
    (lambda b: {**b, "choices": [c | {"logprobs": c["logprobs"] | {"text_offset": [0, 1]}} for c in b["choices"]]},
     "text_offset has 2 entries for 1 tokens"),
])
def test_valid_json_that_breaks_the_protocol_is_an_error_naming_it_not_retried(scripted_server, bad, says) -> None:
    scripted_server.default = lambda body: (200, {}, bad(ok(body)[2]))
    api = ck.Client(scripted_server.url, model="m", max_retries=3, cache=False)
    with pytest.raises(ValueError, match=says) as e:
        api.top_k(["a", "b"], 2)
    assert isinstance(e.value, APIError)
    assert len(scripted_server.requests) == 1


def test_top_logprobs_as_real_servers_send_them(scripted_server) -> None:
    api = ck.Client(scripted_server.url, model="m", cache=False)
    # k + 1 entries (the sampled token added) and fewer than k are what servers send: kept
    scripted_server.default = lambda body: (200, {}, completion_body([body["prompt"]],
                                                                      top={" a": -0.5, " b": -1.5, " c": -3.0}))
    assert api.top_k(["x"], 2) == [{" a": -0.5, " b": -1.5, " c": -3.0}]
    scripted_server.default = lambda body: (200, {}, completion_body([body["prompt"]], top={" a": -0.5}))
    assert api.top_k(["y"], 2) == [{" a": -0.5}]
    # more than k + 1: the server ignored logprobs=
    scripted_server.default = lambda body: (200, {}, completion_body(
        [body["prompt"]], top={" a": -0.5, " b": -1.5, " c": -3.0, " d": -4.0}))
    with pytest.raises(MalformedResponseError, match="4 top_logprobs entries for logprobs=2"):
        api.top_k(["z"], 2)
    # two token ids with one string, as one repeated JSON key, and OpenAI's "bytes:" tokens
    raw = json.dumps(completion_body(["w"], top={" a": -0.5, "bytes:\\xe2\\x80": -2.0, " b": -2.0})).encode()
    raw = raw.replace(b'"bytes:\\\\xe2\\\\x80": -2.0', b'"bytes:\\\\xe2\\\\x80": -2.0, " b": -2.0')
    scripted_server.default = lambda body: ok(body) if body.get("echo") else (200, {}, raw)
    top = api.top_k(["w"], 3)[0]
    assert top[" b"] == pytest.approx(np.logaddexp(-2.0, -2.0)) and top["bytes:\\xe2\\x80"] == -2.0
    s = ck.score(["w"], "{text}", {0: " a", 1: " b"}, api, method="topk", k=3, check=False)
    assert np.exp(s.logprobs[0]) == pytest.approx([np.exp(-0.5), 2 * np.exp(-2.0)])  # bytes: counts for no form


def test_echo_spans_read_offsets_not_token_lengths() -> None:
    # OpenAI writes a token that is part of a character as "bytes:\\xe2\\x80": longer than the text it covers
    # "Say ’ yes": the 3-byte ’ comes as two tokens at one offset, each string longer than its text
    toks = ["Say", " ", "bytes:\\xe2\\x80", "bytes:\\x99", " yes"]
    lp = Logprobs(toks, [None, -1.0, -2.0, -0.1, -0.5], [], [0, 3, 4, 4, 5])
    assert lp.span(5, 9) == ([" yes"], [-0.5])  # by string length, bytes: would straddle the seam
    assert lp.span(4, 9) == (toks[2:], [-2.0, -0.1, -0.5])
    assert lp.span(1, 9) is None  # inside "Say"
    with pytest.raises(ValueError, match="out of order"):
        Logprobs(["a", "b"], [None, -1.0], [], [1, 0]).span(1, 2)


def test_a_continuation_that_changes_how_the_prompt_tokenizes_is_not_scored(scripted_server) -> None:
    def echo(body: dict) -> tuple[int, dict, dict]:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        resp = echo_body(prompts)
        for choice, p in zip(resp["choices"], prompts):
            if p == "Say hello world":  # a token boundary at the seam, but the prompt split otherwise
                choice["logprobs"].update(tokens=["Say", " he", "llo", " world"], text_offset=[0, 3, 6, 9],
                                          token_logprobs=[None, -1.0, -1.0, -1.0], top_logprobs=[None] * 4)
        return 200, {}, resp

    scripted_server.default = echo
    api = ck.Client(scripted_server.url, model="m", cache=False)
    got = api.continuation_logprobs([("Say hello", " world"), ("Say hello", " there")])
    assert got == [None, ck.Continuation((" there",), (-1.0,))]
    assert len(scripted_server.requests) == 1  # the prompt's own echo travels in the same request
    assert scripted_server.requests[0]["body"]["prompt"] == ["Say hello", "Say hello world", "Say hello there"]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.text(min_size=1, max_size=5), min_size=2, max_size=8), st.integers(min_value=0))
def test_a_span_is_the_tokens_from_the_seam_or_none_inside_a_token(tokens, cut) -> None:
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    values = [None] + [-float(i) for i in range(1, len(tokens))]
    text = "".join(tokens)
    start = 1 + cut % (len(text) - 1)  # a seam inside the text, after its first character
    got = Logprobs(tokens, values, [], offsets).span(start, len(text))
    if start in offsets:  # a token starts at the seam: the form is exactly the tokens from there
        i = offsets.index(start)
        assert got == (tokens[i:], values[i:])
    else:  # the seam falls inside a token: no log-probability belongs to the form alone
        assert got is None
