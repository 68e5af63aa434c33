"""Reading answers: a body into a completions response, and a response into the two questions' answers.

A 2xx body that is not JSON at all (cut short by a proxy, empty, not UTF-8) is
:class:`NotJSON`, transient like a dropped connection; JSON that breaks the protocol is
:class:`MalformedResponseError`, which no retry would change. What real servers send is
accepted: a (k+1)-th top-k entry (the sampled token), two token ids whose strings
collide as one JSON key (their probabilities added, in :mod:`calibkit.api`), and
OpenAI's ``"bytes:\\xe2\\x80"`` strings, kept as opaque tokens; an echo's spans are read
from ``text_offset`` alone (:meth:`calibkit.api.Logprobs.span`).
"""

from __future__ import annotations

import json
from typing import Any

from ...api import APIError, CompletionResponse, Logprobs
from ..base import Continuation, TopK

__all__ = ["MalformedResponseError", "NotJSON", "continuation_of", "decode_json", "echo_logprobs", "excerpt",
           "parse_completion", "prompt_tokens", "top_k_of"]


class MalformedResponseError(APIError, ValueError):
    """A 2xx answer that is not a valid completions response; the message says what was wrong.

    Raised after the retries where the body was not JSON at all (truncated: transient),
    at once where it was JSON that breaks the protocol (no retry would change it).

    >>> raise MalformedResponseError("the server sent 2 choices for 1 prompt")
    Traceback (most recent call last):
    ...
    calibkit.backends.http.responses.MalformedResponseError: the server sent 2 choices for 1 prompt
    """


class NotJSON(Exception):
    """A 2xx body that is not valid JSON (cut short, empty, not UTF-8): retried like a dropped connection."""


def decode_json(raw: bytes) -> Any:
    """The decoded JSON of a 2xx body; :class:`NotJSON` where it is not JSON.

    >>> decode_json(b'{"a": 1}')
    {'a': 1}
    """
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NotJSON(str(e)) from e


def parse_completion(raw: bytes) -> CompletionResponse:
    """A completions body parsed; :class:`NotJSON` if not JSON, :class:`MalformedResponseError` if JSON that
    breaks the protocol."""
    try:
        return CompletionResponse.from_json(raw)
    except APIError:
        raise
    except UnicodeDecodeError as e:
        raise NotJSON(str(e)) from e
    except (ValueError, TypeError) as e:
        if isinstance(e.__cause__, (json.JSONDecodeError, UnicodeDecodeError)):
            raise NotJSON(str(e.__cause__)) from e
        raise MalformedResponseError(f"the server's answer is JSON but not a valid completions response: {e}") from e


def excerpt(raw: bytes, n: int = 80) -> str:
    """The end of a body, where a cut shows, for an error message.

    >>> excerpt(b'{"id": "cmpl-1", "choi', n=8)
    '...\\'", "choi\\''
    """
    text = raw.decode("utf-8", "replace")
    return repr(text) if len(text) <= n else f"...{text[-n:]!r}"


def top_k_of(resp: CompletionResponse, k: int, prompt: str, where: str) -> TopK:
    """The top-k answer to ``prompt`` in ``resp`` from ``where`` (model and URL, for messages), checked."""
    lp = resp.choices[0].logprobs
    if lp is None or not lp.top_logprobs or lp.top_logprobs[0] is None:
        raise APIError(
            f"{where} returned no top_logprobs for the prompt {prompt[:40]!r}; the endpoint must support the "
            f"logprobs field of the completions API"
        )
    top = dict(lp.top_logprobs[0])
    if len(top) > k + 1:  # k, and the sampled token where it is not among them
        raise MalformedResponseError(
            f"{where} sent {len(top)} top_logprobs entries for logprobs={k} (at most k + 1, the sampled token "
            f"added); the endpoint ignores logprobs="
        )
    return top


def echo_logprobs(resp: CompletionResponse, where: str) -> Logprobs:
    """The logprobs of an echo answer from ``where``, with a text_offset for every token."""
    lp = resp.choices[0].logprobs
    if lp is None:
        raise MalformedResponseError(
            f"{where} answered an echo request without logprobs; the endpoint must support echo=true with "
            f"logprobs=0 to score continuations"
        )
    if len(lp.text_offset) != len(lp.tokens):
        raise MalformedResponseError(
            f"echo scoring needs a text_offset for every token; {where} sent {len(lp.text_offset)} for "
            f"{len(lp.tokens)} tokens"
        )
    return lp


def prompt_tokens(lp: Logprobs, prompt: str) -> list[tuple[str, int]]:
    """The (token, offset) pairs of an echo that start inside ``prompt``."""
    return [(t, o) for t, o in zip(lp.tokens, lp.text_offset) if o < len(prompt)]


def continuation_of(lp: Logprobs, prompt: str, continuation: str, own: list[tuple[str, int]],
                    where: str) -> Continuation | None:
    """The continuation's tokens and log-probabilities in the echo of prompt + continuation.

    None where no token starts at the seam, or where the prompt's tokens differ from
    ``own``, its tokens echoed alone (the continuation changed how the prompt tokenizes).
    """
    try:
        span = lp.span(len(prompt), len(prompt + continuation))
    except ValueError as e:
        raise MalformedResponseError(f"{where}: {e}") from e
    if span is None or prompt_tokens(lp, prompt) != own:
        return None
    tokens, logprobs = span
    if any(v is None for v in logprobs):
        raise MalformedResponseError(f"{where} sent a null logprob inside the continuation {continuation!r}")
    return Continuation(tuple(tokens), tuple(float(v) for v in logprobs if v is not None))
