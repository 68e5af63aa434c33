"""Prefix caching for echoed prompts: the per-position answers of a text, kept by what precedes them.

An exact-scoring client echoes the same prompt once per form (and once alone), so the
``K`` requests of one example share all but their last few positions. vLLM's
automatic prefix caching keeps the key/value entries of shared blocks, named by a
hash chained over their tokens; this does the same for what an echo answers at each
position (the token's log-probability and its top-k), while the engine keeps the
key/value entries. Both are what a fresh decode would give (the embedded engine's
padded schedule makes a token's numbers independent of how its text was batched), so
a request's answer never depends on which requests came before it.

>>> memo = PositionMemo(max_entries=2)
>>> keys = memo.keys([2, 10, 11])            # one key per position that has a next token
>>> len(keys), memo.get(keys[0], 5)
(2, None)
>>> memo.put(keys[0], 5, (-1.5, {"a": -1.5}))
>>> memo.get(keys[0], 5), memo.get(keys[0], 4)
((-1.5, {'a': -1.5}), None)
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Hashable, Sequence

__all__ = ["PositionMemo"]

#: What an echo answers at one position: the next token's log-probability and the top-k dict.
Answer = tuple[float, "dict[str, float] | None"]


class PositionMemo:
    """Least-recently-used answers per (tokens up to and including the next one, question).

    ``keys(ids)`` gives one key per position ``p < len(ids) - 1``: a digest chained over
    ``ids[: p + 2]``, so two texts share the keys of their common prefix. ``question`` is
    what else shapes the answer (the top-k size asked; None for no top-k).
    """

    def __init__(self, max_entries: int = 50_000):
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1 (got {max_entries!r})")
        self.max_entries = max_entries
        self._answers: OrderedDict[tuple[bytes, Hashable], Answer] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def keys(ids: Sequence[int]) -> list[bytes]:
        out: list[bytes] = []
        h = hashlib.blake2b(digest_size=16)
        for i, t in enumerate(ids):
            h.update(int(t).to_bytes(4, "little", signed=True))
            if i >= 1:
                out.append(h.copy().digest())
        return out

    def get(self, key: bytes, question: Hashable) -> Answer | None:
        answer = self._answers.get((key, question))
        if answer is None:
            self.misses += 1
            return None
        self._answers.move_to_end((key, question))
        self.hits += 1
        return answer

    def put(self, key: bytes, question: Hashable, answer: Answer) -> None:
        self._answers[(key, question)] = answer
        self._answers.move_to_end((key, question))
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)

    def clear(self) -> None:
        self._answers.clear()
