"""The protocol types: every validation rule of the reference page, and parsing that
survives what real servers send."""

from __future__ import annotations

import json
import math

import pytest

from calibkit.api import (
    FIELD_RANGES,
    NUMERIC_FIELDS,
    APIError,
    CompletionRequest,
    CompletionResponse,
    InvalidRequestError,
    token_bytes,
)

from helpers import logsumexp


@pytest.mark.parametrize("field", NUMERIC_FIELDS)
@pytest.mark.parametrize("value", [True, False])
def test_every_numeric_field_rejects_booleans(field: str, value: bool) -> None:
    with pytest.raises(InvalidRequestError) as e:
        CompletionRequest(model="m", prompt="x", **{field: value})
    assert e.value.param == field
    assert field in str(e.value)
    assert "boolean" in str(e.value)


@pytest.mark.parametrize("field", NUMERIC_FIELDS)
def test_the_same_rule_holds_for_a_json_body(field: str) -> None:
    with pytest.raises(InvalidRequestError) as e:
        CompletionRequest.from_json({"model": "m", "prompt": "x", field: True})
    assert e.value.param == field


def test_logprobs_true_says_it_is_an_integer_top_k() -> None:
    with pytest.raises(InvalidRequestError, match=r"logprobs must be an integer top-k between 0 and 20"):
        CompletionRequest(model="m", prompt="x", logprobs=True)


@pytest.mark.parametrize("field", ["max_tokens", "n", "best_of", "seed", "top_k", "logprobs", "prompt_logprobs"])
def test_integer_fields_reject_floats_and_strings(field: str) -> None:
    for bad in (1.5, "3"):
        with pytest.raises(InvalidRequestError) as e:
            CompletionRequest(model="m", prompt="x", **{field: bad})
        assert e.value.param == field


@pytest.mark.parametrize("field", ["temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"])
def test_float_fields_reject_strings_and_nan(field: str) -> None:
    for bad in ("0.5", float("nan")):
        with pytest.raises(InvalidRequestError) as e:
            CompletionRequest(model="m", prompt="x", **{field: bad})
        assert e.value.param == field


def test_logprobs_cap_is_a_setting_per_endpoint() -> None:
    CompletionRequest(model="m", prompt="x", logprobs=20)
    with pytest.raises(InvalidRequestError, match="between 0 and 20") as e:
        CompletionRequest(model="m", prompt="x", logprobs=21)
    assert e.value.param == "logprobs"
    with pytest.raises(InvalidRequestError, match="between 0 and 5"):
        CompletionRequest(model="m", prompt="x", logprobs=6, logprobs_cap=5)
    assert CompletionRequest(model="m", prompt="x", logprobs=100, logprobs_cap=None).logprobs == 100
    with pytest.raises(InvalidRequestError):
        CompletionRequest(model="m", prompt="x", logprobs=-1)


@pytest.mark.parametrize("field", ["echo", "stream"])
def test_echo_and_stream_are_the_only_booleans(field: str) -> None:
    assert getattr(CompletionRequest(model="m", prompt="x", max_tokens=1, **{field: True}), field) is True
    with pytest.raises(InvalidRequestError) as e:
        CompletionRequest(model="m", prompt="x", **{field: 1})
    assert e.value.param == field


def test_max_tokens_zero_only_with_echo() -> None:
    with pytest.raises(InvalidRequestError, match="only with echo") as e:
        CompletionRequest(model="m", prompt="x", max_tokens=0)
    assert e.value.param == "max_tokens"
    assert CompletionRequest(model="m", prompt="x", max_tokens=0, echo=True, logprobs=0).max_tokens == 0


def test_ranges_and_prompt_and_stop() -> None:
    for field, bad in [("temperature", 2.5), ("top_p", 1.5), ("n", 0), ("max_tokens", -1)]:
        with pytest.raises(InvalidRequestError) as e:
            CompletionRequest(model="m", prompt="x", **{field: bad})
        assert e.value.param == field
    for bad in ([], [1, 2], 7):
        with pytest.raises(InvalidRequestError) as e:
            CompletionRequest(model="m", prompt=bad)  # type: ignore[arg-type]
        assert e.value.param == "prompt"
    with pytest.raises(InvalidRequestError) as e:
        CompletionRequest(model="m", prompt="x", stop=["a", "b", "c", "d", "e"])
    assert e.value.param == "stop"
    with pytest.raises(InvalidRequestError) as e:
        CompletionRequest(model="", prompt="x")
    assert e.value.param == "model"


