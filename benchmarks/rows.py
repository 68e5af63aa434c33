"""One line per measured figure, for benchmarks/run_all.py's summary table.

Every benchmark prints its details as it likes, and then, for each figure the
README or an issue sets a goal for, one line made by :func:`row`. run_all.py
collects those lines into the table at the top of RESULTS.md (and keeps the rest
of the output below it, as printed).

>>> row("ECE, n = 10^7, vs netcal", "3.4x (0.41 s)", ">= 5x and < 0.5 s", False)
'ROW {"what": "ECE, n = 10^7, vs netcal", "now": "3.4x (0.41 s)", "goal": ">= 5x and < 0.5 s", "holds": false}'
"""

from __future__ import annotations

import json

PREFIX = "ROW "


def row(what: str, now: str, goal: str, holds: bool | None) -> str:
    """The line for one figure: what was measured, its value (ratio and, where useful, time), the goal, and whether it holds.

    ``holds`` is None where no goal applies (a figure reported for context).
    """
    return PREFIX + json.dumps({"what": what, "now": now, "goal": goal, "holds": holds})


def parse(line: str) -> dict | None:
    """The figure a :func:`row` line holds, or None for any other line."""
    return json.loads(line[len(PREFIX):]) if line.startswith(PREFIX) else None
