"""llama.cpp in-process: one model and context per file, decoded on a canonical schedule.

Built on llama-cpp-python's lower-level API (``llama_decode`` on a batch, then
``llama_get_logits_ith`` at the positions that matter), not on
``Llama.create_completion(logprobs=...)``: that one computes logits at every prompt
position and sorts the vocabulary in Python per token, about 9x slower for scoring.
llama.cpp's own messages go to the ``calibkit.llama_cpp`` logger at DEBUG.

>>> token_text(b" Paris"), token_text(b"\\xe2\\x82")
(' Paris', 'bytes:\\\\xe2\\\\x82')
>>> x, lse = log_softmax_at(np.zeros(4, dtype=np.float32))
>>> lse == math.log(4)
True
>>> from calibkit.backends.llamacpp import default_model_path
>>> eng = engine_for(EngineKey(str(default_model_path()), n_ctx=512, n_threads=4, n_batch=64))  # doctest: +SKIP
>>> with eng.lock:                                                                             # doctest: +SKIP
...     x, lse = log_softmax_at(eng.last_row(eng.tokenize("The capital of France is", add_bos=True)))
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import math
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ...api import InvalidRequestError

__all__ = ["Engine", "EngineKey", "engine_for", "log_softmax_at", "token_text"]

_LOG = logging.getLogger("calibkit.llama_cpp")
_log_callback: Any = None  # kept alive: llama.cpp holds a pointer to it

#: Called with (position, float32 logits row); the row is a view valid until the next decode.
OnRow = Callable[[int, np.ndarray], None]


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
        atexit.register(_close_devnull_files)
    return llama_cpp


def _close_devnull_files() -> None:
    """Close the two ``/dev/null`` files llama-cpp-python opens at import and never closes.

    Left open they end every script with ``ResourceWarning: unclosed file`` where
    warnings show (``-X dev``, pytest; llama-cpp-python issue #1828). They serve its
    ``suppress_stdout_stderr`` in ``Llama.__init__``, which nothing calls at exit.
    """
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        f = getattr(utils, name, None)
        if f is not None and hasattr(f, "close"):
            f.close()


def token_text(piece: bytes) -> str:
    """A token's string as servers send it; bytes that are not UTF-8 become ``bytes:\\x..``."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)


def log_softmax_at(logits: np.ndarray) -> tuple[np.ndarray, float]:
    """float64 logits and their log-sum-exp: ``x[t] - lse`` is log P(t)."""
    x = logits.astype(np.float64)
    m = float(x.max())
    return x, m + math.log(float(np.exp(x - m).sum()))


@dataclass(frozen=True)
class EngineKey:
    """What makes two engines differ: the GGUF file and the context's settings."""

    path: str
    n_ctx: int
    n_threads: int
    n_batch: int


class Engine:
    """One llama.cpp model and context, used by one thread at a time (``lock``).

    llama.cpp's numbers depend on how a sequence is cut into decode batches: the
    matrix kernels take other paths for other batch shapes, and with this quantized
    model a label's log-probability moves by up to 0.3 nats when the same prompt is
    decoded in two pieces instead of one. So every prompt is decoded on one canonical
    schedule: chunks of ``n_batch`` tokens aligned at position 0. A prompt that shares
    a prefix with the one in the cache reuses the whole chunks of that prefix; they
    hold exactly what a fresh decode would compute, so reuse never changes a score.
    Tokens after a prompt (a form's tokens, generated tokens) are one more chunk.

    For the same reason the logits after the last prompt asked of :meth:`last_row` are
    kept: asking that prompt again returns them without decoding, bit for bit what a
    fresh decode would give.
    """

    def __init__(self, key: EngineKey):
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
        self.evaluated_tokens = 0  # tokens decoded, for tests of prefix reuse
        self._pieces: dict[int, bytes] = {}
        self._prompt: tuple[int, ...] = ()  # the last prompt decoded, while the cache still holds it
        self._memo: tuple[tuple[int, ...], np.ndarray] | None = None  # (prompt ids, its last row)

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.L.llama_batch_free(self.batch)
            self.L.llama_free(self.ctx)
            self.L.llama_model_free(self.model)
        except Exception:
            pass

    # -- tokens ---------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        """Token ids of ``text``; with ``add_bos`` the BOS token first, where the model wants one."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (self.L.llama_token * cap)()
        n = self.L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos and self.add_bos, False)
        if n < 0:
            raise RuntimeError(f"llama_tokenize failed on a text of {len(data)} bytes")
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes of one token (see :func:`token_text` for its string)."""
        p = self._pieces.get(token)
        if p is None:
            buf = ctypes.create_string_buffer(256)
            n = self.L.llama_token_to_piece(self.vocab, token, buf, 256, 0, False)
            p = buf.raw[: max(n, 0)]
            self._pieces[token] = p
        return p

    def top(self, x: np.ndarray, lse: float, k: int) -> dict[str, float]:
        """The ``k`` most likely tokens of a float64 logits row ``x`` whose log-sum-exp is ``lse``.

        Token string -> log-probability, most likely first; two ids whose strings are
        equal count once, the more likely (so there may be fewer than ``k`` entries).
        """
        d: dict[str, float] = {}
        k = min(k, x.size)
        if k > 0:
            top = np.argpartition(x, -k)[-k:]
            for t in top[np.argsort(-x[top], kind="stable")]:
                d.setdefault(token_text(self.piece(int(t))), float(x[t] - lse))
        return d

    def is_end(self, token: int) -> bool:
        """True for an end-of-generation token."""
        return bool(self.L.llama_vocab_is_eog(self.vocab, token))

    # -- decoding -------------------------------------------------------------
    def check_len(self, n: int, what: str = "prompt") -> None:
        """Raise :class:`~calibkit.api.InvalidRequestError` if ``n`` tokens exceed the context."""
        if n > self.n_ctx:
            raise InvalidRequestError(
                f"the {what} is {n} tokens, longer than the model's context of {self.n_ctx}; "
                f"shorten it or load the model with a larger n_ctx",
                param="prompt",
            )

    def reset(self) -> None:
        """Empty the key/value cache (and forget the kept last row): the next prompt decodes afresh."""
        self.L.llama_memory_clear(self.memory, True)
        self.cached = []
        self.prompt_len = 0
        self._prompt = ()
        self._memo = None

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` tokens in the key/value cache."""
        if n < len(self.cached):
            self.L.llama_memory_seq_rm(self.memory, 0, n, -1)
            del self.cached[n:]
        self.prompt_len = min(self.prompt_len, n)
        if n < len(self._prompt):
            self._prompt = ()

    def _decode_chunk(self, tokens: Sequence[int], want: set[int], on_row: OnRow) -> None:
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

    def prompt(self, ids: Sequence[int], want: Sequence[int], on_row: OnRow) -> None:
        """Decode a prompt on the aligned schedule; ``on_row(p, logits)`` after each wanted position.

        ``logits`` is a float32 view, valid until the next decode: copy what you keep.
        """
        self.check_len(len(ids))
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
        self._prompt = tuple(ids)

    def extend(self, tokens: Sequence[int], want: Sequence[int], on_row: OnRow) -> None:
        """Decode ``tokens`` after what the cache holds, as one more chunk (or several if long)."""
        self.check_len(len(self.cached) + len(tokens), "prompt with its continuation")
        wanted = set(want)
        for s in range(0, len(tokens), self.n_batch):
            self._decode_chunk(tokens[s : s + self.n_batch], wanted, on_row)

    def extend_prompt(self, ids: Sequence[int], tokens: Sequence[int], want: Sequence[int], on_row: OnRow) -> None:
        """Decode ``tokens`` right after the prompt ``ids``, on top of the prompt's cached entries.

        The cache is cut back to the prompt when it holds it as last decoded, and the
        prompt is decoded (on the aligned schedule) when it does not.
        """
        n = len(ids)
        if self._prompt != tuple(ids) or len(self.cached) < n:
            self.prompt(ids, [n - 1], lambda p, r: None)
        self.truncate(n)
        self.extend(tokens, want, on_row)

    def last_row(self, ids: Sequence[int]) -> np.ndarray:
        """The logits after the whole prompt ``ids`` (float32, read-only; kept for the next call)."""
        key = tuple(ids)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        out: list[np.ndarray] = []
        self.prompt(ids, [len(ids) - 1], lambda p, r: out.append(r.copy()))
        row = out[0]
        row.setflags(write=False)
        self._memo = (key, row)
        return row


_ENGINES: dict[EngineKey, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(key: EngineKey) -> Engine:
    """The process's one :class:`Engine` for ``key``, loaded on first use.

    Copies, sklearn clones and unpickled models share it.
    """
    with _ENGINES_LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            eng = _ENGINES[key] = Engine(key)
        return eng
