"""The Dataset record every loader returns, the error for bad input files, and missing values.

Every loader finds the rows with no text (an empty or whitespace-only cell, a null)
or no label as it reads them (:func:`settle_missing`): by default that is a
:class:`MissingValuesError` naming the file, the column and the lines; with
``missing="drop"`` those rows are dropped, with a :class:`MissingValuesWarning`
saying how many, and the dataset's :attr:`Dataset.dropped` says which.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Sequence

from ..templates import PromptTemplate, Verbalizer, is_missing

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MISSING_MODES",
    "Dataset",
    "DatasetFormatError",
    "DroppedRows",
    "MissingValuesError",
    "MissingValuesWarning",
    "csv_row_lines",
    "settle_missing",
]

#: What a loader does with rows that have no text or no label (its ``missing=`` option).
MISSING_MODES: tuple[str, ...] = ("error", "drop")
MissingMode = Literal["error", "drop"]


class DatasetFormatError(ValueError):
    """A data file that cannot be read as asked: the message names the file, the line and the fix."""


class MissingValuesError(DatasetFormatError):
    """Rows with no text or no label: the message names the file, the columns, the lines and the fix.

    ``problem`` is the message without its fix (for a caller that words the fix its own
    way, as the CLI does with --drop-missing); ``rows`` the line numbers (or row
    positions) of the rows at fault, ``total`` how many rows were read.
    """

    def __init__(self, problem: str, fix: str, rows: Sequence[int], total: int):
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.rows = list(rows)
        self.total = total


class MissingValuesWarning(UserWarning):
    """A loader dropped rows with no text or no label, as ``missing="drop"`` asked."""


def _where(rows: Sequence[int], unit: str) -> str:
    """``"lines 3, 7"``: the first five of them, then how many more."""
    shown = ", ".join(map(str, rows[:5]))
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"{unit}{'s' if len(rows) > 1 else ''} {shown}{more}"


@dataclass(frozen=True)
class DroppedRows:
    """The rows a loader dropped (``missing="drop"``) for having no text or no label.

    ``rows`` are the file's line numbers where ``unit`` is ``"line"``, else row
    positions counting from 0; ``total`` is how many rows there were before.

    >>> d = DroppedRows(rows=[3, 7], unit="line", total=120, columns=["text"])
    >>> len(d), str(d)
    (2, 'dropped 2 of 120 rows with no text or label (lines 3, 7)')
    """

    rows: list[int]
    unit: str
    total: int
    columns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        return f"dropped {len(self.rows)} of {self.total} rows with no text or label ({_where(self.rows, self.unit)})"


def csv_row_lines(path: str | os.PathLike, n_rows: int, sep: str = ",") -> list[int]:
    """The line on which each data row of a CSV/TSV file starts, as an editor numbers them.

    Blank lines (which pandas skips) and cells quoted across line breaks are counted;
    where the count disagrees with ``n_rows`` (pandas' rows), one line per row after
    the header.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.csv"
    >>> _ = p.write_text('text,label\\n"two\\nlines",a\\n\\nc,b\\n')
    >>> csv_row_lines(p, 2)
    [2, 5]
    """
    starts: list[int] = []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=sep)
        end = 0
        for row in reader:
            start, end = end + 1, reader.line_num
            if row:  # csv gives [] for a blank line
                starts.append(start)
    starts = starts[1:]  # the header
    return starts if len(starts) == n_rows else [i + 2 for i in range(n_rows)]


def _empty(value: Any) -> bool:
    """A missing value, or an empty or whitespace-only string (a cell with nothing in it)."""
    return is_missing(value) or (isinstance(value, str) and not value.strip())


def settle_missing(
    frame: pd.DataFrame,
    text_columns: Sequence[str],
    label_column: str | None,
    *,
    missing: MissingMode = "error",
    source: str = "the data",
    lines: Sequence[int] | None = None,
) -> tuple[pd.DataFrame, list[int] | None, DroppedRows | None]:
    """Find the rows with no text or no label; raise naming them, or drop them.

    A text cell is empty when it is None, NaN, NA or a blank string; a label, likewise.
    ``lines`` are the rows' line numbers in the file (else rows are named by position,
    from 0). Returns the frame without the dropped rows (index reset), their lines,
    and the :class:`DroppedRows` (None when nothing was dropped).

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"text": ["good", " ", "bad"], "label": ["pos", "neg", None]})
    >>> settle_missing(frame, ["text"], "label", source="r.csv", lines=[2, 3, 4])
    Traceback (most recent call last):
    ...
    calibkit.datasets._dataset.MissingValuesError: r.csv: empty 'text' on line 3; empty 'label' on line 4 (2 of 3 rows); give every row its text and label, or drop those rows with missing='drop' (calibkit's CLI: --drop-missing)
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     kept, kept_lines, dropped = settle_missing(frame, ["text"], "label", missing="drop", lines=[2, 3, 4])
    >>> kept.text.tolist(), kept_lines, str(dropped)
    (['good'], [2], 'dropped 2 of 3 rows with no text or label (lines 3, 4)')
    """
    if missing not in MISSING_MODES:
        raise ValueError(f"missing must be 'error' (the default: rows with no text or label are an error) or "
                         f"'drop' (drop them, saying how many), not {missing!r}")
    n = len(frame)
    unit = "line" if lines is not None else "row"
    numbers = list(lines) if lines is not None else list(range(n))
    columns = [c for c in dict.fromkeys(list(text_columns) + ([label_column] if label_column else []))
               if c in frame.columns]
    empty_at: dict[str, list[int]] = {}
    bad = [False] * n
    for col in columns:
        for i, value in enumerate(frame[col].tolist()):
            if _empty(value):
                empty_at.setdefault(col, []).append(i)
                bad[i] = True
    if not empty_at:
        return frame, (list(lines) if lines is not None else None), None
    dropped_at = [i for i in range(n) if bad[i]]
    label_only = list(empty_at) == [label_column]
    if missing == "error" or len(dropped_at) == n:
        what = "label" if label_only else ("text" if label_column not in empty_at else "text and label")
        if len(dropped_at) == n:
            fix = (f"every row lacks its {what}, so none would be left: check text_column= and label_column= "
                   f"(the columns read: {columns})")
        elif label_only:
            fix = "give every row a label, or drop the unlabelled rows with missing='drop' (calibkit's CLI: --drop-missing)"
        else:
            fix = f"give every row its {what}, or drop those rows with missing='drop' (calibkit's CLI: --drop-missing)"
        count = f"{len(dropped_at)} of {n} rows"
        if len(empty_at) == 1:
            (col, idx), = empty_at.items()
            problem = f"{source}, {_where([numbers[i] for i in idx], unit)}: empty {col!r} ({count})"
        else:
            parts = "; ".join(f"empty {col!r} on {_where([numbers[i] for i in idx], unit)}"
                              for col, idx in empty_at.items())
            problem = f"{source}: {parts} ({count})"
        raise MissingValuesError(problem, fix, [numbers[i] for i in dropped_at], n)
    keep = [not b for b in bad]
    dropped = DroppedRows(rows=[numbers[i] for i in dropped_at], unit=unit, total=n, columns=list(empty_at))
    warnings.warn(f"{source}: {dropped}", MissingValuesWarning, stacklevel=3)
    kept_lines = [numbers[i] for i in range(n) if keep[i]] if lines is not None else None
    return frame[keep].reset_index(drop=True), kept_lines, dropped


@dataclass
class Dataset:
    """A labelled data set with the template and verbalizer meant for it.

    ``frame`` holds one row per example: the ``fields`` the template fills and the
    ``label_column`` whose values are the verbalizer's classes. ``source`` says where
    it came from (``bundled``, a file path, ``hf:<name>``).

    >>> from calibkit.datasets import load_dataset
    >>> ds = load_dataset("topic").head(3)
    >>> ds.template.format(ds.X.iloc[0])                  # doctest: +ELLIPSIS
    'News: ...\\nCategory:'
    """

    name: str
    frame: pd.DataFrame
    fields: list[str]
    label_column: str
    template: PromptTemplate
    verbalizer: Verbalizer
    card: str = ""
    source: str = ""
    dropped: DroppedRows | None = None
    #: Which rows were kept, when a sample was drawn (:func:`calibkit.datasets.selection.select`).
    selected: str = "all rows"

    @property
    def X(self) -> Any:
        """The examples: the text column, or the field columns for a multi-field template."""
        return self.frame[self.fields[0]] if len(self.fields) == 1 else self.frame[self.fields]

    @property
    def y(self) -> Any:
        """The labels, as the verbalizer's class names."""
        return self.frame[self.label_column].to_numpy()

    @property
    def classes(self) -> list[Any]:
        return list(self.verbalizer.classes)

    def __len__(self) -> int:
        return len(self.frame)

    def head(self, n: int) -> "Dataset":
        """The first ``n`` examples (files in the public formats are not always shuffled: see :meth:`sample`)."""
        return replace(self, frame=self.frame.head(n).reset_index(drop=True))

    def sample(self, n: int, random_state: int = 0) -> "Dataset":
        """``n`` examples drawn without replacement, reproducibly (all of them, shuffled, if ``n >= len``)."""
        n = min(n, len(self.frame))
        return replace(self, frame=self.frame.sample(n=n, random_state=random_state).reset_index(drop=True))

    def settle_missing(self, missing: MissingMode = "error") -> "Dataset":
        """This data set checked for rows with no text (in ``fields``) or no label.

        The loaders check the columns they read; this checks ``fields`` again after
        they changed (a new template). ``missing="drop"`` drops those rows (rows are
        named by position, from 0), else they are a :class:`MissingValuesError`.

        >>> from calibkit.datasets import load_dataset
        >>> len(load_dataset("topic").settle_missing())
        400
        """
        frame, _, dropped = settle_missing(self.frame, self.fields, self.label_column, missing=missing,
                                           source=self.name)
        if dropped is None:
            return self
        return replace(self, frame=frame, dropped=dropped)

    def label_counts(self) -> dict[Any, int]:
        """How many examples each class has, in class order."""
        counts = self.frame[self.label_column].value_counts()
        return {c: int(counts.get(c, 0)) for c in self.verbalizer.classes}