def test_from_json_rejects_unknown_fields_and_requires_model_and_prompt() -> None:
    with pytest.raises(InvalidRequestError, match="unknown field 'logprob'") as e:
        CompletionRequest.from_json({"model": "m", "prompt": "x", "logprob": 5})
    assert e.value.param == "logprob"
    with pytest.raises(InvalidRequestError) as e:
        CompletionRequest.from_json({"prompt": "x"})
    assert e.value.param == "model"
    req = CompletionRequest.from_json({"model": "m", "prompt": ["a", "b"], "max_tokens": 1, "logprobs": 5, "echo": None})
    assert req.prompts == ("a", "b") and req.logprobs == 5 and req.echo is False


def test_to_json_sends_only_what_was_set() -> None:
    body = CompletionRequest(model="llama-8b", prompt="The capital of France is", max_tokens=1, logprobs=5).to_json()
    assert body == {"model": "llama-8b", "prompt": "The capital of France is", "max_tokens": 1, "logprobs": 5}
    json.dumps(body)  # plain JSON types only


REFERENCE_RESPONSE = """{
  "id": "cmpl-91ea94c6ed0e5b75", "object": "text_completion", "model": "meta-llama/Llama-3.1-8B",
  "choices": [{"index": 0, "text": " a",
    "logprobs": {"text_offset": [0], "tokens": [" a"], "token_logprobs": [-1.7437232732772827],
      "top_logprobs": [{" a": -1.7437232732772827, " Paris": -1.9937232732772827, " one": -2.5562233924865723,
                        " the": -2.5562233924865723, " also": -3.1187233924865723}]},
    "finish_reason": "length"}],
  "usage": {"prompt_tokens": 6, "completion_tokens": 1, "total_tokens": 7}}"""


def test_parses_the_reference_example_response() -> None:
    r = CompletionResponse.from_json(REFERENCE_RESPONSE)
    c = r.choices[0]
    assert r.id == "cmpl-91ea94c6ed0e5b75" and c.text == " a" and c.finish_reason == "length"
    assert c.logprobs.top_logprobs[0][" Paris"] == pytest.approx(-1.9937232732772827)
    assert r.usage.total_tokens == 7
    assert CompletionResponse.from_json(json.dumps(r.to_json())).to_json() == r.to_json()


def _body(top: str, tokens: str = '[" a"]', lps: str = "[-0.5]") -> str:
    return (
        '{"id": "x", "model": "m", "choices": [{"index": 0, "text": " a", "finish_reason": "length",'
        f' "logprobs": {{"tokens": {tokens}, "token_logprobs": {lps}, "text_offset": [0], "top_logprobs": [{top}]}}}}]}}'
    )


def test_colliding_token_strings_are_combined_by_logsumexp() -> None:
    r = CompletionResponse.from_json(_body('{" a": -0.5, " b": -1.0, " b": -2.0}'))
    top = r.choices[0].logprobs.top_logprobs[0]
    assert top[" b"] == pytest.approx(logsumexp(-1.0, -2.0), abs=1e-12)
    assert top[" a"] == -0.5


def test_k_plus_one_and_fewer_than_k_entries_are_kept_as_sent() -> None:
    six = CompletionResponse.from_json(_body('{" a": -0.5, " b": -1, " c": -2, " d": -3, " e": -4, " z": -9}'))
    assert len(six.choices[0].logprobs.top_logprobs[0]) == 6
    two = CompletionResponse.from_json(_body('{" a": -0.5, " b": -1}'))
    assert len(two.choices[0].logprobs.top_logprobs[0]) == 2


def test_minus_9999_means_minus_infinity_and_bytes_tokens_decode() -> None:
    r = CompletionResponse.from_json(_body('{" a": -0.5, "bytes:\\\\xe2\\\\x80": -9999}'))
    top = r.choices[0].logprobs.top_logprobs[0]
    assert top["bytes:\\xe2\\x80"] == -math.inf
    assert token_bytes("bytes:\\xe2\\x80") == b"\xe2\x80"
    assert token_bytes(" Paris") == b" Paris"


