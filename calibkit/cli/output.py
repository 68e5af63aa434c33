"""A report folder written, its table printed, and where it is said."""

from __future__ import annotations

import os
from typing import Any

from ..progress import say


def show_report(results: Any, out: str, title: str) -> None:
    """Write the report of an Evaluation or a study's results; print its table and where it is."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import pandas as pd

    from ..evaluation import Evaluation
    from ..report import write_report

    say(f"writing the report to {out} ...")
    if isinstance(results, Evaluation):  # calibkit calibrate's
        single, shown, folder = True, results, write_report(results, out, title=title)
    else:  # a study's
        single = results.single
        shown = results.evaluation_of() if single else results
        folder = results.write_report(out, title=title)
    wide = ("display.width", 200, "display.max_columns", 20) if single \
        else ("display.width", 250, "display.max_columns", 40, "display.max_colwidth", 60)
    with pd.option_context(*wide):
        print(shown.formatted().to_string())
    print(f"\nreport: {folder / 'index.html'}")
