"""Request and response types of the completions protocol, with strict validation.

The rules follow the ACS base-model API page (shared/reference/acs-api-logprobs.txt):
``logprobs`` is an integer top-k, never a boolean, and every numeric sampler field
rejects ``true``/``false`` so that a typo fails loudly. ``echo`` and ``stream`` are
the only boolean fields. The same checks run before calibkit sends anything, and in
``calibkit serve`` when a request arrives.

Parsing survives what real servers send: ``top_logprobs`` with k+1 entries (the
sampled token added) or fewer than k, two token ids whose strings collide as one JSON
key (combined by log-sum-exp rather than overwritten), ``"bytes:\\xe2"`` tokens, a
null logprob on the first echoed token, ``-9999`` standing for minus infinity, and
both the nested ``{"error": {...}}`` and the flat error shapes.

Example
-------
>>> req = CompletionRequest(model="llama-8b", prompt="The capital of France is",
...                         max_tokens=1, logprobs=5)
>>> req.to_json()["logprobs"]
5
>>> CompletionRequest(model="m", prompt="x", logprobs=True)
Traceback (most recent call last):
...
calibkit.api.InvalidRequestError: logprobs must be an integer top-k between 0 and 20, not a boolean (got True); ...
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "APIError",
    "Choice",
    "CompletionRequest",
    "CompletionResponse",
    "FIELD_RANGES",
    "InvalidRequestError",
    "Logprobs",
    "Range",
    "Usage",
    "token_bytes",
]

ACS_LOGPROBS_CAP = 20
# Servers write -9999 (or lower) where the true value is minus infinity.
NEG_INF_SENTINEL = -9999.0


@dataclass(frozen=True)
class Range:
    """The values a numeric request field takes: its type and bounds (None: unbounded).

    ``exclusive_minimum``: the minimum itself is not allowed. Both the request
    validation and ``calibkit serve``'s OpenAPI document read :data:`FIELD_RANGES`.

    >>> FIELD_RANGES["temperature"].contains(2.5), FIELD_RANGES["temperature"].describe()
    (False, 'in [0.0, 2.0]')
    """

    integer: bool
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the range."""
        if self.minimum is not None and (value <= self.minimum if self.exclusive_minimum else value < self.minimum):
            return False
        return self.maximum is None or value <= self.maximum

    def describe(self) -> str:
        """The range in words, as error messages say it ("in [0.0, 2.0]", "greater than 0.0")."""
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None and not self.exclusive_minimum:
            return f"in [{lo}, {hi}]"
        words = []
        if lo is not None:
            words.append(f"greater than {lo}" if self.exclusive_minimum else f"at least {lo}")
        if hi is not None:
            words.append(f"at most {hi}")
        return " and ".join(words) or "any number"


# Types and ranges as OpenAI's legacy completions API and vLLM enforce them. Limits a
# server sets stay parameters: the endpoint's logprobs cap (CompletionRequest's
# logprobs_cap) bounds logprobs and prompt_logprobs; calibkit serve's ServerConfig
# lowers max_tokens, n and best_of further.
FIELD_RANGES: dict[str, Range] = {
    "max_tokens": Range(integer=True, minimum=0),
    "n": Range(integer=True, minimum=1, maximum=128),
    "best_of": Range(integer=True, minimum=1, maximum=128),
    "seed": Range(integer=True),
    "top_k": Range(integer=True, minimum=-1),
    "logprobs": Range(integer=True, minimum=0),
    "prompt_logprobs": Range(integer=True, minimum=0),
    "temperature": Range(integer=False, minimum=0.0, maximum=2.0),
    "top_p": Range(integer=False, minimum=0.0, maximum=1.0),
    "min_p": Range(integer=False, minimum=0.0, maximum=1.0),
    "presence_penalty": Range(integer=False, minimum=-2.0, maximum=2.0),
    "frequency_penalty": Range(integer=False, minimum=-2.0, maximum=2.0),
    "repetition_penalty": Range(integer=False, minimum=0.0, exclusive_minimum=True),
}
_INT_FIELDS = tuple(name for name, r in FIELD_RANGES.items() if r.integer)
_FLOAT_FIELDS = tuple(name for name, r in FIELD_RANGES.items() if not r.integer)
NUMERIC_FIELDS = _INT_FIELDS + _FLOAT_FIELDS
BOOLEAN_FIELDS = ("echo", "stream")


