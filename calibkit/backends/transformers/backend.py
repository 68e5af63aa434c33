"""The Hugging Face backend: a causal language model run by transformers, answering the seam's two questions natively.

Like the embedded model it sees the whole vocabulary (no top-k cap) and scores whole
multi-token continuations; unlike it, it runs on a GPU where there is one and loads any
checkpoint transformers loads: a local folder, a hub name (where there is a network),
or a GGUF file (dequantized by transformers' ``gguf_file=`` support).

How a batch is computed (all in one place, :class:`TransformersModel`):

1. the prompts' longest common token prefix (the BOS token, a few-shot block) is run
   once, and kept for the next batch that starts with it;
2. every prompt's remaining tokens are run side by side after it, padded on the
   ``padding_side``, with the attention mask and position ids that make a padded row
   compute what it computes alone; the next-token distribution at each prompt's last
   token answers the top-k question and gives each form's first token;
3. the later tokens of the forms of several tokens are run after their prompt's
   key/value cache, one row per form, so a prompt is never run twice.

>>> import calibkit as ck
>>> model = ck.TransformersModel(cache=False)             # gemma-3-270m, float32, from the bundled GGUF
>>> model.continuation_logprobs([("The capital of France is", " Paris")])  # doctest: +SKIP
[Continuation(tokens=(' Paris',), logprobs=(-2.4...,))]
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...cache import ResponseCache
from ..base import Continuation, Keep, SharedOnCopy, TopK, VocabularyBackend, check_int
from .checkpoint import import_torch_transformers
from .engine import Engine, LoadKey, OutOfMemory, common_prefix, cut_cache, engine_for

__all__ = ["TransformersModel"]

_PADDING_SIDES = ("right", "left")
_DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")


class TransformersModel(SharedOnCopy, VocabularyBackend):
    """A causal language model run by transformers; google/gemma-3-270m in float32 from the bundled GGUF by default.

    Parameters
    ----------
    name_or_path : a checkpoint folder, a ``.gguf`` file, or a hub name (downloaded by
        transformers where there is a network); None: the bundled gemma-3-270m GGUF,
        dequantized to float32 (the same weights as :class:`~calibkit.LocalModel`'s).
        A GGUF is converted once and kept in calibkit's cache folder
        (:func:`converted_gguf_folder`): the first load takes a minute or two, later
        ones seconds.
    device : ``"auto"`` (CUDA where there is a GPU, else the CPU), or a torch device
        such as ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    dtype : ``"float32"``, ``"bfloat16"``, ``"float16"``, ``"float64"``, a torch dtype,
        or None/``"auto"``: the checkpoint's own (float32 for a GGUF).
    name : the model's name in cache keys (default: the folder's or file's, or the hub name).
    padding_side : where a batch pads its shorter rows, ``"right"`` or ``"left"``; either
        way each row's attention mask and position ids make it compute what it would
        alone.
    max_batch_tokens : tokens in one forward pass (rows times the longest row); None:
        chosen for the memory at hand, halved when a batch runs out of memory. A
        number is kept as given: a batch that does not fit is an error that says so.
    trust_remote_code : passed to transformers for checkpoints that ship their own code.
    cache : a :class:`~calibkit.cache.ResponseCache`, a path, True/None for the
        default file, False for none.
    progress : the bar of assembling the bundled GGUF (:func:`calibkit.progress.progress_bar`'s
        rule). The one-time GGUF conversion says what it does, and each part as it starts,
        on the ``calibkit.steps`` logger (:func:`calibkit.progress.say`), which the command
        line prints.

    The model loads on first use, once per process and settings: copies, sklearn
    clones and unpickled objects share it, and pickling one sends only its recipe.

    >>> import calibkit as ck
    >>> m = ck.TransformersModel(cache=False)
    >>> m.tokenize(" positive")                                  # doctest: +SKIP
    [' positive']
    """

    logprobs_cap = None
    exact_is_cheap = True
    # questions per call: wide enough to fill a GPU's forward pass, each call cached as it finishes
    batch_size = 64

    def __init__(
        self,
        name_or_path: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        dtype: Any = None,
        name: str | None = None,
        padding_side: str = "right",
        max_batch_tokens: int | None = None,
        trust_remote_code: bool = False,
        cache: ResponseCache | str | bool | None = None,
        progress: bool | None = None,
    ):
        if padding_side not in _PADDING_SIDES:
            raise ValueError(f"padding_side must be 'right' or 'left' (got {padding_side!r})")
        if max_batch_tokens is not None:
            check_int("max_batch_tokens", max_batch_tokens, 1)
        dtype_name = _dtype_name(dtype)
        if not isinstance(device, str) or not device:
            raise ValueError(f"device must be 'auto' or a torch device string such as 'cpu' or 'cuda:0' (got {device!r})")
        if name_or_path is None:
            from ..llamacpp.gguf import DEFAULT_MODEL_NAME, default_model_path

            source, default_name = str(default_model_path(progress=progress).resolve()), DEFAULT_MODEL_NAME
        else:
            source = os.fspath(name_or_path)
            p = Path(source).expanduser()
            if p.exists():
                source = str(p.resolve())
                default_name = p.stem if p.is_file() else p.name
            elif source.endswith(".gguf") or source.startswith((".", "/", "~")):
                raise FileNotFoundError(
                    f"name_or_path {source!r} does not exist; give a checkpoint folder, a .gguf file or a hub name"
                )
            else:
                default_name = source
        super().__init__(cache=cache)
        self.source = source
        self.name = name or default_name
        self.device = device
        self.dtype = dtype_name
        self.padding_side = padding_side
        self.max_batch_tokens = max_batch_tokens
        self.trust_remote_code = trust_remote_code
        self.progress = progress
        self._tokens_budget: int | None = None

    # -- the loaded model ------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The model and tokenizer this object uses (loaded on first use, one per process and settings)."""
        device = self.device
        if device == "auto":
            torch, _ = import_torch_transformers()
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return engine_for(LoadKey(self.source, device, self._dtype, self.trust_remote_code))

    @property
    def _dtype(self) -> str:
        """The dtype asked for; a GGUF's own is float32 (transformers dequantizes it)."""
        return "float32" if self.dtype == "auto" and self.source.endswith(".gguf") else self.dtype

    @property
    def identity(self) -> dict[str, Any]:
        # Known without loading the model (a Ray driver keys its cache on it): the device is
        # left out, as CPU and GPU kernels differ only in the last digits, as batches do.
        return {
            "backend": "transformers",
            "model": self.name,
            "source": os.path.basename(self.source) if os.path.exists(self.source) else self.source,
            "dtype": self._dtype,
        }

    def __repr__(self) -> str:
        return f"TransformersModel({self.source!r}, name={self.name!r}, device={self.device!r}, dtype={self.dtype!r})"

    # -- tokens -------------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return self.engine.n_vocab

    def token_ids(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of ``text``; with ``add_bos`` the tokenizer's special tokens (BOS) come first, as for a prompt."""
        return self.engine.tokenize(text, add_bos)

    def tokenize(self, text: str) -> list[str]:
        """The token strings of ``text`` (no BOS)."""
        lm = self.engine
        return [lm.piece(t) for t in lm.tokenize(text, False)]

    def token_text(self, token_id: int) -> str:
        """The string of one token id."""
        return self.engine.piece(int(token_id))

    def next_token_logprobs(self, prompt: str) -> np.ndarray:
        """The exact next-token distribution after ``prompt``: log-softmax over the whole vocabulary (float64)."""
        lm = self.engine
        with lm.lock:
            return self._prompts(lm, [lm.tokenize(prompt, True)])[0][0]

    def top_tokens(self, prompt: str, k: int = 20) -> list[tuple[str, float]]:
        """The ``k`` most likely next tokens after ``prompt``, most likely first (:meth:`top_k` for one prompt)."""
        return list(self.top_k([prompt], k)[0].items())

    # -- the two questions ------------------------------------------------------------
    def _answer_top_k(self, prompts: list[str], k: int, *, keep: Keep | None = None) -> list[TopK]:
        lm = self.engine
        with lm.lock:
            rows, _ = self._prompts(lm, [lm.tokenize(p, True) for p in prompts])
            return [lm.top(r, k) for r in rows]

    def _answer_continuations(self, pairs: list[tuple[str, str]], *,
                              keep: Keep | None = None) -> list[Continuation | None]:
        lm = self.engine
        groups = [(p, [c for _, c in g]) for p, g in itertools.groupby(pairs, key=lambda pc: pc[0])]
        with lm.lock:
            ids = [lm.tokenize(p, True) for p, _ in groups]
            # The seam rule (Backend.continuation_logprobs): prompt + continuation must tokenize as the
            # prompt's own tokens followed by tokens that cover the continuation; those are scored.
            forms: list[list[list[int] | None]] = []
            after: list[int] = []
            for (prompt, conts), pid in zip(groups, ids):
                fs = []
                for c in conts:
                    full = lm.tokenize(prompt + c, True)
                    fs.append(full[len(pid):] if len(full) > len(pid) and full[: len(pid)] == pid else None)
                forms.append(fs)
                after.append(max((len(f) - 1 for f in fs if f is not None), default=0))
                lm.check_len(len(pid) + after[-1], "prompt with its longest continuation")
            rows, state = self._prompts(lm, ids, after)
            later = self._later(lm, ids, forms, state)
        out: list[Continuation | None] = []
        for g, (row, fs) in enumerate(zip(rows, forms)):
            for j, f in enumerate(fs):
                if f is None:
                    out.append(None)
                    continue
                lps = (float(row[f[0]]), *later.get((g, j), ()))
                out.append(Continuation(tuple(lm.piece(t) for t in f), lps))
        return out

    # -- batching ------------------------------------------------------------------------
    def _prompts(self, lm: Engine, ids: list[list[int]], after: Sequence[int] | None = None
                 ) -> tuple[list[np.ndarray], list[tuple[Any, Any, int]]]:
        """Each prompt's next-token log-probabilities, and per prompt (cache, mask, row) to continue it from.

        ``after[i]``: tokens that will follow prompt ``i`` on its cache (its longest form's).
        """
        for i in ids:
            lm.check_len(len(i), "prompt")
        rows: list[np.ndarray] = [np.empty(0)] * len(ids)
        state: list[tuple[Any, Any, int]] = [(None, None, 0)] * len(ids)

        def run(batch: list[int]) -> None:
            group = [ids[i] for i in batch]
            L = common_prefix(group)
            past, past_mask = self._prefix(lm, tuple(group[0][:L]))
            n = len(group)
            if past is not None:
                past = copy.deepcopy(past)
                past.batch_repeat_interleave(n)
                past_mask = past_mask.repeat(n, 1)
            got, cache, mask = self._run(
                lm, [g[L:] for g in group], past, past_mask, [L] * n, [[len(g) - L - 1] for g in group])
            for b, i in enumerate(batch):
                rows[i] = got[b][0]
                state[i] = (cache, mask, b)

        self._each_batch(lm, [len(i) + (after[n] if after else 0) for n, i in enumerate(ids)], run)
        return rows, state

    def _later(self, lm: Engine, ids: list[list[int]], forms: list[list[list[int] | None]],
               state: list[tuple[Any, Any, int]]) -> dict[tuple[int, int], list[float]]:
        """The log-probabilities of every form's tokens after its first, each form a row after its prompt's cache."""
        todo = [(g, j) for g, fs in enumerate(forms) for j, f in enumerate(fs) if f is not None and len(f) > 1]
        out: dict[tuple[int, int], list[float]] = {}
        torch = lm.torch

        def run(items: list[tuple[int, int]], batch: list[int]) -> None:
            chosen = [items[i] for i in batch]
            cache, mask, _ = state[chosen[0][0]]
            sel = torch.tensor([state[g][2] for g, _ in chosen], dtype=torch.long)
            past = copy.copy(cache)
            past.layers = [copy.copy(layer) for layer in cache.layers]
            past.batch_select_indices(sel.to(lm.device))
            tails = [forms[g][j][:-1] for g, j in chosen]  # type: ignore[index]
            got, _, _ = self._run(lm, tails, past, mask[sel], [len(ids[g]) for g, _ in chosen],
                                  [list(range(len(t))) for t in tails], padding_side="right")
            for (g, j), rows in zip(chosen, got):
                out[(g, j)] = [float(r[t]) for r, t in zip(rows, forms[g][j][1:])]  # type: ignore[index]

        # rows continuing the same cache object go together
        by_cache = itertools.groupby(sorted(todo, key=lambda gj: id(state[gj[0]][0])), key=lambda gj: id(state[gj[0]][0]))
        for _, group in by_cache:
            items = list(group)
            width = state[items[0][0]][1].shape[1]
            self._each_batch(lm, [width + len(forms[g][j]) for g, j in items], functools.partial(run, items))
        return out

    def _prefix(self, lm: Engine, prefix: tuple[int, ...]) -> tuple[Any, Any]:
        """The key/value cache of ``prefix`` (batch 1) and its mask: kept from the last batch where it matches."""
        if not prefix:
            return None, None
        kept = lm.prefix
        if kept is None or kept[0] != prefix:
            start, past = 0, None
            if kept is not None:
                # the kept prefix's tokens shared with this one are reused, the rest cut off
                # (a cache past the sliding window cannot be cut: run afresh then)
                same = common_prefix([list(kept[0]) + [-1], list(prefix) + [-2]])
                if same == len(kept[0]) or (same and (lm.window is None or len(kept[0]) < lm.window)):
                    start, past = same, copy.deepcopy(kept[1])
                    cut_cache(past, len(kept[0]) - same)
            if start < len(prefix):
                mask = lm.torch.ones((1, start), dtype=lm.torch.long) if past is not None else None
                _, past, _ = self._run(lm, [list(prefix[start:])], past, mask, [start], [[]])
            lm.prefix = kept = (prefix, past)
        return kept[1], lm.torch.ones((1, len(prefix)), dtype=lm.torch.long)

    def _run(self, lm: Engine, rows: list[list[int]], past: Any, past_mask: Any, starts: list[int],
             keep: list[list[int]], padding_side: str | None = None) -> tuple[list[np.ndarray], Any, Any]:
        """One forward pass, with a clear error where it does not fit in memory."""
        try:
            return lm.forward(rows, past, past_mask, starts, keep, padding_side or self.padding_side)
        except lm.torch.OutOfMemoryError as e:
            raise OutOfMemory(len(rows), max(map(len, rows)), lm.device) from e
        except RuntimeError as e:
            if "can't allocate memory" in str(e) or "out of memory" in str(e):
                raise OutOfMemory(len(rows), max(map(len, rows)), lm.device) from e
            raise

    @property
    def batch_tokens(self) -> int:
        """Tokens in one forward pass: ``max_batch_tokens``, or the budget chosen for the memory at hand
        (halved each time a batch ran out of memory)."""
        return self.max_batch_tokens or self._budget(self.engine)

    def _each_batch(self, lm: Engine, lengths: list[int], run: Callable[[list[int]], None]) -> None:
        """``run`` each of :meth:`_batches`; where one runs out of memory with the budget chosen here
        (``max_batch_tokens=None``), the budget halves and that batch goes again in two halves."""
        todo = self._batches(lm, lengths)
        while todo:
            batch = todo.pop(0)
            try:
                run(batch)
            except OutOfMemory as e:
                if self.max_batch_tokens is not None:
                    raise
                if len(batch) == 1:
                    raise MemoryError(
                        f"one row of {lengths[batch[0]]} tokens does not fit in the memory of {lm.device}; pass a "
                        "smaller dtype (e.g. 'bfloat16'), shorter prompts, or a device with more memory"
                    ) from e
                self._tokens_budget = max(64, (self._tokens_budget or 128) // 2)
                if lm.device.type == "cuda":
                    lm.torch.cuda.empty_cache()
                todo[:0] = [batch[: len(batch) // 2], batch[len(batch) // 2 :]]

    def _batches(self, lm: Engine, lengths: list[int]) -> list[list[int]]:
        """Indices into ``lengths`` cut into forward passes of at most the token budget, similar lengths together."""
        budget = self.max_batch_tokens or self._budget(lm)
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            n = lengths[i]
            if n > budget:
                raise MemoryError(
                    f"a row of {n} tokens is more than max_batch_tokens={budget} allows in one forward pass; "
                    "raise max_batch_tokens (None: chosen for the memory at hand)"
                )
            alone = lm.window is not None and n >= lm.window  # see Engine: padding past the window is not exact
            if cur and (alone or (len(cur) + 1) * n > budget):
                batches.append(cur)
                cur = []
            cur.append(i)
            if alone:
                batches.append(cur)
                cur = []
        if cur:
            batches.append(cur)
        return [sorted(b) for b in batches]

    def _budget(self, lm: Engine) -> int:
        """Tokens per forward pass that fit in about a quarter of the free memory (at most 4096 on a CPU)."""
        if self._tokens_budget is None:
            torch = lm.torch
            c = lm.config
            kv = 2 * c.num_hidden_layers * getattr(c, "num_key_value_heads", c.num_attention_heads) * getattr(
                c, "head_dim", c.hidden_size // c.num_attention_heads)
            per_token = 4 * (kv + 4 * c.hidden_size + 2 * getattr(c, "intermediate_size", 4 * c.hidden_size)) \
                + 12 * lm.n_vocab // 8  # about one kept logits row in eight tokens, float32 and float64
            if lm.device.type == "cuda":
                free = torch.cuda.mem_get_info(lm.device)[0]
                cap = 1 << 16
            else:
                free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
                cap = 4096  # wider passes do not run faster on a CPU
            self._tokens_budget = max(64, min(cap, free // 4 // per_token))
        return self._tokens_budget


def _dtype_name(dtype: Any) -> str:
    if dtype is None:
        return "auto"
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)} or a torch dtype (got {dtype!r})")
    return name
