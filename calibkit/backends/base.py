"""What every backend shares: the cache in front of the transport, one prompt per entry.

A backend answers :class:`~calibkit.api.CompletionRequest` objects with
:class:`~calibkit.api.CompletionResponse` objects. ``complete`` splits requests that
carry many prompts into one entry per prompt, answers what the cache already holds,
sends the rest through the subclass's ``_complete_many`` (which may pack them into
multi-prompt requests again), stores every answer as soon as its batch returns, and
reassembles one response per request with choices routed by index.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

from ..api import Choice, CompletionRequest, CompletionResponse, Usage
from ..cache import ResponseCache, resolve_cache

__all__ = ["Backend", "check_int"]


def check_int(name: str, value: Any, lo: int) -> None:
    """A setting that must be a whole number of at least ``lo`` (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo} (got {value!r})")


def _single(req: CompletionRequest, prompt: str) -> CompletionRequest:
    return dataclasses.replace(req, prompt=prompt)


def _is_deterministic(req: CompletionRequest) -> bool:
    # Sampled text without a seed is a draw, not an answer to keep.
    return req.max_tokens == 0 or req.temperature == 0 or req.seed is not None


class Backend(ABC):
    """Base class of the HTTP client and the embedded model.

    Subclasses set ``logprobs_cap`` (None: no cap) and implement ``identity`` and
    ``_complete_many``.
    """

    logprobs_cap: int | None = None
    #: max_tokens of echo requests: 0 where the server allows it with echo (ACS, calibkit serve).
    echo_max_tokens: int = 0
    #: True where exact continuation log-probabilities come without echo requests.
    native_exact: bool = False

    def __init__(self, cache: ResponseCache | str | bool | None = None):
        self._cache_arg = cache
        self.cache = resolve_cache(cache)
        #: Requests sent to the model (cache hits not counted), by this object.
        self.requests_made = 0
        #: Prompts answered from the cache.
        self.cache_hits = 0

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What makes answers from this backend differ: model and endpoint, never a key."""

    @property
    def model_name(self) -> str:
        return str(self.identity.get("model"))

    @abstractmethod
    def _complete_many(
        self, requests: list[CompletionRequest], on_done: Callable[[list[int], list[CompletionResponse]], None]
    ) -> None:
        """Answer single-prompt requests; call ``on_done(indices, responses)`` per finished batch."""

    def tokenize(self, text: str) -> list[str] | None:
        """The token strings of ``text`` (no BOS), or None where the backend cannot say."""
        return None

    def echo_spans(
        self, pairs: Sequence[tuple[str, str]], *, progress: Callable[[int], None] | None = None
    ) -> list[tuple[list[str], list[float | None]] | None]:
        """Echo each ``prompt + form``; the form's tokens and their logprobs, None where it merges
        with the end of the prompt (see :meth:`~calibkit.api.Logprobs.span`)."""
        reqs = [
            self.make_request(p + f, max_tokens=self.echo_max_tokens, echo=True, logprobs=0, temperature=0)
            for p, f in pairs
        ]
        out = []
        for (p, f), resp in zip(pairs, self.complete(reqs, progress=progress)):
            lp = resp.choices[0].logprobs
            if lp is None:
                raise ValueError(f"{self.model_name} answered an echo request without logprobs")
            out.append(lp.span(len(p), len(p) + len(f)))
        return out

    def form_tokens(self, prompt: str, forms: Sequence[str]) -> list[list[str] | None]:
        """The tokens each form becomes right after ``prompt``; None where it merges with the prompt.

        Learnt from the server itself by echo requests, so it holds for any completions
        API, whatever its tokenizer.
        """
        return [None if span is None else span[0] for span in self.echo_spans([(prompt, f) for f in forms])]

    def make_request(self, prompt: str | Sequence[str], **kwargs: Any) -> CompletionRequest:
        """A request for this backend's model, checked against its logprobs cap."""
        return CompletionRequest(
            model=self.model_name, prompt=prompt, logprobs_cap=self.logprobs_cap, **kwargs
        )

    def complete(
        self,
        requests: CompletionRequest | Sequence[CompletionRequest],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> list[CompletionResponse] | CompletionResponse:
        """Answer one request or many; a list in gives a list out, in order.

        >>> from calibkit import LocalModel                      # doctest: +SKIP
        >>> m = LocalModel()                                      # doctest: +SKIP
        >>> r = m.complete(m.make_request("The capital of France is",
        ...                max_tokens=1, logprobs=5, temperature=0))  # doctest: +SKIP
        """
        single = isinstance(requests, CompletionRequest)
        reqs = [requests] if single else list(requests)
        for r in reqs:
            if not isinstance(r, CompletionRequest):
                raise TypeError(f"requests must be CompletionRequest objects (got {type(r).__name__})")
            r.validate()
        # Flatten: one entry per prompt, remembering where it goes back.
        flat: list[CompletionRequest] = []
        owner: list[tuple[int, int]] = []
        for ri, r in enumerate(reqs):
            for pi, p in enumerate(r.prompts):
                flat.append(_single(r, p))
                owner.append((ri, pi))
        answers: list[CompletionResponse | None] = [None] * len(flat)

        keys: list[str | None] = [None] * len(flat)
        if self.cache is not None:
            ident = self.identity
            for i, r in enumerate(flat):
                if _is_deterministic(r):
                    keys[i] = self.cache.key(ident, r.to_json())
            hits = self.cache.get_many(k for k in keys if k is not None)
            for i, k in enumerate(keys):
                if k is not None and k in hits:
                    answers[i] = CompletionResponse.from_json(hits[k])
            self.cache_hits += sum(a is not None for a in answers)
            if progress is not None and hits:
                progress(sum(a is not None for a in answers))

        todo = [i for i, a in enumerate(answers) if a is None]

        def on_done(idx: list[int], resps: list[CompletionResponse]) -> None:
            store = {}
            for j, resp in zip(idx, resps):
                i = todo[j]
                answers[i] = resp
                if keys[i] is not None:
                    store[keys[i]] = resp.to_json()
            if self.cache is not None:
                self.cache.put_many(store)
            if progress is not None:
                progress(len(idx))

        if todo:
            self._complete_many([flat[i] for i in todo], on_done)
        missing = [i for i in todo if answers[i] is None]
        if missing:  # a transport that forgot an answer is a bug, not a silent gap
            raise RuntimeError(f"{type(self).__name__} returned no answer for {len(missing)} prompts")

        grouped: list[list[CompletionResponse]] = [[] for _ in reqs]
        for (ri, _), a in zip(owner, answers):
            grouped[ri].append(a)  # type: ignore[arg-type]
        out = [self._merge(r, g) for r, g in zip(reqs, grouped)]
        return out[0] if single else out

    @staticmethod
    def _merge(req: CompletionRequest, parts: list[CompletionResponse]) -> CompletionResponse:
        if len(parts) == 1:
            return parts[0]
        n = req.n or 1
        choices: list[Choice] = []
        usage = Usage()
        for pi, part in enumerate(parts):
            for c in part.choices:
                choices.append(dataclasses.replace(c, index=pi * n + c.index))
            usage.prompt_tokens += part.usage.prompt_tokens
            usage.completion_tokens += part.usage.completion_tokens
            usage.total_tokens += part.usage.total_tokens
        return CompletionResponse(
            id=parts[0].id, model=parts[0].model, choices=choices, usage=usage, created=parts[0].created
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["cache"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.cache = resolve_cache(self._cache_arg)

