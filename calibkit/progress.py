"""Progress bars: one rule for every wait in calibkit (scoring, assembling the model, the report).

``progress=None`` (the default everywhere) shows a bar once the work has lasted
:data:`PROGRESS_DELAY` seconds, so quick calls stay silent, and honours tqdm's own
``TQDM_DISABLE`` environment variable; ``True`` shows it at once; ``False`` never.
Bars go to stderr (a widget in notebooks), so stdout keeps the results.

>>> progress_bar(3, False, desc="scoring", unit="ex").disable
True
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Any, Iterator

__all__ = ["PROGRESS_DELAY", "STEPS", "describe", "kept_warnings", "progress_bar", "say"]

#: The logger of what a long run is doing and what it decided (the sample drawn, the rows
#: dropped); the command line prints it on stderr, a notebook shows it where logging is on.
STEPS = logging.getLogger("calibkit.steps")

#: Seconds a piece of work lasts before its bar appears (with ``progress=None``).
PROGRESS_DELAY = 2.0


def progress_bar(total: int | float, progress: bool | None, *, desc: str | None = None, unit: str = "it",
                 **options: Any) -> Any:
    """A tqdm bar for ``total`` steps under the rule above; ``options`` go to tqdm."""
    from tqdm.auto import tqdm

    if progress is None:
        # Read here, not left to tqdm, which reads its TQDM_* variables once, when it is imported.
        progress = os.environ.get("TQDM_DISABLE", "").strip().lower() in ("", "0", "false", "no")
        delay = PROGRESS_DELAY
    else:
        delay = 0.0
    return tqdm(total=total, desc=desc, unit=unit, delay=delay, disable=not progress, **{"leave": False, **options})


def describe(bar: Any, text: str) -> None:
    """Say on ``bar`` what is being done; redraw now only if the bar is already shown."""
    bar.set_description_str(text, refresh=False)
    if not bar.disable and bar.format_dict["elapsed"] >= bar.delay:
        bar.refresh()


def say(message: str) -> None:
    """Log a step of a run on :data:`STEPS`: what is being done, or what was decided."""
    STEPS.info(message)


@contextlib.contextmanager
def kept_warnings() -> Iterator[list[str]]:
    """Keep what is warned within: the list it yields holds each warning's message once, when
    it ends; and each warning is still said to the caller, as if never caught (a report lists
    them, and a script's own filters still apply).

    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")  # the caller's own filter, which the warning still meets
    ...     with kept_warnings() as kept:
    ...         warnings.warn("temperature reached the bound T = 100")
    >>> kept
    ['temperature reached the bound T = 100']
    """
    kept: list[str] = []
    caught: list[Any] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield kept
    finally:
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        kept.extend(dict.fromkeys(str(w.message) for w in caught))