class InvalidRequestError(ValueError):
    """A request field breaks the protocol's rules; ``param`` names the field.

    Raised locally, before anything is sent, and returned by ``calibkit serve`` as a
    400 ``invalid_request_error`` with the same ``param``.
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class APIError(RuntimeError):
    """An error answer from a completions server (any status other than 2xx).

    ``status_code``, ``type``, ``param`` and ``code`` come from the error body, in
    either the nested ``{"error": {...}}`` or the flat shape.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        type: str | None = None,
        param: str | None = None,
        code: str | int | None = None,
        body: Any = None,
    ):
        where = f"{status_code} " if status_code is not None else ""
        kind = f"{type}: " if type else ""
        super().__init__(f"{where}{kind}{message}")
        self.message = message
        self.status_code = status_code
        self.type = type
        self.param = param
        self.code = code
        self.body = body

    @classmethod
    def from_body(cls, status_code: int | None, body: Any) -> "APIError":
        """Build the error from a decoded JSON body, nested or flat."""
        err = body.get("error") if isinstance(body, Mapping) else None
        if isinstance(err, Mapping):
            src: Mapping = err
        elif isinstance(body, Mapping):
            src = body
            if isinstance(err, str):  # {"error": "message"}
                src = {**body, "message": body.get("message", err)}
        else:
            src = {"message": str(body)}
        message = src.get("message") or src.get("detail") or src.get("msg") or json.dumps(body)
        return cls(
            str(message),
            status_code=status_code,
            type=src.get("type"),
            param=src.get("param"),
            code=src.get("code"),
            body=body,
        )


