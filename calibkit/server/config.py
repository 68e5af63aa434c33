"""The limits of ``calibkit serve`` (kept apart from the HTTP stack, so the CLI can show them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..backends.base import check_int

__all__ = ["ServerConfig"]


def _limit(default: int, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServerConfig:
    """The server's limits; each field's ``help`` (``calibkit serve --help`` shows it) says what it bounds.

    >>> ServerConfig(queue_size=4).queue_size
    4
    >>> ServerConfig().body_timeout, ServerConfig().max_request_tokens
    (30, 8192)
    >>> dataclasses.fields(ServerConfig)[0].metadata["help"]
    'request bodies larger than this many bytes are refused with 413'
    """

    max_body_bytes: int = _limit(1 << 20, "request bodies larger than this many bytes are refused with 413")
    max_prompts: int = _limit(64, "prompts in one request; more is 400")
    max_tokens_limit: int = _limit(512, "the largest max_tokens accepted; the API's default of 16 is lowered to it")
    max_n: int = _limit(16, "the largest n and best_of")
    queue_size: int = _limit(64, "requests waiting for the worker; one more is 503 with Retry-After")
    batch_size: int = _limit(8, "queued requests the worker takes at a time (run one after another)")
    logprobs_cap: int = _limit(20, "the top-k cap of logprobs and prompt_logprobs (20, as the ACS API)")
    retry_after: int = _limit(1, "seconds in the Retry-After header of a 503")
    body_timeout: int = _limit(30, "seconds a client has to send its whole request body; slower is 408")
    max_request_tokens: int = _limit(
        8192, "tokens one request may ask to generate: prompts x max(n, best_of) x max_tokens; more is 400"
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            check_int(f"ServerConfig.{f.name}", v, 0 if f.name in ("max_tokens_limit", "logprobs_cap") else 1)