def test_null_first_echo_logprob() -> None:
    body = (
        '{"id": "x", "model": "m", "choices": [{"index": 0, "text": "The cat", "finish_reason": "length",'
        ' "logprobs": {"tokens": ["The", " cat"], "token_logprobs": [null, -3.0], "text_offset": [0, 3],'
        ' "top_logprobs": [null, {" cat": -3.0}]}}]}'
    )
    lp = CompletionResponse.from_json(body).choices[0].logprobs
    assert lp.token_logprobs == [None, -3.0] and lp.top_logprobs[0] is None
    assert lp.span(3, 7) == ([" cat"], [-3.0])
    assert lp.span(2, 7) is None  # " cat" does not start at 2: the form would merge


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "bad logprobs", "type": "invalid_request_error", "param": "logprobs", "code": None}},
        {"message": "bad logprobs", "type": "invalid_request_error", "param": "logprobs"},
    ],
)
def test_both_error_shapes(body: dict) -> None:
    err = APIError.from_body(400, body)
    assert err.message == "bad logprobs" and err.type == "invalid_request_error" and err.param == "logprobs"
    assert "400" in str(err)
    with pytest.raises(APIError):
        CompletionResponse.from_json(json.dumps({"error": body.get("error", body)}))


def test_malformed_responses_are_errors_not_guesses() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        CompletionResponse.from_json("<html>")
    with pytest.raises(ValueError, match="log-probability"):
        CompletionResponse.from_json(_body('{" a": 0.7}'))
    with pytest.raises(ValueError, match="2 entries for 1 tokens"):
        CompletionResponse.from_json(_body('{" a": -1}', lps="[-1, -2]"))


def test_null_model_or_prompt_and_odd_stop_values_are_invalid_requests() -> None:
    for body, param in (
        ({"model": None, "prompt": "x"}, "model"),
        ({"model": "m", "prompt": None}, "prompt"),
        ({"model": "m", "prompt": "x", "stop": 5}, "stop"),
        ({"model": "m", "prompt": "x", "stop": {"a": 1}}, "stop"),
        ({"model": "m", "prompt": "x", "repetition_penalty": 0}, "repetition_penalty"),
        ({"model": "m", "prompt": "x", "prompt_logprobs": 21}, "prompt_logprobs"),
        ({"model": "m", "prompt": "bad \ud800 text"}, "prompt"),
    ):
        with pytest.raises(InvalidRequestError) as e:
            CompletionRequest.from_json(body)
        assert e.value.param == param, body


def _just_outside(rng, side: str) -> float:
    bound = rng.minimum if side == "low" else rng.maximum
    step = 1 if rng.integer else 1e-3
    if side == "low":
        return bound if rng.exclusive_minimum else bound - step
    return bound + step


@pytest.mark.parametrize("field", sorted(FIELD_RANGES))
def test_one_range_table_drives_the_validation_and_the_openapi_document(field: str) -> None:
    from calibkit.server.schema import openapi_schema

    rng = FIELD_RANGES[field]
    # Server limits high enough not to lower the table's own maxima.
    props = openapi_schema(["m"], logprobs_cap=1000, max_tokens_limit=10**6, max_n=10**6)[
        "components"]["schemas"]["CompletionRequest"]["properties"]
    schema = props[field]
    assert schema["type"] == ("integer" if rng.integer else "number")
    assert schema.get("minimum") == rng.minimum
    assert schema.get("exclusiveMinimum", False) == rng.exclusive_minimum
    caps = {"logprobs": 1000, "prompt_logprobs": 1000, "max_tokens": 10**6}
    assert schema.get("maximum") == caps.get(field, rng.maximum)
    base = {"model": "m", "prompt": "x", "max_tokens": 1, "echo": True, "logprobs_cap": None}
    for side in ("low", "high"):
        if (rng.minimum if side == "low" else rng.maximum) is None:
            continue
        with pytest.raises(InvalidRequestError) as e:
            CompletionRequest(**{**base, field: _just_outside(rng, side)})
        assert e.value.param == field
        if not (side == "low" and rng.exclusive_minimum):
            CompletionRequest(**{**base, field: rng.minimum if side == "low" else rng.maximum})  # the bound is valid


def test_the_table_keeps_the_protocol_s_numbers() -> None:
    r = FIELD_RANGES
    assert (r["temperature"].minimum, r["temperature"].maximum) == (0, 2)
    assert (r["top_p"].minimum, r["top_p"].maximum) == (0, 1) == (r["min_p"].minimum, r["min_p"].maximum)
    assert (r["presence_penalty"].minimum, r["presence_penalty"].maximum) == (-2, 2)
    assert (r["frequency_penalty"].minimum, r["frequency_penalty"].maximum) == (-2, 2)
    assert r["top_k"].minimum == -1 and r["max_tokens"].minimum == 0 and r["logprobs"].minimum == 0
    assert (r["n"].minimum, r["n"].maximum) == (1, 128) == (r["best_of"].minimum, r["best_of"].maximum)
    assert r["repetition_penalty"].minimum == 0 and r["repetition_penalty"].exclusive_minimum
    assert set(r) == set(NUMERIC_FIELDS)
    with pytest.raises(InvalidRequestError, match="repetition_penalty must be greater than 0.0 .*1 means none"):
        CompletionRequest(model="m", prompt="x", repetition_penalty=0)


