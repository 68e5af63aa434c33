"""Readers for public benchmark formats and for plain CSV/JSONL files.

Each reader returns a :class:`~calibkit.datasets.Dataset` whose labels are class names
(``"positive"``, ``"Sci/Tech"``, ``"entailment"``) with a default template and
verbalizer whose forms are single tokens for gemma-3; pass ``template=`` or
``verbalizer=`` to use your own. Bad input raises :class:`DatasetFormatError` naming
the file, the line and the fix.

Rows with no text (an empty or blank cell, a null, a label with no sentence after it)
or no label are an error naming the file, the column and the lines
(:class:`~calibkit.datasets.MissingValuesError`); every reader's ``missing="drop"``
drops them instead, with a :class:`~calibkit.datasets.MissingValuesWarning` saying how
many, and the dataset's ``dropped`` says which lines.

=============  ================================================  =========================
format         file                                              reader
=============  ================================================  =========================
``sst2``       ``0 a dull mess`` lines (0 negative, 1 positive)  :func:`read_sst2`
``agnews``     CSV ``Class Index,Title,Description`` (1..4)      :func:`read_agnews`
``trec``       ``DESC:manner How did ... ?`` lines               :func:`read_trec`
``rte``        SuperGLUE RTE JSONL: premise, hypothesis, label   :func:`read_superglue`
``cb``         SuperGLUE CB JSONL, likewise (three labels)       :func:`read_superglue`
``superglue``  RTE or CB, told apart by the labels               :func:`read_superglue`
``csv``        any CSV with named text and label columns         :func:`read_file`
``tsv``        any tab-separated file, likewise                  :func:`read_file`
``jsonl``      any JSON-lines file, likewise                     :func:`read_file`
=============  ================================================  =========================

:data:`FORMATS` names them all; :data:`FORMAT_DESCRIPTIONS` says in a line what each reads.

>>> from calibkit.datasets.formats import read_path
>>> ds = read_path("../shared/data/sst2/dev.txt")       # doctest: +SKIP
>>> ds.name, ds.classes                                  # doctest: +SKIP
('sst2:dev.txt', ['negative', 'positive'])
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Hashable, Iterator, Mapping, Sequence

from ..templates import PromptTemplate, Verbalizer
from ._dataset import (
    Dataset,
    DatasetFormatError,
    DroppedRows,
    MissingMode,
    MissingValuesError,
    csv_row_lines,
    settle_missing,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FORMATS",
    "FORMAT_DESCRIPTIONS",
    "infer_format",
    "read_agnews",
    "read_file",
    "read_path",
    "read_sst2",
    "read_superglue",
    "read_trec",
]

PathLike = str | os.PathLike

# Every format read_path(path, format=...) accepts, with a line about each (for --help texts).
FORMAT_DESCRIPTIONS: dict[str, str] = {
    "sst2": "SST-2 '<label> <sentence>' lines, 0 negative / 1 positive",
    "agnews": "AG News CSV 'Class Index,Title,Description', 1..4 = World, Sports, Business, Sci/Tech",
    "trec": "TREC 'COARSE:fine question' lines",
    "rte": "SuperGLUE RTE JSONL: premise, hypothesis, label (entailment / not_entailment)",
    "cb": "SuperGLUE CB JSONL: premise, hypothesis, label (entailment / contradiction / neutral)",
    "superglue": "SuperGLUE RTE or CB JSONL, told apart by the labels (then by a folder or file named rte or cb)",
    "csv": "any CSV with named text and label columns (text_column=, label_column=)",
    "tsv": "any tab-separated file with named text and label columns",
    "jsonl": "any JSON-lines file with named text and label fields",
}
FORMATS: tuple[str, ...] = tuple(FORMAT_DESCRIPTIONS)

SST2_TEMPLATE = "Review: {text}\nSentiment:"
SST2_LABELS = {"0": "negative", "1": "positive"}
SST2_VERBALIZER = {"negative": " negative", "positive": " positive"}

AGNEWS_TEMPLATE = "Title: {title}\nNews: {description}\nCategory:"
AGNEWS_LABELS = {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}
AGNEWS_VERBALIZER = {"World": " World", "Sports": " Sports", "Business": " Business", "Sci/Tech": " Technology"}

TREC_TEMPLATE = "Question: {question}\nAnswer type:"
# Lower-case forms: " abbreviation" is one gemma-3 token, " Abbreviation" two.
TREC_VERBALIZER = {"ABBR": " abbreviation", "DESC": " description", "ENTY": " entity", "HUM": " person",
                   "LOC": " location", "NUM": " number"}

SUPERGLUE: dict[str, dict[str, Any]] = {
    "rte": {
        "template": "{premise}\nQuestion: {hypothesis} True or False?\nAnswer:",
        "labels": ["entailment", "not_entailment"],
        "verbalizer": {"entailment": " True", "not_entailment": " False"},
    },
    "cb": {
        "template": "{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer:",
        "labels": ["entailment", "contradiction", "neutral"],
        "verbalizer": {"entailment": " True", "contradiction": " False", "neutral": " Neither"},
    },
}

_SST2_LINE = re.compile(r"^(\S+)\s+(.*\S)\s*$")
_TREC_LINE = re.compile(r"^([A-Za-z]+):(\S+)\s+(.*\S)\s*$")
_TREC_LABEL_ONLY = re.compile(r"^([A-Za-z]+):(\S+)\s*$")


def _error(path: PathLike, line: int | None, problem: str, fix: str) -> DatasetFormatError:
    where = f"{path}, line {line}" if line is not None else f"{path}"
    return DatasetFormatError(f"{where}: {problem}; {fix}")


def _read_lines(path: PathLike) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no data file at {str(path)!r}; give the path of an existing file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # The original TREC files are Latin-1.
        text = raw.decode("latin-1")
    return text.splitlines()


def _finish(
    name: str,
    path: PathLike,
    frame: pd.DataFrame,
    label_column: str,
    template: PromptTemplate | str | None,
    verbalizer: Verbalizer | Mapping | None,
    default_template: str,
    default_verbalizer: Mapping,
    card: str,
    lines: Sequence[int] | None = None,
    missing: MissingMode = "error",
    dropped: DroppedRows | None = None,
) -> Dataset:
    tpl = template if isinstance(template, PromptTemplate) else PromptTemplate(template or default_template)
    verb = verbalizer if isinstance(verbalizer, Verbalizer) else Verbalizer(verbalizer or default_verbalizer)
    absent = [f for f in tpl.fields if f not in frame.columns]
    if absent:
        raise _error(path, None, f"the template needs the field(s) {absent}, which the data does not have "
                     f"(its columns are {list(frame.columns)})", "write the template with those column names")
    frame, lines, dropped_here = settle_missing(frame, tpl.fields, label_column, missing=missing, source=str(path),
                                                lines=lines)
    dropped = dropped or dropped_here
    known = set(verb.classes)
    for i, label in enumerate(frame[label_column]):
        if label not in known:
            line = lines[i] if lines is not None else None
            raise _error(path, line, f"the label {label!r} is not a class of the verbalizer {verb.classes}",
                         "add it to the verbalizer, or drop that row")
    if dropped is not None:
        card += f" {str(dropped).capitalize()}."
    return Dataset(name=name, frame=frame.reset_index(drop=True), fields=list(tpl.fields), label_column=label_column,
                   template=tpl, verbalizer=verb, card=card, source=str(path), dropped=dropped)


def read_sst2(path: PathLike, *, template: PromptTemplate | str | None = None,
              verbalizer: Verbalizer | Mapping | None = None, missing: MissingMode = "error") -> Dataset:
    """SST-2 in "label sentence" lines: ``0`` negative, ``1`` positive.

    A line with a label and no sentence has no text: an error, or dropped with
    ``missing="drop"`` (see :func:`~calibkit.datasets.settle_missing`).

    >>> ds = read_sst2("../shared/data/sst2/dev.txt")      # doctest: +SKIP
    >>> ds.frame.iloc[0].to_dict()                          # doctest: +SKIP
    {'text': 'one long string of cliches .', 'label': 'negative'}
    """
    import pandas as pd

    texts, labels, lines = [], [], []
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        m = _SST2_LINE.match(line)
        if not m and line.strip() in SST2_LABELS:  # a label with no sentence: text missing
            texts.append(None)
            labels.append(SST2_LABELS[line.strip()])
            lines.append(n)
            continue
        if not m:
            raise _error(path, n, f"expected '<label> <sentence>', got {line[:60]!r}",
                         "each SST-2 line is 0 or 1, a space, then the sentence")
        if m.group(1) not in SST2_LABELS:
            raise _error(path, n, f"unknown SST-2 label {m.group(1)!r}",
                         "SST-2 labels are 0 (negative) and 1 (positive); for other labels use "
                         "read_file(path, text_column=..., label_column=...) on a CSV")
        texts.append(m.group(2))
        labels.append(SST2_LABELS[m.group(1)])
        lines.append(n)
    frame = pd.DataFrame({"text": texts, "label": labels})
    card = f"SST-2 sentences read from {path}: {len(frame)} examples, labels 0 negative / 1 positive."
    return _finish(f"sst2:{Path(path).name}", path, frame, "label", template, verbalizer,
                   SST2_TEMPLATE, SST2_VERBALIZER, card, lines, missing)


def _clean_agnews(text: str) -> str:
    # AG News escapes newlines as a backslash and writes entities without '&' (" #36;" for "$").
    text = text.replace("\\", " ")
    text = re.sub(r"(?<!&)#(\d+);", r"&#\1;", text)
    text = re.sub(r"(?<![&\w])(quot|amp|lt|gt);", r"&\1;", text)
    return re.sub(r"\s+", " ", html.unescape(text)).strip()


def read_agnews(path: PathLike, *, clean: bool = True, template: PromptTemplate | str | None = None,
                verbalizer: Verbalizer | Mapping | None = None, missing: MissingMode = "error") -> Dataset:
    """AG News CSV: ``Class Index,Title,Description`` with 1..4 = World, Sports, Business, Sci/Tech.

    The header row is optional (the original files have none). ``clean`` undoes the
    corpus's escapes (``\\`` for a line break, ``#36;`` for ``$``). An empty title or
    description is an error, or dropped with ``missing="drop"``.

    >>> ds = read_agnews("../shared/data/agnews/test.csv")  # doctest: +SKIP
    >>> ds.fields, ds.classes                                # doctest: +SKIP
    (['title', 'description'], ['World', 'Sports', 'Business', 'Sci/Tech'])
    """
    import pandas as pd

    _read_lines(path)  # the existence check, with its message
    rows, lines = [], []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        for row in reader:
            if not row or not any(c.strip() for c in row):
                continue
            if reader.line_num == 1 and row[0].strip().lower() == "class index":
                continue
            if len(row) != 3:
                raise _error(path, reader.line_num, f"expected 3 cells (class index, title, description), got {len(row)}",
                             "quote cells that contain commas; for other layouts use read_file(path, text_column=...)")
            if row[0].strip() not in AGNEWS_LABELS:
                raise _error(path, reader.line_num, f"unknown AG News class index {row[0]!r}",
                             "the class index is 1 (World), 2 (Sports), 3 (Business) or 4 (Sci/Tech)")
            title, description = (row[1], row[2]) if not clean else (_clean_agnews(row[1]), _clean_agnews(row[2]))
            rows.append({"title": title, "description": description, "label": AGNEWS_LABELS[row[0].strip()]})
            lines.append(reader.line_num)
    frame = pd.DataFrame(rows, columns=["title", "description", "label"])
    card = f"AG News read from {path}: {len(frame)} examples, classes World, Sports, Business, Sci/Tech."
    return _finish(f"agnews:{Path(path).name}", path, frame, "label", template,
                   verbalizer, AGNEWS_TEMPLATE, AGNEWS_VERBALIZER, card, lines, missing)


def read_trec(path: PathLike, *, template: PromptTemplate | str | None = None,
              verbalizer: Verbalizer | Mapping | None = None, missing: MissingMode = "error") -> Dataset:
    """TREC question classification: ``COARSE:fine question`` lines.

    The label is the coarse class (ABBR, DESC, ENTY, HUM, LOC, NUM); the fine one is
    kept in the ``fine`` column. A label with no question is an error, or dropped with
    ``missing="drop"``.

    >>> ds = read_trec("TREC_10.label")                     # doctest: +SKIP
    >>> ds.frame.iloc[0].to_dict()                          # doctest: +SKIP
    {'question': 'How did serfdom develop in and then leave Russia ?', 'label': 'DESC', 'fine': 'manner'}
    """
    import pandas as pd

    rows, lines = [], []
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        m = _TREC_LINE.match(line) or _TREC_LABEL_ONLY.match(line)
        if not m:
            raise _error(path, n, f"expected 'COARSE:fine question', got {line[:60]!r}",
                         "each TREC line is a label such as DESC:manner, a space, then the question")
        if m.group(1) not in TREC_VERBALIZER:
            raise _error(path, n, f"unknown TREC coarse class {m.group(1)!r}",
                         f"the coarse classes are {', '.join(TREC_VERBALIZER)}")
        question = m.group(3) if m.re is _TREC_LINE else None  # a label with no question: text missing
        rows.append({"question": question, "label": m.group(1), "fine": m.group(2)})
        lines.append(n)
    frame = pd.DataFrame(rows, columns=["question", "label", "fine"])
    card = f"TREC questions read from {path}: {len(frame)} examples, coarse classes {', '.join(TREC_VERBALIZER)}."
    return _finish(f"trec:{Path(path).name}", path, frame, "label", template, verbalizer,
                   TREC_TEMPLATE, TREC_VERBALIZER, card, lines, missing)


def _json_records(path: PathLike) -> Iterator[tuple[int, dict]]:
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise _error(path, n, f"not valid JSON ({e.msg} at column {e.colno})",
                         "a JSONL file holds one JSON object per line") from None
        if not isinstance(record, dict):
            raise _error(path, n, f"expected a JSON object, got {type(record).__name__}",
                         "a JSONL file holds one JSON object per line")
        yield n, record


def _superglue_task(path: PathLike, labels: Sequence[Any]) -> str:
    """RTE or CB: by the labels where they tell (only CB has contradiction, neutral or 2; only RTE
    not_entailment), else by a folder or file named rte or cb, else RTE."""
    seen = {label for label in labels if isinstance(label, (str, int)) and not isinstance(label, bool)}
    if seen & {"contradiction", "neutral", 2}:
        return "cb"
    if "not_entailment" in seen:
        return "rte"
    parts = {p.lower() for p in Path(path).parts} | {Path(path).stem.lower()}
    hinted = [t for t in SUPERGLUE if t in parts or any(p.startswith(t + "_") or p.startswith(t + "-") for p in parts)]
    return hinted[0] if len(hinted) == 1 else "rte"


def read_superglue(path: PathLike, task: str | None = None, *, template: PromptTemplate | str | None = None,
                   verbalizer: Verbalizer | Mapping | None = None, missing: MissingMode = "error") -> Dataset:
    """SuperGLUE-style JSONL with premise, hypothesis and label: RTE or CB.

    ``task`` is ``"rte"`` (entailment / not_entailment) or ``"cb"`` (entailment /
    contradiction / neutral); by default it is told from the labels (contradiction,
    neutral or index 2 only CB has, not_entailment only RTE), or where they do not
    tell (entailment and indices 0/1 only) from the path (a folder or file named rte
    or cb), else RTE. Integer labels are read as the
    SuperGLUE class indices (RTE: 0 entailment, 1 not_entailment; CB: 0 entailment,
    1 contradiction, 2 neutral). A record with no premise or hypothesis (absent, null,
    blank) or no label (absent, null, -1) is an error, or dropped with ``missing="drop"``;
    a file with no labels at all (a SuperGLUE test file) is always an error.

    >>> ds = read_superglue("../shared/data/rte/val.jsonl")  # doctest: +SKIP
    >>> ds.fields, ds.classes                                 # doctest: +SKIP
    (['premise', 'hypothesis'], ['entailment', 'not_entailment'])
    """
    import pandas as pd

    records = list(_json_records(path))
    if task is None:
        task = _superglue_task(path, [r.get("label") for _, r in records])
    if task not in SUPERGLUE:
        raise ValueError(f"task={task!r} is not a SuperGLUE premise/hypothesis task calibkit reads; use 'rte' or 'cb'")
    labels_of = SUPERGLUE[task]["labels"]
    rows, lines = [], []
    unlabelled = [n for n, r in records if r.get("label") is None or r.get("label") == -1]
    if records and len(unlabelled) == len(records):
        raise _error(path, unlabelled[0], "no label (missing, null or -1)" + (" on any line" if len(records) > 1 else ""),
                     "SuperGLUE test files are unlabelled: use the train or val file")
    for n, r in records:
        for key in ("premise", "hypothesis"):
            if key not in r and missing == "error":
                raise MissingValuesError(f"{path}, line {n}: no {key!r} text (the keys are {sorted(r)})",
                                         f"each {task.upper()} record needs premise, hypothesis and label, or pass "
                                         "missing='drop' to drop the records without them (calibkit's CLI: "
                                         "--drop-missing)", [n], len(records))
            if r.get(key) is not None and not isinstance(r.get(key), str):
                raise _error(path, n, f"the {key!r} is {r[key]!r}, not text",
                             f"each {task.upper()} record needs premise, hypothesis and label")
        label = r.get("label")
        if label is None or label == -1:  # missing: settle_missing (in _finish) reports or drops it
            rows.append({"premise": r.get("premise"), "hypothesis": r.get("hypothesis"), "label": None})
            lines.append(n)
            continue
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(labels_of):
            label = labels_of[label]
        if label not in labels_of:
            raise _error(path, n, f"unknown {task.upper()} label {label!r}",
                         f"the labels are {labels_of} (or their indices); pass task='rte' or 'cb' if the guess was wrong")
        rows.append({"premise": r.get("premise"), "hypothesis": r.get("hypothesis"), "label": label})
        lines.append(n)
    frame = pd.DataFrame(rows, columns=["premise", "hypothesis", "label"])
    spec = SUPERGLUE[task]
    card = f"{task.upper()} read from {path}: {len(frame)} premise/hypothesis pairs, labels {', '.join(labels_of)}."
    return _finish(f"{task}:{Path(path).name}", path, frame, "label", template,
                   verbalizer, spec["template"], spec["verbalizer"], card, lines, missing)


_BAD_FIELD = re.compile(r"[{}\[\].:!]")


def read_file(
    path: PathLike,
    text_column: str | Sequence[str] | None = None,
    label_column: str = "label",
    *,
    format: str | None = None,
    template: PromptTemplate | str | None = None,
    verbalizer: Verbalizer | Mapping | None = None,
    label_names: Mapping[Any, Hashable] | Sequence[Hashable] | None = None,
    missing: MissingMode = "error",
) -> Dataset:
    """Any CSV, TSV or JSONL file with named text and label columns.

    ``text_column`` is one column or several (a multi-field template); by default the
    ``text`` or ``sentence`` column. ``label_names`` renames raw labels (``{0:
    "negative", 1: "positive"}``, or a list indexed by the label). Without a
    ``verbalizer`` each class's form is a space and its name; without a ``template``
    each field gets a line (``Review: {review}``) and the prompt ends in ``Answer:``.

    An empty or blank text cell, a null, or an empty label is an error naming the
    file, the column and the lines; ``missing="drop"`` drops those rows instead and
    says how many (a :class:`~calibkit.datasets.MissingValuesWarning`, and ``ds.dropped``).

    >>> ds = read_file("reviews.csv", text_column="review", label_column="stars",
    ...                verbalizer={"1": " bad", "5": " great"})  # doctest: +SKIP
    >>> import tempfile, pathlib, warnings
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.csv"
    >>> _ = p.write_text("text,label\\ngood,pos\\n,neg\\nbad,neg\\n")
    >>> read_file(p)                                      # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    calibkit.datasets._dataset.MissingValuesError: ...r.csv, line 3: empty 'text' (1 of 3 rows); ...
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     ds = read_file(p, missing="drop")
    >>> len(ds), str(ds.dropped)
    (2, 'dropped 1 of 3 rows with no text or label (line 3)')
    """
    import pandas as pd

    fmt = format or ("jsonl" if Path(path).suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv")
    if fmt not in ("csv", "tsv", "jsonl"):
        raise ValueError(f"read_file reads format 'csv', 'tsv' or 'jsonl', not {fmt!r}; see read_path for the others")
    if fmt == "jsonl":
        records = list(_json_records(path))
        lines = [n for n, _ in records]
        frame = pd.DataFrame([r for _, r in records])
    else:
        _read_lines(path)
        sep = "\t" if fmt == "tsv" or Path(path).suffix.lower() == ".tsv" else ","
        try:
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            raise _error(path, None, "the file is empty: no header and no rows",
                         "give a file with a header line naming the columns and a row per example") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise _error(path, None, f"not a well-formed {'TSV' if sep == chr(9) else 'CSV'} file ({e})",
                         "quote cells that contain the separator or line breaks") from None
        lines = csv_row_lines(path, len(frame), sep)
    if not len(frame):
        what = "the file is empty" if fmt == "jsonl" else f"only a header ({', '.join(map(str, frame.columns))})"
        raise _error(path, None, f"no rows: {what}", "give a row per example")
    columns = list(frame.columns)
    if text_column is None and template is not None:
        text_column = (template if isinstance(template, PromptTemplate) else PromptTemplate(template)).fields
    if text_column is None:
        found = [c for c in ("text", "sentence") if c in columns]
        if not found:
            raise _error(path, None, f"no 'text' or 'sentence' column (the columns are {columns})",
                         "pass text_column= naming the column (or columns) that hold the text")
        text_column = found[0]
    fields = [text_column] if isinstance(text_column, str) else list(text_column)
    for col in fields + [label_column]:
        if col not in columns:
            which = "label_column" if col == label_column else "text_column"
            raise _error(path, None, f"no column {col!r} (the columns are {columns})", f"pass {which}= naming one of them")
    for col in fields:
        if template is None and _BAD_FIELD.search(col):
            raise _error(path, None, f"the column name {col!r} cannot be a template field",
                         "pass template= with a renamed field, or rename the column")
    frame = frame[fields + [label_column] + [c for c in columns if c not in fields and c != label_column]].copy()
    tpl_fields = [] if template is None else \
        (template if isinstance(template, PromptTemplate) else PromptTemplate(template)).fields
    frame, lines, dropped = settle_missing(frame, fields + [f for f in tpl_fields if f not in fields], label_column,
                                           missing=missing, source=str(path), lines=lines)
    for col in fields:
        for i, value in enumerate(frame[col]):
            if not isinstance(value, str):
                raise _error(path, lines[i], f"{col!r} is {value!r}, not text", f"give every row its {col} as a string")
    if label_names is not None:
        mapping = dict(enumerate(label_names)) if not isinstance(label_names, Mapping) else dict(label_names)
        by_str = {str(k): v for k, v in mapping.items()}
        renamed = []
        for i, value in enumerate(frame[label_column]):
            if value in mapping:
                renamed.append(mapping[value])
            elif str(value) in by_str:
                renamed.append(by_str[str(value)])
            else:
                raise _error(path, lines[i], f"the label {value!r} is not in label_names {list(mapping)}",
                             "add it to label_names, or drop that row")
        frame[label_column] = renamed
    classes = sorted(set(frame[label_column]), key=str)
    if verbalizer is None and len(classes) < 2:
        raise _error(path, None, f"the column {label_column!r} holds {len(classes)} distinct label(s): {classes}",
                     "a classifier needs at least two classes; check label_column=")
    default_template = "\n".join(f"{c[:1].upper()}{c[1:]}: {{{c}}}" for c in fields) + "\nAnswer:"
    default_verbalizer = {c: f" {c}" for c in classes}
    card = f"Read from {path}: {len(frame)} examples, text {fields}, labels from {label_column!r}."
    return _finish(f"{Path(path).stem}", path, frame, label_column, template, verbalizer,
                   default_template, default_verbalizer, card, lines, missing, dropped)


def _labels_of_jsonl(path: PathLike) -> Iterator[Any]:
    """The label of each record that parses (the reader reports the lines that do not)."""
    for line in _read_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield record.get("label")


def infer_format(path: PathLike) -> str:
    """The format of a file, from its extension and first line (one of :data:`FORMATS`).

    A SuperGLUE premise/hypothesis JSONL file is ``cb`` or ``rte`` by its labels (see
    :func:`read_superglue`).

    >>> import json, tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     p = pathlib.Path(folder) / "val.jsonl"
    ...     _ = p.write_text(json.dumps({"premise": "It rained.", "hypothesis": "It was dry.", "label": "contradiction"}))
    ...     infer_format(p)
    'cb'
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no data file at {str(path)!r}; give the path of an existing file")
    suffix = p.suffix.lower()
    first = next((line for line in _read_lines(p) if line.strip()), "")
    if suffix in (".jsonl", ".json", ".ndjson"):
        try:
            record = json.loads(first)
        except json.JSONDecodeError:
            return "jsonl"
        if isinstance(record, dict) and {"premise", "hypothesis"} <= set(record):
            return _superglue_task(p, list(_labels_of_jsonl(p)))
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "agnews" if first.lower().startswith("class index,title,description") else "csv"
    m = _SST2_LINE.match(first)
    if m and m.group(1) in SST2_LABELS:
        return "sst2"
    m = _TREC_LINE.match(first)
    if m and m.group(1) in TREC_VERBALIZER:
        return "trec"
    raise DatasetFormatError(
        f"{path}: cannot tell its format from the name or the first line {first[:60]!r}; "
        f"pass format= one of {list(FORMATS)}"
    )


def read_path(path: PathLike, format: str | None = None, **options: Any) -> Dataset:
    """Read a data file in any of :data:`FORMATS`, inferred from its name and first line unless given.

    ``options`` go to the reader (``text_column=``, ``label_column=``, ``template=``,
    ``verbalizer=``, ...).

    >>> read_path("../shared/data/rte/val.jsonl").name     # doctest: +SKIP
    'rte:val.jsonl'
    """
    fmt = (format or infer_format(path)).lower()
    if fmt == "sst2":
        return read_sst2(path, **options)
    if fmt == "agnews":
        return read_agnews(path, **options)
    if fmt == "trec":
        return read_trec(path, **options)
    if fmt in ("rte", "cb"):
        return read_superglue(path, task=fmt, **options)
    if fmt == "superglue":
        return read_superglue(path, **options)
    if fmt in ("csv", "tsv", "jsonl"):
        return read_file(path, format=fmt, **options)
    raise ValueError(f"format={format!r} is not one calibkit reads; use one of {list(FORMATS)}")
