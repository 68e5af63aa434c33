"""Answering completions requests with a local model, as ``calibkit serve`` does.

Two backends are served the same way: the embedded llama.cpp model (a
:class:`~calibkit.LocalModel`, ``calibkit serve --backend local``, the default) and a
transformers model (a :class:`~calibkit.TransformersModel`, ``--backend hf``). Both offer
the same small decode interface (:class:`DecodeEngine`: one token sequence with a kept
key/value cache), the llama.cpp :class:`~calibkit.backends.llamacpp.engine.Engine` itself
and the transformers Engine's :class:`~calibkit.backends.transformers.engine.Decoder`, and
this module answers from it, not knowing which it is.

Echo with per-token logprobs, ``logprobs`` top-k (no cap here; the server's own limit
applies) with the sampled token as a (k+1)-th entry when it is not among the top k,
``prompt_logprobs``, sampling (seeded), ``n``/``best_of``, stop sequences and usage.

>>> from calibkit import LocalModel, TransformersModel
>>> from calibkit.api import CompletionRequest
>>> gen = LocalCompletions(LocalModel(cache=False))
>>> r = gen.complete(CompletionRequest(model=gen.name, prompt="The capital of France is",
...                                    max_tokens=1, logprobs=5, temperature=0))   # doctest: +SKIP
>>> r.choices[0].logprobs.top_logprobs[0]                                       # doctest: +SKIP
{' the': -1.54..., ' a': -2.06..., ' Paris': -2.52..., ...}
>>> hf = LocalCompletions(TransformersModel(cache=False), n_ctx=2048)           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from ..api import Choice, CompletionRequest, CompletionResponse, Logprobs, Usage
from ..backends.llamacpp.engine import log_softmax_at
from ..backends.llamacpp.sampler import Sampler
from ..backends.pieces import token_text
from .engine import Cancelled
from .prefix import PositionMemo

__all__ = ["DecodeEngine", "LocalCompletions"]


class DecodeEngine(Protocol):
    """What :class:`LocalCompletions` generates with: one token sequence with a kept key/value cache.

    ``on_row(p, row)`` gets position ``p``'s next-token logits over the vocabulary (any
    float vector whose log-softmax is the distribution; copy what you keep).
    """

    lock: Any
    bos: int
    cached: list[int]

    def tokenize(self, text: str, add_bos: bool) -> list[int]: ...
    def piece(self, token: int) -> bytes: ...
    def top(self, x: np.ndarray, lse: float, k: int) -> dict[str, float]: ...
    def is_end(self, token: int) -> bool: ...
    def check_len(self, n: int, what: str = "prompt") -> None: ...
    def prompt(self, ids: Sequence[int], want: Sequence[int], on_row: Callable[[int, np.ndarray], None]) -> None: ...
    def extend(self, tokens: Sequence[int], want: Sequence[int],
               on_row: Callable[[int, np.ndarray], None]) -> None: ...
    def truncate(self, n: int) -> None: ...


@dataclass
class _Sample:
    text: str
    tokens: list[str]
    logprobs: list[float | None]
    tops: list[dict[str, float] | None]
    offsets: list[int]
    finish_reason: str
    n_tokens: int
    sum_logprob: float


class LocalCompletions:
    """A :class:`~calibkit.LocalModel` or a :class:`~calibkit.TransformersModel` behind the completions protocol.

    ``complete(req)`` answers a :class:`~calibkit.api.CompletionRequest` (one choice per
    prompt, times ``n``) as the ACS API would; ``name`` is the model reported in responses.
    ``memo`` keeps echoed positions' answers for texts that share a prefix (prefix caching).
    ``n_ctx``: the context, in tokens, of a model whose engine hands out a decoder
    (transformers; None: the model's own length); a LocalModel has its own.
    """

    def __init__(self, model: Any, memo: PositionMemo | None = None, *, n_ctx: int | None = None):
        self.model = model
        self.memo = memo if memo is not None else PositionMemo()
        self._n_ctx = n_ctx

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def weights(self) -> dict[str, str]:
        """Which weights answer, as ``GET /v1/models`` lists them: ``backend`` ("llama.cpp" or
        "transformers") and ``weights`` (the GGUF file's name, the checkpoint folder's, or the
        hub name), known without loading the model.

        >>> LocalCompletions(LocalModel(cache=False)).weights                  # doctest: +SKIP
        {'backend': 'llama.cpp', 'weights': 'gemma-3-270m-q4_k_m.gguf'}
        """
        ident = self.model.identity
        return {"backend": str(ident["backend"]),
                "weights": str(ident.get("file") or ident.get("source") or self.name)}

    @property
    def engine(self) -> DecodeEngine:
        """The decode interface requests run on: the llama.cpp Engine itself, or the
        :meth:`~calibkit.backends.transformers.engine.Engine.decoder` of a transformers one."""
        eng = self.model.engine
        decoder = getattr(eng, "decoder", None)
        if decoder is None:
            return eng
        return decoder(self._n_ctx if self._n_ctx is not None else getattr(self.model, "n_ctx", None))

    @property
    def n_ctx(self) -> int:
        n = getattr(self.model, "n_ctx", None)
        if n is not None and self._n_ctx is None:
            return n
        return self.engine.n_ctx  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"LocalCompletions({self.model!r})"

    def complete(self, req: CompletionRequest, cancel: threading.Event | None = None) -> CompletionResponse:
        """Answer ``req``; a list of prompts gets its choices routed back by index (prompt * n + j).

        ``cancel``: polled before each prompt, each sample and each generated token; once
        it is set, generation stops there and :class:`~calibkit.server.engine.Cancelled`
        is raised (the server sets it when the request's client has left).

        >>> gen.complete(req, cancel=threading.Event())   # doctest: +SKIP
        """
        req.validate()
        eng = self.engine
        parts = []
        for prompt in req.prompts:
            _check(cancel)
            with eng.lock:
                parts.append(self._complete_one(eng, dataclasses.replace(req, prompt=prompt), cancel))
        return CompletionResponse.merge(parts, req.n or 1)

    def _complete_one(self, eng: DecodeEngine, req: CompletionRequest,
                      cancel: threading.Event | None = None) -> CompletionResponse:
        prompt = req.prompts[0]
        ids = eng.tokenize(prompt, True)
        P = len(ids)
        max_tokens = 16 if req.max_tokens is None else req.max_tokens
        eng.check_len(P + max_tokens, "prompt with max_tokens")
        k = req.logprobs
        want_echo = req.echo and k is not None
        pk = req.prompt_logprobs

        def top_of(x: np.ndarray, lse: float, kk: int, also: int) -> dict[str, float]:
            d = eng.top(x, lse, kk)
            # The chosen token joins the list when it is not among the top k (k+1 entries).
            d.setdefault(token_text(eng.piece(also)), float(x[also] - lse))
            return d

        # Prompt positions: the logprob of each prompt token given what precedes it, and its
        # top-k, from the prefix cache where another text with the same tokens up to it asked.
        questions = ([("echo", k)] if want_echo else []) + ([("prompt_logprobs", pk)] if pk is not None else [])
        # keys[p]: position p, whose next token is ids[p + 1]; hashed only where a position is asked about
        keys = self.memo.keys(ids) if questions else []
        found: dict[tuple[int, tuple[str, int | None]], tuple[float, dict[str, float] | None]] = {}
        want: set[int] = {P - 1} if max_tokens > 0 else set()
        for p, key in enumerate(keys):
            for q in questions:
                answer = self.memo.get(key, q)
                if answer is None:
                    want.add(p)
                else:
                    found[(p, q)] = answer
        first_row: list[np.ndarray] = []

        def on_prompt_row(p: int, row: np.ndarray) -> None:
            if p == P - 1:
                first_row.append(row.astype(np.float64))
            elif questions:
                x, lse = log_softmax_at(row)
                nxt = ids[p + 1]
                for q in questions:
                    found[(p, q)] = answer = (float(x[nxt] - lse), top_of(x, lse, q[1] or 0, nxt))
                    self.memo.put(keys[p], q, answer)

        if want:
            eng.prompt(ids, sorted(want), on_prompt_row)
        prompt_row = first_row[0] if first_row else np.zeros(0)  # not read when max_tokens is 0
        echo_lp: list[float | None] = [None] + [found[(p, ("echo", k))][0] if want_echo else None for p in range(P - 1)]
        echo_top: list[dict[str, float] | None] = [None] + [
            found[(p, ("echo", k))][1] if want_echo else None for p in range(P - 1)]
        plp: list[dict[str, float] | None] | None = None
        if pk is not None:
            plp = [None] + [found[(p, ("prompt_logprobs", pk))][1] for p in range(P - 1)]

        n = req.n or 1
        best_of = max(req.best_of or n, n)
        stops = () if req.stop is None else ((req.stop,) if isinstance(req.stop, str) else tuple(req.stop))
        samples = []
        for s in range(best_of):
            seed = None if req.seed is None else req.seed + s
            samples.append(
                _generate(eng, req, ids, prompt_row, max_tokens, stops, Sampler(req, seed), top_of, cancel)
            )
        if best_of > n:  # best_of: the n samples of highest total log-probability
            samples = sorted(samples, key=lambda smp: -smp.sum_logprob)[:n]

        prompt_tokens = [token_text(eng.piece(t)) if t != eng.bos else "" for t in ids]
        prompt_text_offsets = _offsets([eng.piece(t) if t != eng.bos else b"" for t in ids])
        choices = []
        completion_tokens = 0
        for j, smp in enumerate(samples):
            completion_tokens += smp.n_tokens
            if req.echo:
                text = prompt + smp.text
                toks = prompt_tokens + smp.tokens
                lps = echo_lp + smp.logprobs
                tops = echo_top + smp.tops
                offs = prompt_text_offsets + [len(prompt) + o for o in smp.offsets]
            else:
                text, toks, lps, tops, offs = smp.text, smp.tokens, smp.logprobs, smp.tops, smp.offsets
            logprobs = None
            if k is not None:
                logprobs = Logprobs(tokens=toks, token_logprobs=lps, top_logprobs=tops, text_offset=offs)
            choices.append(
                Choice(index=j, text=text, logprobs=logprobs, finish_reason=smp.finish_reason, prompt_logprobs=plp)
            )
        return CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex[:16]}",
            model=self.name,
            choices=choices,
            usage=Usage(P, completion_tokens, P + completion_tokens),
            created=int(time.time()),
        )


def _generate(
    eng: DecodeEngine,
    req: CompletionRequest,
    ids: list[int],
    prompt_row: np.ndarray,
    max_tokens: int,
    stops: tuple[str, ...],
    sampler: Sampler,
    top_of: Callable[[np.ndarray, float, int, int], dict[str, float]],
    cancel: threading.Event | None = None,
) -> _Sample:
    """One sample after the prompt ``ids`` (whose last row is ``prompt_row``), token by token;
    raises Cancelled before the next token once ``cancel`` is set."""
    k = req.logprobs
    row = prompt_row
    seq = list(ids)
    gen: list[int] = []
    pieces: list[bytes] = []
    lps: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    finish = "length"
    total = 0.0
    eng.truncate(len(ids))  # every sample starts from the prompt
    rows: list[np.ndarray] = []
    for step in range(max_tokens):
        _check(cancel, step)
        if step > 0:
            rows.clear()
            eng.extend([gen[-1]], [len(eng.cached)], lambda p, r: rows.append(r.astype(np.float64)))
            row = rows[0]
        x, lse = log_softmax_at(row)
        t = sampler.pick(x, seq, gen)
        if eng.is_end(t):
            finish = "stop"
            if k is not None:  # the end of the text won: its logprob and top-k are the answer asked for
                pieces.append(b"")  # no text, so the completion's text is unchanged
                lps.append(float(x[t] - lse))
                tops.append(top_of(x, lse, k, t))
            break
        lp = float(x[t] - lse)
        total += lp
        gen.append(t)
        seq.append(t)
        pieces.append(eng.piece(t))
        lps.append(lp)
        tops.append(top_of(x, lse, k, t) if k is not None else None)
        if stops:
            text = b"".join(pieces).decode("utf-8", errors="replace")
            cut = min((text.find(s) for s in stops if s in text), default=-1)
            if cut >= 0:
                offsets = _offsets(pieces)
                keep = sum(1 for o in offsets if o < cut)
                return _Sample(
                    text=text[:cut],
                    tokens=[token_text(p) for p in pieces[:keep]],
                    logprobs=lps[:keep],
                    tops=tops[:keep],
                    offsets=offsets[:keep],
                    finish_reason="stop",
                    n_tokens=len(gen),
                    sum_logprob=total,
                )
    return _Sample(
        text=b"".join(pieces).decode("utf-8", errors="replace"),
        tokens=[token_text(p) for p in pieces],
        logprobs=lps,
        tops=tops,
        offsets=_offsets(pieces),
        finish_reason=finish,
        n_tokens=len(gen),
        sum_logprob=total,
    )


def _check(cancel: threading.Event | None, step: int = 0) -> None:
    """Raise Cancelled when ``cancel`` is set (``step``: tokens generated so far, for the message)."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"generation stopped after {step} token(s) of a sample: the request was abandoned")


def _offsets(pieces: Sequence[bytes]) -> list[int]:
    """Character offset at which each token's text starts, in the decoded concatenation.

    Counted in characters, as OpenAI's and vLLM's servers count ``text_offset``: a token that
    starts inside a character (a byte token, or a byte-level BPE token cut mid-character)
    starts where that character does, so no offset lies past the end of the text.

    >>> _offsets([b" \\xe5", b"\\xa5", b"\\xbd", b" bad"])    # " 好 bad": 好 is three bytes
    [0, 1, 1, 2]
    """
    out = []
    acc = b""
    for p in pieces:
        out.append(len(acc.decode("utf-8", errors="ignore")))
        acc += p
    return out
