"""A transformers model in memory, and the forward passes the backend builds its batches from.

One :class:`Engine` per process and settings (:func:`engine_for`): the model, its
tokenizer, a lock, the last common prefix's key/value cache, and counters.
:meth:`Engine.decoder` hands out a :class:`Decoder`: one sequence with a kept
key/value cache, token by token, the interface ``calibkit serve`` generates with.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..base import TopK
from ..context import check_context
from ..pieces import TokenBytes, token_text
from .checkpoint import (check_hub_reachable, checkpoint_source, conversion_message, converted_gguf_folder, hub_error,
                         import_torch_transformers, keep_converted, one_gguf_reader, step)

__all__ = ["Decoder", "Engine", "LoadKey", "OutOfMemory", "common_prefix", "cut_cache", "engine_for"]

@dataclass(frozen=True)
class LoadKey:
    source: str  # a folder, a GGUF file or a hub name
    device: str
    dtype: str
    trust_remote_code: bool


class Engine:
    """One model and tokenizer in memory, shared by every TransformersModel with the same key."""

    def __init__(self, key: LoadKey):
        torch, transformers = import_torch_transformers()
        self.torch = torch
        self.lock = threading.RLock()
        self.device = torch.device(key.device)
        folder, gguf_file = checkpoint_source(key.source)
        if not Path(folder).exists():
            check_hub_reachable(folder)
        kwargs: dict[str, Any] = {"trust_remote_code": key.trust_remote_code}
        if gguf_file is not None:
            kwargs["gguf_file"] = gguf_file
            # The first load of a GGUF is long and the scoring bar stands still meanwhile: say
            # what is done, and each part as it starts.
            gguf = Path(folder) / gguf_file
            step(conversion_message(gguf, converted_gguf_folder(gguf)))
            step(f"reading the tokenizer from {gguf_file} ...")
        try:
            with one_gguf_reader():
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **kwargs)
                if gguf_file is not None:
                    step(f"reading and dequantizing the weights of {gguf_file} ...")
                dtype = "auto" if key.dtype == "auto" else getattr(torch, key.dtype)
                self.model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
        except OSError as e:
            if Path(folder).exists():
                raise
            raise hub_error(key.source, str(e).splitlines()[0][:160]) from None
        self.model.to(self.device).eval()
        if gguf_file is not None:
            keep_converted(self.model, self.tokenizer, Path(folder) / gguf_file)
        self.config = self.model.config.get_text_config()
        self.n_vocab = int(self.model.get_output_embeddings().weight.shape[0])
        self.max_len = int(getattr(self.config, "max_position_embeddings", 0) or 1 << 30)
        # Padding is exact only while a row fits in the sliding window: past it, the window
        # counts the pad slots of the cache as tokens. Longer prompts go one at a time (no pads).
        window = getattr(self.config, "sliding_window", None)
        self.window = int(window) if window else None
        params = inspect.signature(self.model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.bos = self.tokenizer.bos_token_id
        self.ends = end_ids(self.model, self.tokenizer)
        #: A token's bytes, for every family of vocabulary (:class:`~calibkit.backends.pieces.TokenBytes`).
        self.piece_bytes = TokenBytes(self.tokenizer)
        #: The last common prefix run: (token ids, its key/value cache, batch 1).
        self.prefix: tuple[tuple[int, ...], Any] | None = None
        #: Tokens run through the model (pads not counted), and forward passes.
        self.evaluated_tokens = 0
        self.forwards = 0

    # -- tokens ---------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_bos)["input_ids"])

    def piece(self, token: int) -> str:
        """A token's string as the embedded model writes it (a lone byte that is not UTF-8: ``bytes:\\xNN``)."""
        return token_text(self.piece_bytes(token))

    def top(self, row: np.ndarray, k: int) -> TopK:
        """The ``k`` most likely tokens of a log-probability row; equal strings count once, the more likely."""
        d: TopK = {}
        k = min(k, row.size)
        top = np.argpartition(row, -k)[-k:]
        for t in top[np.argsort(-row[top], kind="stable")]:
            d.setdefault(self.piece(int(t)), float(row[t]))
        return d

    def check_len(self, n: int, what: str) -> None:
        if n > self.max_len:
            raise ValueError(
                f"the {what} is {n} tokens, longer than the model's {self.max_len} positions; shorten it"
            )

    # -- forward passes -------------------------------------------------------------------
    def forward(self, rows: Sequence[Sequence[int]], past: Any, past_mask: Any, starts: Sequence[int],
                keep: Sequence[Sequence[int]], padding_side: str) -> tuple[list[np.ndarray], Any, Any]:
        """Run ``rows`` (token ids) after ``past`` (a key/value cache or None) and its 2-D mask.

        Row ``i``'s first token sits at position ``starts[i]``; ``keep[i]`` are the indices,
        within the row, in order, whose next-token log-probabilities come back (float64,
        one array per row, one line per index). Returns those, the cache and the whole
        attention mask.
        """
        torch = self.torch
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        pos = torch.ones((len(rows), width), dtype=torch.long)
        pick = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, r in enumerate(rows):
            off = width - len(r) if padding_side == "left" else 0
            ids[i, off:off + len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, off:off + len(r)] = 1
            pos[i, off:off + len(r)] = torch.arange(starts[i], starts[i] + len(r))
            for j in keep[i]:
                pick[i, off + j] = True
        self.evaluated_tokens += sum(map(len, rows))
        self.forwards += 1
        full_mask = mask if past_mask is None else torch.cat([past_mask, mask], dim=1)
        kwargs = {self.cache_arg: past if past is not None else new_cache(self.model)}
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(self.device), attention_mask=full_mask.to(self.device),
                position_ids=pos.to(self.device), use_cache=True, logits_to_keep=pick.to(self.device), **kwargs,
            )
            logp = torch.log_softmax(out.logits.to(torch.float64), dim=-1).cpu().numpy()
        cache = getattr(out, self.cache_arg, None)
        counts = [len(k) for k in keep]
        # pick is row-major: the kept lines come row by row, in index order within a row
        per_row = np.split(logp, np.cumsum(counts)[:-1]) if counts else []
        return per_row, cache, full_mask

    def decoder(self, n_ctx: int | None = None) -> "Decoder":
        """The engine's :class:`Decoder` for a context of ``n_ctx`` tokens (None: the model's
        ``max_len``; never more), made on first use and kept: one per context length."""
        n = self.max_len if n_ctx is None else min(int(n_ctx), self.max_len)
        with self.lock:
            decoders = self.__dict__.setdefault("_decoders", {})
            if n not in decoders:
                decoders[n] = Decoder(self, n)
            return decoders[n]

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else (self.tokenizer.eos_token_id or 0))


