"""Methods timed in turns, a round of examples each, so that load from anything else on the machine falls on all alike.

>>> outs, seconds = take_turns({"double": lambda xs: [2 * x for x in xs]}, [1, 2, 3], per_round=2)
>>> outs["double"], sorted(seconds)
([[2, 4], [6]], ['double'])
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence


def take_turns(methods: dict[str, Callable[[Sequence[Any]], Any]], items: Sequence[Any],
               per_round: int) -> tuple[dict[str, list[Any]], dict[str, float]]:
    """Run each method on ``items`` a round of ``per_round`` at a time, the methods taking turns.

    Returns each method's outputs, one per round, and its seconds summed over the rounds.
    """
    outs: dict[str, list[Any]] = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for s in range(0, len(items), per_round):
        chunk = items[s : s + per_round]
        for name, run in methods.items():
            t = time.perf_counter()
            outs[name].append(run(chunk))
            seconds[name] += time.perf_counter() - t
    return outs, seconds