def test_server_limits_lower_the_documented_maxima() -> None:
    from calibkit.server.schema import openapi_schema

    props = openapi_schema(["m"], logprobs_cap=5, max_tokens_limit=8, max_n=2)[
        "components"]["schemas"]["CompletionRequest"]["properties"]
    assert props["logprobs"]["maximum"] == props["prompt_logprobs"]["maximum"] == 5
    assert props["max_tokens"]["maximum"] == 8 and props["n"]["maximum"] == props["best_of"]["maximum"] == 2


def test_the_version_is_the_package_s_own() -> None:
    from importlib.metadata import version

    import calibkit
    from calibkit.server.schema import openapi_schema

    assert calibkit.__version__ == version("calibkit")
    assert openapi_schema(["m"])["info"]["version"] == calibkit.__version__


# -- property-based: any body parses to what it says, or to a ValueError ------------------------
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_TOKEN = st.text(max_size=6) | st.binary(min_size=1, max_size=3).map(
    lambda b: "bytes:" + "".join(f"\\x{x:02x}" for x in b))  # OpenAI's spelling of a part of a character
_LOGPROB = st.floats(min_value=-1e3, max_value=0.0, allow_nan=False)  # -9999 is read as -inf (vLLM)


@st.composite
def _logprobs(draw) -> dict:
    tokens = draw(st.lists(_TOKEN, min_size=1, max_size=6))
    values = draw(st.lists(_LOGPROB, min_size=len(tokens), max_size=len(tokens)))
    echo = draw(st.booleans())
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += draw(st.integers(0, 4)) if t.startswith("bytes:") else len(t)
    tops = [None if echo and i == 0 else draw(st.dictionaries(_TOKEN, _LOGPROB, max_size=4)) | {t: v}
            for i, (t, v) in enumerate(zip(tokens, values))]
    return {"tokens": tokens, "token_logprobs": [None] + values[1:] if echo else values,
            "top_logprobs": tops, "text_offset": offsets}


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.lists(_logprobs(), min_size=1, max_size=3), st.text(max_size=5))
def test_any_answer_the_protocol_allows_parses_to_what_it_says(choices, text) -> None:
    body = {"id": "cmpl-x", "object": "text_completion", "model": "m", "created": 1,
            "choices": [{"index": i, "text": text, "finish_reason": "length", "logprobs": lp}
                        for i, lp in enumerate(choices)],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    r = CompletionResponse.from_json(json.dumps(body))
    for got, sent in zip(r.choices, choices):
        assert got.logprobs.tokens == sent["tokens"]
        assert got.logprobs.token_logprobs == sent["token_logprobs"]
        assert got.logprobs.text_offset == sent["text_offset"]
        for top, want in zip(got.logprobs.top_logprobs, sent["top_logprobs"]):
            assert (top is None) == (want is None) and (top is None or top == pytest.approx(want))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=12)
_FIELDS = st.sampled_from(["id", "object", "model", "created", "choices", "usage", "index", "text", "logprobs",
                           "tokens", "token_logprobs", "top_logprobs", "text_offset", "finish_reason", "error"])


@st.composite
def _almost_answers(draw) -> dict:
    """Answers whose every field may hold any JSON: what a broken or hostile server sends."""
    def obj(depth: int) -> dict:
        keys = draw(st.lists(_FIELDS, max_size=5, unique=True))
        return {k: (obj(depth + 1) if depth < 2 and draw(st.booleans()) else
                    [obj(depth + 1)] if depth < 2 and draw(st.booleans()) else draw(_JSON)) for k in keys}
    return obj(0)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(_almost_answers() | _JSON)
@example({"choices": [{"index": None}]})  # found by this test: int(None) was a TypeError
@example({"choices": [], "usage": [1]})  # and a usage list an AttributeError
@example({"choices": [{"text": 5}], "usage": {"prompt_tokens": True}})
def test_any_other_json_is_a_value_error_or_an_api_error_never_a_crash(body) -> None:
    try:
        CompletionResponse.from_json(json.dumps(body))
    except (ValueError, APIError):
        pass
