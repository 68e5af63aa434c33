"""The examples a run scores: a data set (bundled name, file, ``hf:<name>``, DataFrame or
texts with labels), with its template and verbalizer replaced where asked, the rows
missing text or label settled, and a ``limit=`` sample drawn.

:func:`select` is what :class:`calibkit.Study` and every ``calibkit`` command that reads
data call; its messages use Python's parameter names (the command line says them in
flags). What it did is logged on the ``calibkit.steps`` logger and kept on the data set
(:attr:`Dataset.selected`, :attr:`Dataset.dropped`).

>>> ds = select("truefalse", limit=6, stratify=True, seed=1)
>>> len(ds), ds.selected
(6, 'a stratified random sample (seed=1) of 6 of 400 rows')
>>> ds.label_counts()
{'false': 3, 'true': 3}
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Hashable, Iterator, Mapping, Sequence

from ..progress import say
from ..templates import PromptTemplate, Verbalizer
from . import Dataset, MissingValuesError, MissingValuesWarning, list_datasets, load_dataset

__all__ = ["checked_labels", "select", "take_sample"]


def select(
    data: Any,
    y: Sequence[Hashable] | None = None,
    *,
    template: PromptTemplate | str | None = None,
    verbalizer: Verbalizer | Mapping[Hashable, Any] | None = None,
    format: str | None = None,
    text_column: str | Sequence[str] | None = None,
    label_column: str | None = None,
    drop_missing: bool = False,
    limit: int | None = None,
    shuffle: bool = False,
    stratify: bool = False,
    seed: int = 0,
) -> Dataset:
    """The data set ``data`` names, ready to score.

    ``data`` is a bundled name (:func:`list_datasets`), a file or folder path, ``hf:<name>``,
    a DataFrame (its ``label_column``, default ``label``), or the texts themselves with
    their labels ``y``. ``template`` and ``verbalizer`` replace the data set's own (a
    DataFrame or texts have none: give both). Rows with no text or no label are an error
    naming them, or with ``drop_missing=True`` dropped, saying how many. ``limit`` keeps
    that many rows: the first, or a seeded sample (``shuffle=True``, or ``stratify=True``
    for each class in its share). ``stratify=True`` without ``limit`` takes every row (a
    study's calibration/held-out split is stratified by label anyway); ``shuffle=True``
    needs ``limit``.

    >>> len(select("truefalse", stratify=True))
    400
    """
    _check_sample(limit, shuffle, stratify)
    if text_column is not None and not isinstance(text_column, str) and len(text_column) == 1:
        text_column = text_column[0]  # one column, as a file reader takes it
    missing = "drop" if drop_missing else "error"
    template = _template(template)
    verbalizer = _verbalizer(verbalizer)
    with _missing_said():
        if y is not None or _is_frame(data):
            ds = _in_memory(data, y, template, verbalizer, text_column, label_column, format)
        else:
            ds = _from_source(data, template, verbalizer, format, text_column, label_column, missing)
        absent = [f for f in ds.template.fields if f not in ds.frame.columns]
        if absent:
            raise ValueError(f"the template needs the columns {absent}; the data has {list(ds.frame.columns)} "
                             "(name them with text_column=, or change template=)")
        read = ds.dropped
        ds = replace(ds, fields=list(ds.template.fields))
        ds = ds.settle_missing(missing)  # the template's fields, which the loader may not have read as text
    for dropped in [read] + ([ds.dropped] if ds.dropped is not read else []):
        if dropped is not None:
            say(f"drop_missing=True: {dropped}")
    if limit is not None:
        frame, how = take_sample(ds.frame, ds.label_column, limit, shuffle=shuffle, stratify=stratify, seed=seed)
        ds = replace(ds, frame=frame, selected=how)
    elif stratify:
        say(f"stratify=True with no limit=: all {len(ds.frame)} rows are taken, so no sample is drawn (a study's "
            "calibration and held-out split is stratified by label in any case)")
    return ds


def checked_labels(ds: Dataset) -> list:
    """The data set's labels, checked to be classes of its verbalizer.

    >>> checked_labels(select("truefalse", limit=2))
    ['false', 'false']
    """
    classes = list(ds.verbalizer.classes)
    y = ds.frame[ds.label_column].tolist()
    bad = sorted({repr(v) for v in y} - {repr(c) for c in classes})
    if bad:
        raise ValueError(f"labels {', '.join(bad[:5])} are not classes of the verbalizer {classes}; give verbalizer=")
    return y


def take_sample(frame: Any, label_column: str, limit: int, *, shuffle: bool = False, stratify: bool = False,
                seed: int = 0) -> tuple[Any, str]:
    """The ``limit`` rows of ``frame`` (the first, ``shuffle``: a seeded sample, ``stratify``:
    each class in its share) and a phrase saying which, also logged with the class counts.

    >>> import pandas as pd
    >>> take_sample(pd.DataFrame({"label": [0, 0, 1, 1]}), "label", 2)[1]
    'the first 2 of 4 rows'
    """
    _check_sample(limit, shuffle, stratify)
    n = len(frame)
    how = "the first"
    if limit < n and (shuffle or stratify):
        from sklearn.model_selection import train_test_split

        labels = frame[label_column].astype(str) if stratify else None
        if labels is not None and labels.value_counts().min() < 2:
            raise ValueError("stratify=True needs at least two rows of every class; use shuffle=True")
        if labels is not None and limit < labels.nunique():
            raise ValueError(f"limit={limit} is fewer rows than the {labels.nunique()} classes stratify=True "
                             "must draw from; raise limit=")
        if labels is not None and n - limit < labels.nunique():
            raise ValueError(f"stratify=True leaves out at least one row of each of the {labels.nunique()} classes, "
                             f"so limit= can be at most {n - labels.nunique()} of these {n} rows; lower limit=, or "
                             "leave out limit= to take them all")
        keep, _ = train_test_split(range(n), train_size=limit, random_state=seed, stratify=labels)
        frame = frame.iloc[sorted(keep)]
        how = f"a {'stratified ' if stratify else ''}random sample (seed={seed}) of"
    frame = frame.head(limit).reset_index(drop=True)
    counts = ", ".join(f"{c} {k}" for c, k in frame[label_column].value_counts(sort=False).items()) \
        if label_column in frame.columns else "unlabelled"
    hint = "" if shuffle or stratify or limit >= n else "; shuffle=True or stratify=True draw a sample instead"
    how = f"{how} {len(frame)} of {n} rows"
    say(f"limit={limit}: {how} ({counts}){hint}")
    return frame, how


def _check_sample(limit: int | None, shuffle: bool, stratify: bool) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit= must be a whole number of rows, at least 1 (got {limit!r})")
    if shuffle and stratify:
        raise ValueError("shuffle=True and stratify=True are two ways to draw the limit= sample; give one")
    if shuffle and limit is None:
        raise ValueError("shuffle=True draws the limit= sample; give limit=N")


def _template(t: PromptTemplate | str | None) -> PromptTemplate | None:
    if t is None or isinstance(t, PromptTemplate):
        return t
    try:
        return PromptTemplate(t)
    except ValueError as e:
        raise ValueError(f"template=: {e}") from None


def _verbalizer(v: Verbalizer | Mapping[Hashable, Any] | None) -> Verbalizer | None:
    if v is None or isinstance(v, Verbalizer):
        return v
    if not isinstance(v, Mapping):
        raise ValueError(f"verbalizer= must map each class to its form(s), e.g. {{'neg': ' negative', "
                         f"'pos': ' positive'}} (got {type(v).__name__})")
    try:
        return Verbalizer(v)
    except (ValueError, TypeError) as e:  # TypeError: a form that is neither a string nor a list
        raise ValueError(f"verbalizer=: {e}") from None


def _is_frame(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns")


def _in_memory(data: Any, y: Sequence[Hashable] | None, template: PromptTemplate | None,
               verbalizer: Verbalizer | None, text_column: Any, label_column: str | None,
               format: str | None) -> Dataset:
    """A data set from a DataFrame, or from texts (a list or a DataFrame of fields) and labels."""
    import pandas as pd

    if format is not None:
        raise ValueError("format= reads data files; in-memory data needs none")
    if template is None or verbalizer is None:
        raise ValueError("in-memory data has no template or verbalizer of its own: give template= (e.g. "
                         "'Review: {text}\\nSentiment:') and verbalizer= (e.g. {'neg': ' negative', 'pos': ' positive'})")
    if y is None:
        label_column = label_column or "label"
        if label_column not in data.columns:
            raise ValueError(f"the DataFrame has no column {label_column!r} (its columns are {list(data.columns)}); "
                             "name the labels' column with label_column=, or pass the labels as y=")
        frame = data.reset_index(drop=True)
    else:
        label_column = label_column or "label"
        if _is_frame(data):
            frame = data.reset_index(drop=True).copy()
        else:
            if isinstance(data, str):
                raise ValueError("with y= the data are the texts themselves, a list of strings; "
                                 f"got one string {data[:40]!r}")
            field = template.fields[0] if len(template.fields) == 1 else "text"
            frame = pd.DataFrame({field: list(data)})
        labels = list(y)
        if len(labels) != len(frame):
            raise ValueError(f"y= has {len(labels)} labels for {len(frame)} examples; give one label per example")
        frame[label_column] = labels
    if isinstance(text_column, str) and len(template.fields) == 1 and text_column != template.fields[0]:
        frame = frame.rename(columns={text_column: template.fields[0]})
    return Dataset(name="data", frame=frame, fields=list(template.fields), label_column=label_column,
                   template=template, verbalizer=verbalizer, source="in memory")


def _from_source(name: Any, template: PromptTemplate | None, verbalizer: Verbalizer | None, format: str | None,
                 text_column: Any, label_column: str | None, missing: str) -> Dataset:
    """A data set by bundled name, path or ``hf:`` name, its template and verbalizer replaced where given."""
    text = os.fspath(name) if isinstance(name, (str, os.PathLike)) else None
    if text is None:
        raise ValueError(f"data must be a bundled data set's name, a file path, 'hf:<name>', a DataFrame, or texts "
                         f"with y= (got {type(name).__name__})")
    bundled = list_datasets()
    if not text.startswith("hf:") and not Path(text).is_file() and text not in bundled \
            and not (Path(text) / "README.md").is_file():
        raise ValueError(f"no bundled data set or file {text!r}; the bundled ones are {bundled}, a file path "
                         "must exist, and Hugging Face data sets are named 'hf:<name>'")
    if text in bundled and not Path(text).is_file():
        given = [f"{k}=" for k, v in (("format", format), ("text_column", text_column),
                                      ("label_column", label_column)) if v]
        if given:
            raise ValueError(f"{' and '.join(given)} read data files; the bundled data set {text!r} has its own "
                             "columns (change how it is scored with template= and verbalizer=)")
        ds = load_dataset(text, missing=missing)
        return replace(ds, template=template or ds.template, verbalizer=verbalizer or ds.verbalizer)
    # A file (or hf:): the reader takes the template's fields as the text columns where
    # text_column= is not given, and checks the labels against the verbalizer.
    options: dict[str, Any] = {"template": template, "verbalizer": verbalizer}
    if text_column:
        options["text_column"] = text_column
    if label_column:
        options["label_column"] = label_column
    return load_dataset(text, format=format, missing=missing, **{k: v for k, v in options.items() if v is not None})


@contextlib.contextmanager
def _missing_said() -> Iterator[None]:
    """Missing values said once: :func:`select` logs what was dropped (not the loaders'
    warning), and an error whose rows are not all the data's says how to drop them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingValuesWarning)
            yield
    except MissingValuesError as e:
        if len(e.rows) < e.total:
            raise ValueError(f"{e.problem}; fill them in, or pass drop_missing=True to drop those rows") from None
        raise
