"""Picking the next token from one logits row, as a completions request's sampler fields say.

>>> import numpy as np
>>> from calibkit.api import CompletionRequest
>>> req = CompletionRequest(model="m", prompt="x", temperature=0)
>>> Sampler(req, seed=None).pick(np.array([0.1, 2.0, -1.0]), history=[], generated=[])
1
"""

from __future__ import annotations

import numpy as np

from ...api import CompletionRequest

__all__ = ["Sampler"]


class Sampler:
    """Turns one logits row into the next token: penalties, temperature, top-k, min-p, top-p.

    ``seed``: any integer (negative ones too) makes the draws repeatable; None draws afresh.
    """

    def __init__(self, req: CompletionRequest, seed: int | None):
        self.req = req
        # Any integer seeds the generator, negative ones included (numpy takes only >= 0).
        self.rng = np.random.default_rng(None if seed is None else seed % 2**64)

    def pick(self, x: np.ndarray, history: list[int], generated: list[int]) -> int:
        """The next token after ``history`` (prompt and generated ids), ``generated`` being the latter."""
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
