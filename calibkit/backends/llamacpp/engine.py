"""llama.cpp in-process: one model and context per file, decoded on a canonical schedule.

Built on llama-cpp-python's lower-level API (``llama_decode`` on a batch, then
``llama_get_logits_ith`` at the positions that matter), not on
``Llama.create_completion(logprobs=...)``: that one computes logits at every prompt
position and sorts the vocabulary in Python per token, about 9x slower for scoring.
llama.cpp's own messages go to the ``calibkit.llama_cpp`` logger at DEBUG.

>>> x, lse = log_softmax_at(np.zeros(4, dtype=np.float32))
>>> lse == math.log(4)
True
>>> from calibkit.backends.llamacpp import default_model_path
>>> eng = engine_for(EngineKey(str(default_model_path()), n_ctx=512, n_threads=4, n_batch=32))  # doctest: +SKIP
>>> with eng.lock:                                                                             # doctest: +SKIP
...     x, lse = log_softmax_at(eng.last_row(eng.tokenize("The capital of France is", add_bos=True)))
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import math
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..context import check_context
from ..pieces import token_text

__all__ = [
    "Engine", "EngineKey", "check_n_batch", "engine_for", "log_softmax_at", "loads_as_the_engine", "model_params",
]

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


def model_params(L: Any) -> Any:
    """llama.cpp's default model parameters, less the repacking of weights: how every engine loads a model.

    llama.cpp repacks quantized weights into extra buffer types when the CPU has the
    instructions for them (AMX; interleaved blocks for AVX2 and AVX-512), and their
    kernels are other arithmetic: the same model would give other numbers on another
    machine. Where its AMX kernels are built in (an Intel CPU with AMX, built natively,
    as pip builds it), their matrix product also crashes the process on a batch of more
    than one token with this model's quantized layers (llama.cpp issue 20824). So the
    weights stay as the file holds them, on every CPU.
    """
    mp = L.llama_model_default_params()
    mp.use_extra_bufts = False
    return mp


@contextlib.contextmanager
def loads_as_the_engine() -> Iterator[None]:
    """Within it, a ``llama_cpp.Llama`` loads its model with :func:`model_params`, as an Engine does:
    the same weight layout, so the same arithmetic (and no AMX crash).

    >>> with loads_as_the_engine():                                            # doctest: +SKIP
    ...     llm = llama_cpp.Llama(path, flash_attn=True, logits_all=True)
    """
    L = _import_llama_cpp()
    module = sys.modules["llama_cpp.llama_cpp"]
    default = module.llama_model_default_params
    module.llama_model_default_params = lambda: model_params(L)
    try:
        yield
    finally:
        module.llama_model_default_params = default


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


#: Every decode holds a multiple of this many rows, and at least MIN_ROWS (see Engine).
ROW_MULTIPLE = 4
MIN_ROWS = 8
#: The largest rows per decode for which the schedule holds (a 64-row decode takes another path).
MAX_BATCH = 60
#: Forms scored side by side in one decode, each on its own sequence (more go in turns).
MAX_BRANCHES = 32


def check_n_batch(n_batch: int) -> None:
    """Raise ValueError unless ``n_batch`` is a multiple of 4 in [8, 60] (the padded schedule's range)."""
    if not (MIN_ROWS <= n_batch <= MAX_BATCH and n_batch % ROW_MULTIPLE == 0):
        raise ValueError(
            f"n_batch must be a multiple of {ROW_MULTIPLE} from {MIN_ROWS} to {MAX_BATCH} (got {n_batch!r}): "
            f"the embedded model decodes in padded batches of that shape so that a score never depends "
            f"on how its text was batched; leave n_batch at its default of 32 or pick another such value"
        )


class Engine:
    """One llama.cpp model and context, used by one thread at a time (``lock``).

    llama.cpp's numbers depend on the shape of a decode batch: its CPU kernels take one
    path for rows in whole groups of four and another for the rest, and yet another
    for large batches, so with this quantized model a label's log-probability moves by
    up to 0.3 nats when the same text is cut into batches otherwise. Within one shape
    class the result of a row depends only on its own token and what it attends to,
    not on its place in the batch or on the other rows. So every decode here is
    *padded*: its rows are brought to a multiple of four, and at least eight, with
    rows of a scratch sequence that nothing attends to, and never more than
    ``n_batch`` (at most 60) rows are real. That is the canonical schedule, and it
    makes a token's logits and key/value entries the same however the text around it
    was batched: a prompt reuses any cached prefix, token by token; every form's later
    tokens after a prompt are decoded together in one batch, each form on its own
    sequence branched off the prompt's entries, shared first tokens once (a token
    trie); and ``calibkit serve`` gives the same numbers for the same text. The engine
    checks the property once at load (:meth:`schedule_holds`) and warns where this
    build of llama.cpp breaks it.

    The logits after the last prompt asked of :meth:`last_row` are kept: asking that
    prompt again returns them without decoding.
    """

    def __init__(self, key: EngineKey):
        check_n_batch(key.n_batch)
        L = self.L = _import_llama_cpp()
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(key.path.encode(), model_params(L))
        if not self.model:
            raise ValueError(f"llama.cpp could not load the GGUF file {key.path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        self.n_batch = key.n_batch
        cp = L.llama_context_default_params()
        cp.n_ctx = key.n_ctx + key.n_batch  # room for a decode's pad rows beyond the context asked for
        cp.n_batch = cp.n_ubatch = key.n_batch
        cp.n_seq_max = MAX_BRANCHES + 2  # 0: the prompt; 1..MAX_BRANCHES: forms; the last: pad rows
        cp.kv_unified = True  # branches share the prompt's cells instead of copying them
        cp.n_outputs_max = max(key.n_batch, cp.n_seq_max)
        cp.n_threads = cp.n_threads_batch = key.n_threads
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.n_ctx = key.n_ctx
        self.memory = L.llama_get_memory(self.ctx)
        self.pad_seq = MAX_BRANCHES + 1
        self.batch = L.llama_batch_init(key.n_batch, 0, cp.n_seq_max)
        self.bos = int(L.llama_vocab_bos(self.vocab))
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        self.cached: list[int] = []  # tokens in sequence 0 of the key/value cache
        self.lock = threading.RLock()
        self.evaluated_tokens = 0  # real tokens decoded (pad rows not counted), for tests of reuse
        self.decodes = 0  # llama_decode calls
        self._pieces: dict[int, bytes] = {}
        self._memo: tuple[tuple[int, ...], np.ndarray] | None = None  # (prompt ids, its last row)
        self.schedule_ok = self.schedule_holds()
        if not self.schedule_ok:
            _LOG.warning(
                "this build of llama.cpp computes a row differently depending on how its text is batched, "
                "even in padded batches: scores of one text may differ slightly between a fresh decode and "
                "one that reuses a cached prefix, and between the library and calibkit serve"
            )

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
        """Raise :class:`~calibkit.api.InvalidRequestError` if ``n`` tokens exceed the context.

        (:func:`~calibkit.backends.context.check_context`, the one rule of both engines.)
        """
        check_context(n, self.n_ctx, what)

    def reset(self) -> None:
        """Empty the key/value cache (and forget the kept last row): the next prompt decodes afresh."""
        self.L.llama_memory_clear(self.memory, True)
        self.cached = []
        self._memo = None

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` tokens of sequence 0 in the key/value cache."""
        if n < len(self.cached):
            self.L.llama_memory_seq_rm(self.memory, 0, n, -1)
            del self.cached[n:]

    def _decode(self, rows: Sequence[tuple[int, int, Sequence[int], bool]]) -> list[np.ndarray | None]:
        """Decode ``rows`` of (token, position, sequence ids, want logits), padded to the canonical shape.

        Returns, per row, its float32 logits (a view valid until the next decode) or None.
        """
        n = len(rows)
        size = max(MIN_ROWS, -(-n // ROW_MULTIPLE) * ROW_MULTIPLE)
        b = self.batch
        b.n_tokens = size
        for i, (t, p, seqs, want) in enumerate(rows):
            b.token[i] = t
            b.pos[i] = p
            b.n_seq_id[i] = len(seqs)
            for j, s in enumerate(seqs):
                b.seq_id[i][j] = s
            b.logits[i] = want
        for i in range(n, size):  # pad rows: a sequence of their own, removed below
            b.token[i] = self.bos
            b.pos[i] = i - n
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = self.pad_seq
            b.logits[i] = False
        rc = self.L.llama_decode(self.ctx, b)
        if size > n:
            self.L.llama_memory_seq_rm(self.memory, self.pad_seq, -1, -1)
        if rc != 0:
            self.reset()
            raise RuntimeError(f"llama_decode returned {rc}")
        self.evaluated_tokens += n
        self.decodes += 1
        return [
            np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,)) if want else None
            for i, (_, _, _, want) in enumerate(rows)
        ]

    def _decode_main(self, tokens: Sequence[int], want: set[int], on_row: OnRow) -> None:
        """Decode ``tokens`` after what sequence 0 holds, ``n_batch`` at a time."""
        for s in range(0, len(tokens), self.n_batch):
            start = len(self.cached)
            chunk = tokens[s : s + self.n_batch]
            out = self._decode([(t, start + i, (0,), (start + i) in want) for i, t in enumerate(chunk)])
            self.cached.extend(chunk)
            for i, row in enumerate(out):
                if row is not None:
                    on_row(start + i, row)

    def _cached_prefix(self, ids: Sequence[int]) -> int:
        """How many leading tokens of ``ids`` sequence 0 of the cache holds."""
        n = 0
        for a, b in zip(self.cached, ids):
            if a != b:
                break
            n += 1
        return n

    def prompt(self, ids: Sequence[int], want: Sequence[int], on_row: OnRow) -> None:
        """Decode a prompt; ``on_row(p, logits)`` after each wanted position.

        The longest cached prefix that holds no wanted position is reused, token by
        token (the padded schedule makes it what a fresh decode would compute).
        ``logits`` is a float32 view, valid until the next decode: copy what you keep.
        """
        self.check_len(len(ids))
        wanted = set(want)
        if not wanted or min(wanted) < 0 or max(wanted) >= len(ids):
            raise ValueError(f"wanted positions must lie in 0..{len(ids) - 1}")
        keep = min(self._cached_prefix(ids), min(wanted))
        self.truncate(keep)
        self._decode_main(ids[keep:], wanted, on_row)

    def extend(self, tokens: Sequence[int], want: Sequence[int], on_row: OnRow) -> None:
        """Decode ``tokens`` after what sequence 0 holds (generation: one token at a time)."""
        self.check_len(len(self.cached) + len(tokens), "prompt with its continuation")
        self._decode_main(tokens, set(want), on_row)

    def branches(self, ids: Sequence[int], tails: Sequence[Sequence[int]],
                 on_row: Callable[[int, int, np.ndarray], None]) -> np.ndarray:
        """Decode each of ``tails`` right after the prompt ``ids``, side by side; return the prompt's last row.

        ``on_row(i, j, logits)`` after ``tails[i][j]``: the distribution of the token that
        follows it. The tails form a token trie: a token shared by several tails at the
        same place is decoded once, on all their sequences. Each tail gets a sequence of
        its own that shares the prompt's entries; what of the prompt is not cached is
        decoded in the same batches as the tails' tokens (its tokens on every sequence).
        The branches are removed afterwards. The returned row is :meth:`last_row`'s.
        """
        P = len(ids)
        todo = [i for i, t in enumerate(tails) if t]
        if not todo:
            return self.last_row(ids)
        key = tuple(ids)
        held = self._cached_prefix(ids) == P
        last = self._memo[1] if held and self._memo is not None and self._memo[0] == key else None
        for g in range(0, len(todo), MAX_BRANCHES):
            group = todo[g : g + MAX_BRANCHES]
            # trie nodes: prefix -> the tails through it; parents before children
            nodes: dict[tuple[int, ...], list[int]] = {}
            for i in group:
                for j in range(len(tails[i])):
                    nodes.setdefault(tuple(tails[i][: j + 1]), []).append(i)
            order = sorted(nodes, key=lambda pre: (len(pre), pre))
            self.check_len(P + len(order), "prompt with its forms' tokens side by side")
            seqs = [1 + k for k in range(len(group))]
            seq_of = dict(zip(group, seqs))
            rows: list[tuple[int, int, Sequence[int], bool]] = []
            if last is None:  # the prompt's uncached tokens go first, on sequence 0 and every branch
                keep = min(self._cached_prefix(ids), P - 1)
                self.truncate(keep)
                rows = [(ids[p], p, [0, *seqs], p == P - 1) for p in range(keep, P)]
            else:
                keep = P
            for s in seqs:
                self.L.llama_memory_seq_cp(self.memory, 0, s, 0, keep)
            rows += [(pre[-1], P + len(pre) - 1, [seq_of[i] for i in nodes[pre]], True) for pre in order]
            n_prompt = P - keep
            try:
                for s in range(0, len(rows), self.n_batch):
                    out = self._decode(rows[s : s + self.n_batch])
                    for r, row in zip(range(s, s + len(out)), out):
                        if r < n_prompt:
                            self.cached.append(ids[keep + r])
                            if row is not None:
                                last = self._keep_last(key, row)
                        else:
                            pre = order[r - n_prompt]
                            for i in nodes[pre]:
                                on_row(i, len(pre) - 1, row)  # type: ignore[arg-type]
            finally:
                for s in seqs:
                    self.L.llama_memory_seq_rm(self.memory, s, -1, -1)
        assert last is not None
        return last

    def last_row(self, ids: Sequence[int]) -> np.ndarray:
        """The logits after the whole prompt ``ids`` (float32, read-only; kept for the next call)."""
        key = tuple(ids)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        out: list[np.ndarray] = []
        self.prompt(ids, [len(ids) - 1], lambda p, r: out.append(self._keep_last(key, r)))
        return out[0]

    def _keep_last(self, key: tuple[int, ...], row: np.ndarray) -> np.ndarray:
        """A read-only copy of ``row``, kept as the last row of the prompt ``key``."""
        kept = row.copy()
        kept.setflags(write=False)
        self._memo = (key, kept)
        return kept

    def schedule_holds(self) -> bool:
        """Check the padded schedule on a probe text: decoded whole, in uneven pieces, and as branches.

        True when every way gives the same logits, bit for bit. Leaves the cache empty.
        """
        ids = self.tokenize("The quick brown fox jumps over the lazy dog, and the cat watches it from the "
                            "window of the old house by the river.", True)
        whole: list[np.ndarray] = []
        self.reset()
        self._decode_main(ids, set(range(len(ids))), lambda p, r: whole.append(r.copy()))
        pieces: list[np.ndarray] = []
        self.reset()
        for a, b in ((0, 3), (3, 17), (17, len(ids))):
            self._decode_main(ids[a:b], set(range(a, b)), lambda p, r: pieces.append(r.copy()))
        branched: list[np.ndarray] = []
        self.reset()
        cut = len(ids) - 3
        self.prompt(ids[:cut], [cut - 1], lambda p, r: None)
        self.branches(ids[:cut], [ids[cut:cut + 1], ids[cut:], ids[cut:cut + 2]],
                      lambda i, j, r: branched.append(r.copy()) if i == 1 else None)
        self.reset()
        return all(np.array_equal(a, b) for a, b in zip(whole, pieces)) and all(
            np.array_equal(a, b) for a, b in zip(whole[cut:], branched))


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
