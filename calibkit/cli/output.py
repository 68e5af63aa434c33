"""A report folder chosen, written, its table printed, and where it is said; the run's warnings on stderr.

One run, one folder. ``--out DIR`` names the folder: a run into one that holds another
report stops before anything is scored, naming ``--overwrite`` (which replaces that
report) and ``--out``. Without ``--out`` each run writes a fresh folder,
``reports/<data>/<date>-<time>``, and ``reports/<data>/latest`` points at the newest.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from ..progress import say
from .flags import flag_words


def report_folder(out: str | None, overwrite: bool, data: str) -> tuple[Path, bool]:
    """The run's report folder, checked before anything is scored, and whether it is fresh under
    ``reports/<data>/`` (then ``latest`` is pointed at it once it is written); ``data`` is the
    data set's name or file, whose stem names the folder."""
    from ..report import ReportFolderError, check_folder, slug

    if out is None:
        base = Path("reports") / slug(Path(str(data).rstrip("/")).stem)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder, k = base / stamp, 2
        while folder.exists():
            folder, k = base / f"{stamp}-{k}", k + 1
        return folder, True
    try:
        return check_folder(out, overwrite=overwrite), False
    except ReportFolderError as e:
        shown = ", ".join(e.names[:4]) + (", ..." if len(e.names) > 4 else "")
        if e.foreign:
            raise ValueError(f"--out {out} holds files that are not a calibkit report's ({shown}); a report folder "
                             "holds one run and nothing else: give another --out") from None
        raise ValueError(f"--out {out} holds another run's report ({shown}); a report folder holds one run: pass "
                         "--overwrite to replace it, or give another --out") from None


def show_report(results: Any, folder: Path, fresh: bool, title: str, overwrite: bool = False) -> None:
    """Write the report of an Evaluation or a study's results into ``folder`` (from
    :func:`report_folder`); print its table and where it is."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import pandas as pd

    from ..evaluation import Evaluation
    from ..report import write_report

    say(f"writing the report to {folder} ...")
    if isinstance(results, Evaluation):  # calibkit calibrate's
        single, shown = True, results
        folder = write_report(results, folder, title=title, overwrite=overwrite)
    else:  # a study's
        single = results.single
        shown = results.evaluation_of() if single else results
        folder = results.write_report(folder, title=title, overwrite=overwrite)
    if fresh:
        _point_latest(folder)
    wide = ("display.width", 200, "display.max_columns", 20) if single \
        else ("display.width", 250, "display.max_columns", 40, "display.max_colwidth", 60)
    with pd.option_context(*wide):
        print(shown.formatted().to_string())
    print(f"\nreport: {folder / 'index.html'}")


def _point_latest(folder: Path) -> None:
    """``<folder's parent>/latest`` -> folder (a link; a text file naming it where links are not allowed)."""
    latest = folder.parent / "latest"
    if latest.is_symlink() or latest.is_file():
        latest.unlink()
    elif latest.exists():  # a folder of that name, not ours: leave it
        return
    try:
        latest.symlink_to(folder.name, target_is_directory=True)
    except OSError:
        latest.write_text(folder.name + "\n")


@contextlib.contextmanager
def warnings_said(command: str) -> Iterator[None]:
    """The run's warnings on stderr as ``calibkit <command>: warning: ...`` lines, in flags."""
    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"calibkit {command}: warning: {flag_words(str(message))}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():  # the filters as they are: libraries' deprecations stay unsaid
        warnings.showwarning = show
        yield
