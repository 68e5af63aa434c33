"""LabelScores: the n×K class log-probabilities of n examples, the seam between the two halves.

Everything that talks to models produces it (:func:`calibkit.score`); everything that
does statistics takes its plain arrays (``np.asarray(scores)`` is ``scores.logprobs``).

>>> import numpy as np
>>> s = LabelScores.from_logprobs(np.log([[0.2, 0.6], [0.1, 0.05]]), ["neg", "pos"])
>>> s.predict()
['pos', 'neg']

A scores file (CSV or Parquet, by extension) keeps the classes with their types:

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "scores.csv")
>>> _ = write_scores(path, LabelScores.from_logprobs(np.log([[0.9, 0.1]]), [0, 1]))
>>> read_scores(path).scores.classes
[0, 1]
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np

__all__ = ["LabelScores", "ScoresFile", "check_scores_path", "read_scores", "write_scores"]


@dataclass
class LabelScores:
    """Class log-probabilities of n examples, with what is known about their precision.

    Attributes
    ----------
    logprobs : (n, K) log P(class | prompt), the sum over the class's forms. Not
        renormalised: a small base model puts little mass on the label set (see
        ``label_mass``). Where ``censored`` is True the entry is an upper bound.
    censored : (n, K) bool, entries known only as an upper bound (top-k scoring).
    classes : the K class labels, in column order.
    label_mass : (n,) total probability on the label set, sum of exp(logprobs).
    form_logprobs : (n, F) the same for each form (``forms``, class ``form_class``).
    exact : (n,) bool, rows scored exactly (whole forms) rather than from the top-k.
    provenance : model, backend, method, k, questions the model answered (``requests``), cache hits, template.

    ``np.asarray(scores)`` is ``scores.logprobs``, so a LabelScores goes straight into
    a calibrator, whose identity map is the softmax over each row.
    """

    logprobs: np.ndarray
    censored: np.ndarray
    classes: list[Hashable]
    label_mass: np.ndarray
    form_logprobs: np.ndarray
    forms: list[str]
    form_class: list[int]
    exact: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, k = self.logprobs.shape
        if k != len(self.classes) or self.censored.shape != (n, k) or self.label_mass.shape != (n,):
            raise ValueError("LabelScores arrays do not agree in shape")

    @classmethod
    def from_logprobs(
        cls, logprobs: Any, classes: list[Hashable], *, provenance: dict[str, Any] | None = None
    ) -> "LabelScores":
        """Exact scores from an (n, K) matrix, one form per class (e.g. read back from a file)."""
        lp = np.asarray(logprobs, dtype=np.float64)
        if lp.ndim != 2 or lp.shape[1] != len(classes):
            raise ValueError(f"logprobs must be (n, {len(classes)}) for the classes {list(classes)} (got {lp.shape})")
        n, k = lp.shape
        return cls(
            logprobs=lp,
            censored=np.zeros((n, k), dtype=bool),
            classes=list(classes),
            label_mass=np.exp(lp).sum(axis=1),
            form_logprobs=lp.copy(),
            forms=[str(c) for c in classes],
            form_class=list(range(k)),
            exact=np.ones(n, dtype=bool),
            provenance=dict(provenance or {}),
        )

    def __len__(self) -> int:
        return self.logprobs.shape[0]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.logprobs.astype(dtype) if dtype is not None else self.logprobs

    @property
    def shape(self) -> tuple[int, int]:
        return self.logprobs.shape  # type: ignore[return-value]

    def __getitem__(self, rows: Any) -> "LabelScores":
        """The scores of some rows (a slice, indices or a boolean mask)."""
        idx = np.arange(len(self))[rows]
        idx = np.atleast_1d(idx)
        return LabelScores(
            logprobs=self.logprobs[idx],
            censored=self.censored[idx],
            classes=list(self.classes),
            label_mass=self.label_mass[idx],
            form_logprobs=self.form_logprobs[idx],
            forms=list(self.forms),
            form_class=list(self.form_class),
            exact=self.exact[idx],
            provenance=dict(self.provenance),
        )

    @property
    def probs(self) -> np.ndarray:
        """P(class | prompt, label set): each row renormalised over the K classes."""
        z = self.logprobs - self.logprobs.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self) -> list[Hashable]:
        """The most probable class of each example (ties: the first class)."""
        return [self.classes[i] for i in np.argmax(self.logprobs, axis=1)]

    def to_frame(self) -> "Any":
        """A pandas DataFrame: one logprob and one censored column per class, label mass, prediction."""
        import pandas as pd

        data: dict[str, Any] = {}
        for k, c in enumerate(self.classes):
            data[f"logprob[{c}]"] = self.logprobs[:, k]
        for k, c in enumerate(self.classes):
            data[f"censored[{c}]"] = self.censored[:, k]
        data["label_mass"] = self.label_mass
        data["exact"] = self.exact
        data["prediction"] = self.predict()
        return pd.DataFrame(data)

    def __repr__(self) -> str:
        n, k = self.shape
        return (
            f"LabelScores(n={n}, classes={self.classes}, model={self.provenance.get('model')!r}, "
            f"method={self.provenance.get('method')!r}, censored={int(self.censored.sum())}, "
            f"median label mass={np.median(self.label_mass) if n else float('nan'):.3g})"
        )


# -- scores files ------------------------------------------------------------------------
# A scores file is a plain table a person or pandas can read: the example columns, one
# logprob[<class>] and one censored[<class>] column per class, label_mass, exact,
# prediction, and `row` (example or content-free). What a header cannot say -- the
# classes' types (1 vs "1" vs True), the labels' column, the provenance -- is a JSON
# object in the first cell of the `calibkit_meta` column, the same in CSV and Parquet.
_META = "calibkit_meta"
_FILE_FORMAT = "calibkit-scores"
_ROW_KINDS = ("example", "content-free")


def _need_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ValueError("Parquet files need pyarrow: pip install 'calibkit[parquet]', or use a .csv file") from None


def _file_kind(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"{os.fspath(path)}: a scores file ends in .csv or .parquet (got {suffix or 'no extension'!r})")


def check_scores_path(path: str | os.PathLike) -> None:
    """Raise the error :func:`write_scores` would raise for this path's kind, before any work is done.

    A scores file ends in ``.csv`` or ``.parquet``; Parquet needs pyarrow.

    >>> check_scores_path("scores.csv")
    >>> check_scores_path("scores.txt")
    Traceback (most recent call last):
    ...
    ValueError: scores.txt: a scores file ends in .csv or .parquet (got '.txt')
    """
    if _file_kind(path) == "parquet":
        _need_pyarrow()


def _plain_class(c: Any) -> Any:
    """A class label as a JSON scalar, or an error naming it."""
    if isinstance(c, np.generic):
        c = c.item()
    if isinstance(c, (str, bool, int)) or (isinstance(c, float) and math.isfinite(c)):
        return c
    raise ValueError(
        f"the class {c!r} ({type(c).__name__}) cannot be stored in a scores file; "
        "classes must be strings, integers, booleans or finite floats"
    )


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (np.ndarray, tuple, set)):
        return list(v.tolist() if isinstance(v, np.ndarray) else v)
    return str(v)


def _score_columns(classes: Sequence[Hashable]) -> list[str]:
    return ([f"logprob[{c}]" for c in classes] + [f"censored[{c}]" for c in classes]
            + ["label_mass", "exact", "prediction"])


@dataclass
class ScoresFile:
    """A scores file read back by :func:`read_scores`.

    Attributes
    ----------
    scores : the examples' LabelScores, classes with their types.
    frame : the examples' other columns (texts, labels, ...), one row per example; the
        label column holds the labels with the classes' types.
    labels : the labels as a list (classes' types), or None where the file has none.
    label_column : the labels' column, or None.
    content_free : the scores of the content-free rows (contextual calibration), or None.
    path : where it was read from.
    """

    scores: LabelScores
    frame: Any
    labels: list[Hashable] | None
    label_column: str | None
    content_free: LabelScores | None
    path: str


def write_scores(
    path: str | os.PathLike,
    scores: LabelScores,
    frame: Any = None,
    *,
    label_column: str | None = None,
    content_free: LabelScores | None = None,
    content_free_frame: Any = None,
) -> Path:
    """Write scores to a .csv or .parquet file that :func:`read_scores` reads back.

    ``frame`` holds the examples' own columns (texts, labels), one row per score;
    ``label_column`` names its labels' column (default: ``label`` where there is one).
    ``content_free`` adds the scores of content-free inputs as rows marked
    ``row=content-free`` (with ``content_free_frame``'s columns, if given). The classes
    keep their types (``1``, ``"1"`` and ``True`` stay apart).

    >>> import os, tempfile, pandas as pd
    >>> s = LabelScores.from_logprobs(np.log([[0.7, 0.2], [0.1, 0.8]]), [True, False])
    >>> path = write_scores(os.path.join(tempfile.mkdtemp(), "s.csv"), s,
    ...                     pd.DataFrame({"text": ["yes", "no"], "label": [True, False]}))
    >>> f = read_scores(path)
    >>> f.scores.classes, f.labels
    ([True, False], [True, False])
    """
    import pandas as pd

    kind = _file_kind(path)
    classes = [_plain_class(c) for c in scores.classes]
    printed = [str(c) for c in classes]
    if len(set(printed)) < len(printed):
        dup = next(p for p in printed if printed.count(p) > 1)
        raise ValueError(f"two classes print as {dup!r} ({classes}); give the classes distinct names")
    if content_free is not None and [_plain_class(c) for c in content_free.classes] != classes:
        raise ValueError(f"content_free has the classes {content_free.classes}, the scores {scores.classes}; "
                         "score both with the same verbalizer")
    reserved = set(_score_columns(printed)) | {"row", _META}
    columns = [str(c) for c in (frame.columns if isinstance(frame, pd.DataFrame) else [])]
    if label_column is None and "label" in columns:
        label_column = "label"
    if label_column is not None and label_column not in columns:
        raise ValueError(f"label_column={label_column!r} is not a column of the frame (its columns are {columns})")

    def as_names(values: Any) -> list[str | None]:
        # Labels and predictions are classes: written as their printed names (one type
        # per column, which Parquet needs), their types restored from the classes when read.
        return [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(_plain_class(v))
                for v in values]

    def part(s: LabelScores, extra: Any, row: str, name: str) -> Any:
        table = s.to_frame()
        table["prediction"] = as_names(table["prediction"])
        if extra is None:
            return table.assign(row=row)
        extra = pd.DataFrame(extra).reset_index(drop=True)
        if len(extra) != len(s):
            raise ValueError(f"{name} has {len(extra)} rows for {len(s)} scores; give one row per score")
        clash = [str(c) for c in extra.columns if str(c) in reserved]
        if clash:
            raise ValueError(f"{name} has the column(s) {clash}, which a scores file uses itself; rename them")
        if label_column in extra.columns:
            extra[label_column] = pd.Series(as_names(extra[label_column]), dtype=object)
        return pd.concat([extra, table], axis=1).assign(row=row)

    parts = [part(scores, frame, "example", "frame")]
    if content_free is not None:
        parts.append(part(content_free, content_free_frame, "content-free", "content_free_frame"))
    out = pd.concat(parts, ignore_index=True)
    meta = {"format": _FILE_FORMAT, "version": 1, "classes": classes, "label_column": label_column,
            "provenance": scores.provenance}
    out[_META] = [json.dumps(meta, default=_json_default)] + [""] * (len(out) - 1) if len(out) else []
    target = Path(path)
    if kind == "parquet":
        _need_pyarrow()
        out.to_parquet(target, index=False)
    else:
        out.to_csv(target, index=False)
    return target


def _bools(values: Any, column: str, where: str) -> np.ndarray:
    out = np.empty(len(values), dtype=bool)
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)):
            out[i] = bool(v)
        elif str(v).strip().lower() in ("true", "1"):
            out[i] = True
        elif str(v).strip().lower() in ("false", "0"):
            out[i] = False
        else:
            raise ValueError(f"{where}: the column {column!r} holds {v!r} (data row {i + 1}); it must be True or False")
    return out


def _floats(values: Any, column: str, where: str) -> np.ndarray:
    import pandas as pd

    out = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isnan(out))
    if bad.size:
        raise ValueError(f"{where}: the column {column!r} holds {list(values)[bad[0]]!r} (data row {bad[0] + 1}), "
                         "not a number; write the file with calibkit score --out")
    return out


def read_scores(path: str | os.PathLike, *, label_column: str | None = None) -> ScoresFile:
    """Read a scores file written by :func:`write_scores` (``calibkit score --out``).

    Classes and labels come back with their types. ``label_column`` names the labels'
    column where the file does not (default: the one the file records, else ``label``).
    A file with ``logprob[<class>]`` columns but no ``calibkit_meta`` column (written by
    hand or another tool) is read too, its classes as strings.

    >>> import os, tempfile
    >>> s = LabelScores.from_logprobs([[-0.1, -2.5]], [3, 7])
    >>> f = read_scores(write_scores(os.path.join(tempfile.mkdtemp(), "s.csv"), s))
    >>> f.scores.classes, f.scores.logprobs.tolist(), f.labels
    ([3, 7], [[-0.1, -2.5]], None)
    """
    import pandas as pd

    where = os.fspath(path)
    kind = _file_kind(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"no scores file at {where!r}; write one with calibkit score --out")
    if kind == "parquet":
        _need_pyarrow()
        table = pd.read_parquet(path)
    else:
        try:  # all as text: "N/A" and "" stay texts, and the classes' types come from the metadata
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise ValueError(f"{where} is not a readable CSV file ({e}); write it with calibkit score --out") from None
    columns = [str(c) for c in table.columns]
    meta: dict[str, Any] = {}
    if _META in columns:
        cell = next((v for v in table[_META] if isinstance(v, str) and v.strip()), None)
        try:
            meta = json.loads(cell) if cell else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: the {_META} cell is not JSON ({e}); write the file with "
                             "calibkit score --out") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("classes"), list):
            raise ValueError(f"{where}: the {_META} cell names no classes; write the file with calibkit score --out")
    if meta:
        classes: list[Hashable] = list(meta["classes"])
        missing = [f"logprob[{c}]" for c in classes if f"logprob[{c}]" not in columns]
        if missing:
            raise ValueError(f"{where} has no column(s) {missing} for its classes {classes}; "
                             "write it with calibkit score --out")
    else:
        classes = [c[len("logprob["):-1] for c in columns if c.startswith("logprob[") and c.endswith("]")]
    if len(classes) < 2:
        raise ValueError(f"{where} has no logprob[<class>] columns for two or more classes (its columns are "
                         f"{columns[:8]}{' ...' if len(columns) > 8 else ''}); write it with calibkit score --out")
    rows = table["row"].astype(str).to_numpy() if "row" in columns else np.full(len(table), "example")
    unknown = sorted(set(rows) - set(_ROW_KINDS))
    if unknown:
        raise ValueError(f"{where}: the column 'row' holds {unknown[0]!r}; it marks rows as 'example' or 'content-free'")
    printed = [str(c) for c in classes]
    by_name = dict(zip(printed, classes))

    def scores_of(mask: np.ndarray, provenance: dict[str, Any]) -> LabelScores:
        part = table[mask]
        lp = np.column_stack([_floats(part[f"logprob[{c}]"], f"logprob[{c}]", where) for c in printed]) \
            if len(part) else np.empty((0, len(classes)))
        n, k = lp.shape
        cens = np.column_stack([_bools(part[f"censored[{c}]"], f"censored[{c}]", where)
                                if f"censored[{c}]" in columns else np.zeros(n, dtype=bool) for c in printed]) \
            if n else np.zeros((0, k), dtype=bool)
        mass = _floats(part["label_mass"], "label_mass", where) if "label_mass" in columns else np.exp(lp).sum(axis=1)
        exact = _bools(part["exact"], "exact", where) if "exact" in columns else np.ones(n, dtype=bool)
        return LabelScores(logprobs=lp, censored=cens, classes=list(classes), label_mass=mass,
                           form_logprobs=lp.copy(), forms=list(printed), form_class=list(range(k)),
                           exact=exact, provenance=provenance)

    provenance = dict(meta.get("provenance") or {})
    provenance["scores_file"] = where
    is_example = rows == "example"
    scores = scores_of(is_example, provenance)
    content_free = scores_of(~is_example, dict(provenance)) if (~is_example).any() else None
    own = set(_score_columns(printed)) | {"row", _META}
    frame = table.loc[is_example, [c for c in table.columns if str(c) not in own]].reset_index(drop=True)
    if label_column is None:
        label_column = meta.get("label_column") or ("label" if "label" in frame.columns else None)
        if label_column is not None and label_column not in frame.columns:
            label_column = None
    elif label_column not in frame.columns:
        raise ValueError(f"{where} has no column {label_column!r} (its columns are {[str(c) for c in frame.columns]}); "
                         "pass label_column= naming the labels' column")
    labels = None
    if label_column is not None:
        labels = [by_name.get(v, v) if isinstance(v, str) else (v.item() if isinstance(v, np.generic) else v)
                  for v in frame[label_column]]
        frame[label_column] = pd.Series(labels, dtype=object)
    return ScoresFile(scores=scores, frame=frame, labels=labels, label_column=label_column,
                      content_free=content_free, path=where)