def new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def end_ids(model: Any, tokenizer: Any) -> set[int]:
    ends = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        e = getattr(source, "eos_token_id", None)
        ends.update(e if isinstance(e, (list, tuple, set)) else [] if e is None else [e])
    return {int(e) for e in ends}


_ENGINES: dict[LoadKey, Engine] = {}
_LOADING = threading.Lock()


def engine_for(key: LoadKey) -> Engine:
    with _LOADING:
        if key not in _ENGINES:
            _ENGINES[key] = Engine(key)
        return _ENGINES[key]


class OutOfMemory(MemoryError):
    def __init__(self, rows: int, width: int, device: Any):
        super().__init__(
            f"a batch of {rows} rows of up to {width} tokens does not fit in the memory of {device}; pass a smaller "
            "max_batch_tokens= (None chooses one for the memory at hand), a smaller dtype (e.g. 'bfloat16'), "
            "or shorter prompts"
        )


def cut_cache(cache: Any, n: int) -> None:
    """Drop the last ``n`` tokens of a key/value cache (transformers 5 counts what to drop, 4 what to keep)."""
    if n:
        if "tokens_to_remove" in inspect.signature(cache.crop).parameters:
            cache.crop(-n)
        else:
            cache.crop(cache.get_seq_length() - n)


def common_prefix(rows: list[list[int]]) -> int:
    """The longest prefix all rows share, at most the shortest row's length less one (each row keeps a token)."""
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for r in rows[1:]:
        i = 0
        while i < n and r[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


#: End-of-generation tokens by name, as llama.cpp counts them besides the EOS token.
_END_NAMES = ("<end_of_turn>", "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>",
              "<|end_of_text|>", "<EOT>", "<end_of_utterance>")

#: Called with (position, logits row): float64 log-probabilities over the vocabulary (which
#: are logits too: log-softmax is shift-invariant), a fresh array the callee may keep.
OnRow = Callable[[int, np.ndarray], None]


class Decoder:
    """One token sequence (sequence 0) with its key/value cache kept between calls: the decode
    interface ``calibkit serve`` uses (:class:`calibkit.server.completions.LocalCompletions`),
    the same as the llama.cpp :class:`~calibkit.backends.llamacpp.engine.Engine` offers.

    ``prompt`` reuses the longest cached token prefix, ``extend`` runs tokens after what is
    cached (generation), ``truncate`` keeps the first ``n``. A cache that holds as many
    tokens as a sliding-window layer's window cannot be cut back (the window's layers have
    forgotten the start): then the kept tokens are run again from scratch. Rows handed to
    ``on_row`` are float64 log-probabilities, computed as :class:`TransformersModel` computes
    them (:meth:`Engine.forward`). Use it under ``lock`` (the engine's).

    >>> dec = TransformersModel(cache=False).engine.decoder(2048)          # doctest: +SKIP
    >>> with dec.lock:                                                       # doctest: +SKIP
    ...     dec.prompt(dec.tokenize("The capital of France is", True), [5], lambda p, r: print(p, r.argmax()))
    """

    #: Tokens per forward pass, and rows of log-probabilities kept per pass (float64 rows over
    #: a large vocabulary are big: 2 MiB each for gemma's 262144 tokens).
    chunk_tokens = 512
    chunk_rows = 64

    def __init__(self, engine: Engine, n_ctx: int):
        self.engine = engine
        self.lock = engine.lock
        self.n_ctx = int(n_ctx)
        self.n_vocab = engine.n_vocab
        self.bos = -1 if engine.bos is None else int(engine.bos)
        self.cached: list[int] = []  # the tokens the key/value cache holds
        self._cache: Any = None
        tok = engine.tokenizer
        self.ends = set(engine.ends)  # EOS, and below the end-of-turn tokens
        vocab = tok.get_vocab()
        special = set(getattr(tok, "all_special_tokens", ())) | {
            str(t) for t in getattr(tok, "added_tokens_decoder", {}).values()}
        self.ends.update(int(vocab[n]) for n in _END_NAMES if n in vocab and n in special)
        #: Tokens run through the model, and forward passes (for tests of cache reuse).
        self.evaluated_tokens = 0
        self.forwards = 0

    def __repr__(self) -> str:
        return f"Decoder(n_ctx={self.n_ctx}, cached={len(self.cached)})"

    # -- tokens ----------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        return self.engine.tokenize(text, add_bos)

    def piece(self, token: int) -> bytes:
        """The bytes of one token (:meth:`Engine.piece_bytes`)."""
        return self.engine.piece_bytes(token)

    def top(self, x: np.ndarray, lse: float, k: int) -> dict[str, float]:
        """The ``k`` most likely tokens of a float64 row ``x`` whose log-sum-exp is ``lse`` (:meth:`Engine.top`)."""
        return self.engine.top(x - lse, k) if k > 0 else {}

    def is_end(self, token: int) -> bool:
        """True for an end-of-generation token (EOS, and the end-of-turn tokens llama.cpp counts)."""
        return int(token) in self.ends

    def check_len(self, n: int, what: str = "prompt") -> None:
        """Raise :class:`~calibkit.api.InvalidRequestError` if ``n`` tokens exceed the context.

        (:func:`~calibkit.backends.context.check_context`, the one rule of both engines.)
        """
        check_context(n, self.n_ctx, what, max_ctx=self.engine.max_len)

    # -- the cache ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty the key/value cache."""
        self._cache = None
        self.cached = []

    def can_cut(self) -> bool:
        """Whether the cache can be cut back (no sliding-window layer has filled its window)."""
        w = self.engine.window
        return w is None or len(self.cached) < w

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` cached tokens (past a sliding window: run them again)."""
        if n >= len(self.cached):
            return
        if n <= 0:
            self.reset()
        elif self.can_cut():
            cut_cache(self._cache, len(self.cached) - n)
            del self.cached[n:]
        else:
            keep = self.cached[:n]
            self.reset()
            self._run(keep, set(), lambda p, r: None)

    def prompt(self, ids: Sequence[int], want: Sequence[int], on_row: OnRow) -> None:
        """Run a prompt; ``on_row(p, row)`` for each wanted position ``p``, in order.

        The longest cached prefix that holds no wanted position is reused.
        """
        self.check_len(len(ids))
        wanted = set(want)
        if not wanted or min(wanted) < 0 or max(wanted) >= len(ids):
            raise ValueError(f"wanted positions must lie in 0..{len(ids) - 1}")
        same = 0
        for a, b in zip(self.cached, ids):
            if a != b:
                break
            same += 1
        keep = min(same, min(wanted))
        if keep < len(self.cached) and not self.can_cut():
            keep = 0  # cutting back would run the kept tokens again anyway
        self.truncate(keep)
        self._run(list(ids[keep:]), wanted, on_row)

    def extend(self, tokens: Sequence[int], want: Sequence[int], on_row: OnRow) -> None:
        """Run ``tokens`` after what is cached (generation: one token at a time)."""
        self.check_len(len(self.cached) + len(tokens), "prompt with its continuation")
        self._run(list(tokens), set(want), on_row)

    def _run(self, tokens: list[int], wanted: set[int], on_row: OnRow) -> None:
        """Run ``tokens`` after the cache, in chunks, and append them to it."""
        torch = self.engine.torch
        s = 0
        while s < len(tokens):
            start = len(self.cached)
            e, rows = s, 0
            while e < len(tokens) and e - s < self.chunk_tokens:
                rows += (start + e - s) in wanted
                if rows > self.chunk_rows:
                    break
                e += 1
            chunk = tokens[s:e]
            keep = [i for i in range(len(chunk)) if start + i in wanted]
            mask = torch.ones((1, start), dtype=torch.long) if self._cache is not None else None
            try:
                got, cache, _ = self.engine.forward([chunk], self._cache, mask, [start], [keep], "right")
            except BaseException:
                self.reset()  # a pass that failed half-way leaves the cache unknown
                raise
            self._cache = cache
            self.cached.extend(chunk)
            self.evaluated_tokens += len(chunk)
            self.forwards += 1
            for i, row in zip(keep, got[0]):
                on_row(start + i, row)
            s = e
