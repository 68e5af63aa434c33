"""The limits of ``calibkit serve`` (kept apart from the HTTP stack, so the CLI can show them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..backends.base import check_int

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """The server's limits.

    max_body_bytes : larger bodies are 413.
    max_prompts : prompts in one request.
    max_tokens_limit : the largest max_tokens accepted (the default 16 is lowered to it).
    max_n : the largest n and best_of.
    queue_size : requests waiting for the worker; one more is 503 with Retry-After.
    batch_size : queued requests the worker takes at a time (run one after another).
    logprobs_cap : the top-k cap of logprobs and prompt_logprobs (20, as the ACS API).
    retry_after : seconds in the Retry-After header of a 503.
    """

    max_body_bytes: int = 1 << 20
    max_prompts: int = 64
    max_tokens_limit: int = 512
    max_n: int = 16
    queue_size: int = 64
    batch_size: int = 8
    logprobs_cap: int = 20
    retry_after: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            check_int(f"ServerConfig.{f.name}", v, 0 if f.name in ("max_tokens_limit", "logprobs_cap") else 1)