def _check_number(name: str, value: Any, *, integer: bool, cap: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        if name == "logprobs":
            bound = f"between 0 and {cap}" if cap is not None else "of at least 0"
            raise InvalidRequestError(
                f"logprobs must be an integer top-k {bound}, not a boolean (got {value}); "
                f"write logprobs=5 to get the 5 most likely tokens at each position",
                param=name,
            )
        raise InvalidRequestError(
            f"{name} must be a number, not a boolean (got {value}); "
            f"booleans are rejected in every numeric field so that a typo fails loudly",
            param=name,
        )
    if integer:
        if not isinstance(value, (int, np.integer)):
            raise InvalidRequestError(
                f"{name} must be an integer (got {type(value).__name__} {value!r})", param=name
            )
    else:
        if not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidRequestError(
                f"{name} must be a number (got {type(value).__name__} {value!r})", param=name
            )
        if not math.isfinite(float(value)):
            raise InvalidRequestError(f"{name} must be finite (got {value!r})", param=name)


@dataclass(frozen=True)
class CompletionRequest:
    """One POST /completions body.

    ``prompt`` is a string or a list of strings; a list asks for one choice per
    prompt (times ``n``), routed back by ``choices[i].index``. ``logprobs_cap`` is not
    sent: it is the endpoint's top-k cap (20 for ACS, 5 for OpenAI's legacy API,
    vLLM's ``max_logprobs``) and is checked before sending.

    >>> CompletionRequest(model="m", prompt=["a", "b"], max_tokens=0, echo=True,
    ...                   logprobs=0).to_json()["prompt"]
    ['a', 'b']
    """

    model: str
    prompt: str | Sequence[str]
    max_tokens: int | None = 16
    logprobs: int | None = None
    echo: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    n: int | None = None
    best_of: int | None = None
    seed: int | None = None
    stop: str | Sequence[str] | None = None
    stream: bool = False
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    prompt_logprobs: int | None = None
    logprobs_cap: int | None = field(default=ACS_LOGPROBS_CAP, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.prompt, (list, tuple)):
            object.__setattr__(self, "prompt", tuple(self.prompt))
        if isinstance(self.stop, list):
            object.__setattr__(self, "stop", tuple(self.stop))
        self.validate()

    @property
    def prompts(self) -> tuple[str, ...]:
        """The prompts as a tuple, whether one string or a list was given."""
        return (self.prompt,) if isinstance(self.prompt, str) else tuple(self.prompt)

    def validate(self) -> None:
        """Check every field; raise InvalidRequestError naming the first bad one."""
        if not isinstance(self.model, str) or not self.model:
            raise InvalidRequestError("model must be a non-empty string", param="model")
        prompts = self.prompt if not isinstance(self.prompt, str) else (self.prompt,)
        if not isinstance(prompts, tuple) or not prompts:
            raise InvalidRequestError(
                "prompt must be a string or a non-empty list of strings", param="prompt"
            )
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise InvalidRequestError(
                    f"prompt[{i}] must be a string (got {type(p).__name__}); "
                    "token-id prompts are not supported",
                    param="prompt",
                )
            try:
                p.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidRequestError(
                    f"prompt[{i}] is not valid text: {e.reason} at character {e.start}", param="prompt"
                ) from None
        cap = self.logprobs_cap
        for name in _INT_FIELDS:
            _check_number(name, getattr(self, name), integer=True, cap=cap)
        for name in _FLOAT_FIELDS:
            _check_number(name, getattr(self, name), integer=False)
        for name in BOOLEAN_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise InvalidRequestError(
                    f"{name} must be true or false (got {getattr(self, name)!r})", param=name
                )
        for name in ("logprobs", "prompt_logprobs"):  # their maximum: the endpoint's cap
            v, lo = getattr(self, name), FIELD_RANGES[name].minimum
            if v is not None and (v < lo or (cap is not None and v > cap)):
                raise InvalidRequestError(
                    f"{name} must be an integer between {lo} and {cap} (got {v}); "
                    f"this endpoint returns at most {cap} alternatives per position",
                    param=name,
                )
        for name, rng in FIELD_RANGES.items():
            v = getattr(self, name)
            if v is not None and not rng.contains(v):
                hint = "; 1 means none" if name == "repetition_penalty" else ""
                raise InvalidRequestError(f"{name} must be {rng.describe()} (got {v}){hint}", param=name)
        if self.max_tokens == 0 and not self.echo:
            raise InvalidRequestError(
                "max_tokens may be 0 only with echo=true (to score the prompt alone); "
                "ask for at least 1 token or set echo",
                param="max_tokens",
            )
        if self.stop is not None:
            stops = (self.stop,) if isinstance(self.stop, str) else self.stop
            if not isinstance(stops, tuple) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
                raise InvalidRequestError(
                    "stop must be a non-empty string or a list of at most 4 of them",
                    param="stop",
                )

    def to_json(self) -> dict[str, Any]:
        """The JSON body, with unset (None) fields and defaults left out."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "logprobs_cap":
                continue
            v = getattr(self, f.name)
            if v is None or (f.name in BOOLEAN_FIELDS and v is False):
                continue
            if isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, np.integer):
                v = int(v)
            elif isinstance(v, np.floating):
                v = float(v)
            out[f.name] = v
        return out

    @classmethod
    def from_json(
        cls, body: Any, *, logprobs_cap: int | None = ACS_LOGPROBS_CAP, strict: bool = True
    ) -> "CompletionRequest":
        """Validate a decoded JSON body (as a server receives it).

        With ``strict`` an unknown field is an error, as the ACS API does.
        """
        if not isinstance(body, Mapping):
            raise InvalidRequestError("the request body must be a JSON object", param=None)
        known = {f.name for f in fields(cls)} - {"logprobs_cap"}
        unknown = sorted(set(body) - known)
        if strict and unknown:
            raise InvalidRequestError(
                f"unknown field {unknown[0]!r}; known fields are {', '.join(sorted(known))}",
                param=unknown[0],
            )
        if body.get("model") is None:
            raise InvalidRequestError("model is required", param="model")
        if body.get("prompt") is None:
            raise InvalidRequestError("prompt is required", param="prompt")
        kwargs = {k: v for k, v in body.items() if k in known and v is not None}
        for name in BOOLEAN_FIELDS:  # a JSON null means "unset", as for the other fields
            kwargs.setdefault(name, False)
        if isinstance(kwargs.get("prompt"), list):
            kwargs["prompt"] = tuple(kwargs["prompt"])
        return cls(**kwargs, logprobs_cap=logprobs_cap)


def token_bytes(token: str) -> bytes:
    """The bytes a token string stands for; undecodable tokens arrive as ``"bytes:\\xe2\\x80"``.

    >>> token_bytes("bytes:\\\\xe2\\\\x80")
    b'\\xe2\\x80'
    >>> token_bytes(" Paris")
    b' Paris'
    """
    if token.startswith("bytes:"):
        rest = token[len("bytes:") :]
        if re.fullmatch(r"(\\x[0-9a-fA-F]{2})+", rest):
            return bytes(int(rest[i + 2 : i + 4], 16) for i in range(0, len(rest), 4))
    return token.encode("utf-8")


def _as_logprob(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number (got {value!r})")
    v = float(value)
    if math.isnan(v) or v > 1e-6:
        raise ValueError(f"{where} must be a log-probability <= 0 (got {value!r})")
    return -math.inf if v <= NEG_INF_SENTINEL else min(v, 0.0)


class _Pairs(dict):
    """A JSON object that kept every (key, value) pair, duplicates included."""

    pairs: list[tuple[str, Any]]


def _keep_pairs(pairs: list[tuple[str, Any]]) -> dict:
    d = _Pairs(pairs)
    d.pairs = pairs
    return d


def _logaddexp_all(values: list[float]) -> float:
    m = max(values)
    if m == -math.inf:
        return m
    return m + math.log(sum(math.exp(v - m) for v in values))


def _parse_top(obj: Any, where: str) -> dict[str, float] | None:
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where} must be an object of token -> logprob (got {obj!r})")
    pairs = obj.pairs if isinstance(obj, _Pairs) else list(obj.items())
    grouped: dict[str, list[float]] = {}
    for tok, lp in pairs:
        grouped.setdefault(tok, []).append(_as_logprob(lp, f"{where}[{tok!r}]"))
    # Two token ids that decode to the same string arrive as one repeated JSON key:
    # their probabilities add, so the key holds their log-sum-exp.
    return {tok: v[0] if len(v) == 1 else _logaddexp_all(v) for tok, v in grouped.items()}


@dataclass
class Logprobs:
    """Per-token log-probabilities of one choice, OpenAI's legacy layout.

    ``token_logprobs[i]`` is None where the server knows no value (the first echoed
    token); ``top_logprobs[i]`` maps token strings to log-probabilities, duplicates
    already combined; ``-inf`` stands where the server wrote -9999.
    """

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]

    @classmethod
    def from_json(cls, obj: Any, where: str = "logprobs") -> "Logprobs":
        if not isinstance(obj, Mapping):
            raise ValueError(f"{where} must be an object (got {obj!r})")
        tokens = list(obj.get("tokens") or [])
        if not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"{where}.tokens must be a list of strings")
        raw_lps = obj.get("token_logprobs") or []
        lps = [
            None if v is None else _as_logprob(v, f"{where}.token_logprobs[{i}]")
            for i, v in enumerate(raw_lps)
        ]
        tops = [
            _parse_top(t, f"{where}.top_logprobs[{i}]")
            for i, t in enumerate(obj.get("top_logprobs") or [])
        ]
        offsets = list(obj.get("text_offset") or [])
        for name, seq in (("token_logprobs", lps), ("top_logprobs", tops), ("text_offset", offsets)):
            if seq and len(seq) != len(tokens):
                raise ValueError(
                    f"{where}.{name} has {len(seq)} entries for {len(tokens)} tokens"
                )
        return cls(tokens=tokens, token_logprobs=lps, top_logprobs=tops, text_offset=offsets)

    def span(self, start: int, end: int) -> tuple[list[str], list[float | None]] | None:
        """The tokens whose text starts in ``[start, end)`` of the choice's text, with their logprobs.

        For echo scoring: with ``start = len(prompt)`` and ``end = len(prompt + form)``
        these are the form's tokens. None where no token starts exactly at ``start`` or
        one straddles it (the form's first characters merged into the prompt's last
        token): then no log-probability belongs to the form alone. Token ``i`` covers the
        text from ``text_offset[i]`` to ``text_offset[i + 1]``: its string's length is not
        used, so that an OpenAI ``"bytes:\\xe2\\x80"`` token (part of a character) is placed
        right. A ValueError where ``text_offset`` is missing or out of order.

        >>> lp = Logprobs(["Sentiment:", " pos", "itive"], [None, -1.0, -0.5], [], [0, 10, 14])
        >>> lp.span(10, 19)
        ([' pos', 'itive'], [-1.0, -0.5])
        >>> lp.span(12, 19) is None       # " pos|itive": the form starts inside " pos"
        True
        """
        offsets = self.text_offset
        if len(offsets) != len(self.tokens):
            raise ValueError(
                f"echo scoring needs a text_offset for every token; the server sent {len(offsets)} for "
                f"{len(self.tokens)} tokens"
            )
        if any(b < a for a, b in zip(offsets, offsets[1:])):
            raise ValueError(f"the server sent text_offset out of order: {offsets}")
        values = list(self.token_logprobs) if self.token_logprobs else [None] * len(self.tokens)
        toks: list[str] = []
        lps: list[float | None] = []
        at_boundary = False
        for i, (tok, off, v) in enumerate(zip(self.tokens, offsets, values)):
            stop = offsets[i + 1] if i + 1 < len(offsets) else off + len(tok)
            if off < start < stop:
                return None
            at_boundary = at_boundary or off == start
            if start <= off < end:
                toks.append(tok)
                lps.append(v)
        if not toks or not at_boundary:
            return None
        return toks, lps

    def to_json(self) -> dict[str, Any]:
        def enc(v: float | None) -> float | None:
            return None if v is None else (NEG_INF_SENTINEL if v == -math.inf else v)

        return {
            "text_offset": list(self.text_offset),
            "tokens": list(self.tokens),
            "token_logprobs": [enc(v) for v in self.token_logprobs],
            "top_logprobs": [
                None if t is None else {k: enc(v) for k, v in t.items()}
                for t in self.top_logprobs
            ],
        }


@dataclass
class Choice:
    """One choice: ``index`` routes it back to its prompt (index // n)."""

    index: int
    text: str
    logprobs: Logprobs | None = None
    finish_reason: str | None = None
    prompt_logprobs: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "text": self.text,
            "logprobs": None if self.logprobs is None else self.logprobs.to_json(),
            "finish_reason": self.finish_reason,
        }
        if self.prompt_logprobs is not None:
            out["prompt_logprobs"] = self.prompt_logprobs
        return out


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass
class CompletionResponse:
    """A /completions answer, parsed and checked.

    >>> r = CompletionResponse.from_json(b'{"id": "cmpl-1", "object": "text_completion",'
    ...   b' "model": "m", "choices": [{"index": 0, "text": " a", "finish_reason": "length",'
    ...   b' "logprobs": {"tokens": [" a"], "token_logprobs": [-1.7], "text_offset": [0],'
    ...   b' "top_logprobs": [{" a": -1.7, " b": -2.0, " b": -2.0}]}}]}')
    >>> round(r.choices[0].logprobs.top_logprobs[0][" b"], 4)   # two ids, one string
    -1.3069
    """

    id: str
    model: str
    choices: list[Choice]
    usage: Usage = field(default_factory=Usage)
    object: str = "text_completion"
    created: int | None = None

    @classmethod
    def from_json(cls, body: bytes | str | Mapping) -> "CompletionResponse":
        """Parse a response body; raises APIError for an error body, ValueError if malformed."""
        if isinstance(body, (bytes, str)):
            try:
                obj = json.loads(body, object_pairs_hook=_keep_pairs)
            except json.JSONDecodeError as e:
                raise ValueError(f"the response is not JSON: {e}") from e
        else:
            obj = body
        if not isinstance(obj, Mapping):
            raise ValueError(f"the response must be a JSON object (got {type(obj).__name__})")
        if "error" in obj and "choices" not in obj:
            raise APIError.from_body(None, obj)
        raw_choices = obj.get("choices")
        if not isinstance(raw_choices, list):
            raise ValueError("the response has no choices list")
        choices = []
        for i, c in enumerate(raw_choices):
            if not isinstance(c, Mapping):
                raise ValueError(f"choices[{i}] must be an object")
            lp = c.get("logprobs")
            index, text = c.get("index", i), c.get("text")
            if not isinstance(index, int) or isinstance(index, bool):
                raise ValueError(f"choices[{i}].index must be an integer (got {index!r})")
            if text is not None and not isinstance(text, str):
                raise ValueError(f"choices[{i}].text must be a string (got {type(text).__name__})")
            choices.append(
                Choice(
                    index=index,
                    text=text or "",
                    logprobs=None if lp is None else Logprobs.from_json(lp, f"choices[{i}].logprobs"),
                    finish_reason=c.get("finish_reason"),
                    prompt_logprobs=c.get("prompt_logprobs"),
                )
            )
        u = obj.get("usage") or {}
        counts = [u.get(f) or 0 for f in ("prompt_tokens", "completion_tokens", "total_tokens")] \
            if isinstance(u, Mapping) else None
        if counts is None or not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            raise ValueError(f"the response's usage must be an object of integer token counts (got {u!r:.80})")
        usage = Usage(*counts)
        return cls(
            id=str(obj.get("id", "")),
            model=str(obj.get("model", "")),
            choices=sorted(choices, key=lambda c: c.index),
            usage=usage,
            object=str(obj.get("object", "text_completion")),
            created=obj.get("created"),
        )

    @classmethod
    def merge(cls, parts: Sequence["CompletionResponse"], n: int = 1) -> "CompletionResponse":
        """One response for a request of many prompts, from one response per prompt.

        Prompt ``p``'s choice ``j`` gets index ``p * n + j`` (``n`` choices per prompt)
        and the usage is summed; one part comes back as it is.

        >>> part = lambda t: CompletionResponse(id="c", model="m", choices=[Choice(0, t)], usage=Usage(2, 1, 3))
        >>> r = CompletionResponse.merge([part(" a"), part(" b")])
        >>> [(c.index, c.text) for c in r.choices], r.usage.total_tokens
        ([(0, ' a'), (1, ' b')], 6)
        """
        if len(parts) == 1:
            return parts[0]
        choices = [dataclasses.replace(c, index=pi * n + c.index) for pi, part in enumerate(parts) for c in part.choices]
        usage = Usage()
        for part in parts:
            usage.prompt_tokens += part.usage.prompt_tokens
            usage.completion_tokens += part.usage.completion_tokens
            usage.total_tokens += part.usage.total_tokens
        return cls(id=parts[0].id, model=parts[0].model, choices=choices, usage=usage, created=parts[0].created)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": self.object,
            "model": self.model,
            "choices": [c.to_json() for c in self.choices],
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "total_tokens": self.usage.total_tokens,
            },
        }
        if self.created is not None:
            out["created"] = self.created
        return out
