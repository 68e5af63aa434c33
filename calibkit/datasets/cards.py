"""Data-set cards: a ``README.md`` whose front matter gives what a loader needs.

A bundled data set is a folder holding ``data.csv``, its card ``README.md`` and the
script that wrote it. The card begins with front matter between two ``---`` lines:

.. code-block:: yaml

    ---
    template: "Review: {text}\\nSentiment:"
    fields: ["text"]
    label_column: label
    verbalizer:
      negative: " negative"
      positive: " positive"
    license: CC0-1.0
    source: written for calibkit by make.py in this folder
    ---

The reader is deliberately small and strict (no YAML library): a line is ``key:
value`` or, for a mapping, ``key:`` followed by indented ``key: value`` lines, one
level deep; ``#`` lines are comments. A value (or key) that starts with ``"``, ``[``
or ``{`` is JSON, so ``"\\n"`` is a line break and a leading space is kept; any other
value is the plain text to the end of the line. Everything written this way is also
valid YAML.

>>> card = parse_card('---\\nlabel_column: label\\nverbalizer:\\n  "no": " No"\\n---\\n# notes\\n')
>>> card.meta
{'label_column': 'label', 'verbalizer': {'no': ' No'}}
>>> card.require("verbalizer", dict)
{'no': ' No'}
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..templates import PromptTemplate, Verbalizer
from ._dataset import Dataset, DatasetFormatError, MissingMode, csv_row_lines, settle_missing

__all__ = [
    "CARD_FILE", "CARD_KEYS", "DATA_FILE", "Card", "load_card_folder", "parse_card", "read_card", "write_data_csv",
]

CARD_FILE = "README.md"
DATA_FILE = "data.csv"

# The keys every card's front matter must give, with what each holds (for the error messages).
CARD_KEYS: dict[str, str] = {
    "template": 'the prompt template, a JSON string: template: "Review: {text}\\nSentiment:"',
    "fields": 'the text column(s) the template fills, a JSON list: fields: ["text"]',
    "label_column": "the column of data.csv that holds the labels: label_column: label",
    "verbalizer": 'a mapping from each class to its form(s), one indented line each:   positive: " positive"',
    "license": "the data's license: license: CC0-1.0",
    "source": "where the data came from: source: written by make.py in this folder",
}

_KINDS = {str: "non-empty text", list: "a non-empty list", dict: "a non-empty mapping"}


@dataclass
class Card:
    """A card file: its front matter (``meta``) and its whole text.

    >>> Card("x/README.md", {"license": "CC0-1.0"}).require("license")
    'CC0-1.0'
    """

    path: str
    meta: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    def require(self, key: str, kind: type = str) -> Any:
        """The value of ``key``, which must be there and be of ``kind`` (str, list or dict).

        >>> Card("x/README.md", {}).require("license")
        Traceback (most recent call last):
        ...
        calibkit.datasets._dataset.DatasetFormatError: x/README.md: the front matter has no 'license' key; ...
        """
        hint = CARD_KEYS.get(key, f"{key}: ...")
        if key not in self.meta:
            raise DatasetFormatError(f"{self.path}: the front matter has no {key!r} key; add it between the "
                                     f"--- lines ({hint})")
        value = self.meta[key]
        if not isinstance(value, kind) or (kind is not str and not value) or (kind is str and not value.strip()):
            raise DatasetFormatError(f"{self.path}: the front matter's {key!r} is {value!r}, not "
                                     f"{_KINDS.get(kind, kind.__name__)}; write it as {hint}")
        return value


def _scalar(text: str, where: str, key: str) -> Any:
    if text[:1] in ('"', "[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetFormatError(f"{where}: the value of {key!r} is not valid JSON ({e.msg} at column "
                                     f"{e.colno}); a value that starts with a quote or bracket is read as JSON, "
                                     'as in "Review: {text}\\nSentiment:" or ["text"]') from None
    return text


def _split_key(line: str, where: str) -> tuple[str, str]:
    """``key: value`` -> (key, value); the key may be a JSON string (for keys such as "true" or with a colon)."""
    if line.startswith('"'):
        try:
            key, end = json.JSONDecoder().raw_decode(line)
        except json.JSONDecodeError:
            raise DatasetFormatError(f"{where}: a quoted key is not a valid JSON string: {line!r}") from None
        rest = line[end:]
    else:
        key, sep, rest = line.partition(":")
        key = key.strip()
        rest = sep + rest
        if not sep or not key:
            raise DatasetFormatError(f"{where}: expected 'key: value', got {line!r}")
    if not rest.startswith(":") or (len(rest) > 1 and not rest[1].isspace()):
        raise DatasetFormatError(f"{where}: expected 'key: value' (a colon and a space after the key), got {line!r}")
    return key, rest[1:].strip()


def parse_card(text: str, path: str | os.PathLike = "<card>") -> Card:
    """Read a card's front matter (between the first two ``---`` lines) into a :class:`Card`.

    Errors name the file and line and say how to write it.

    >>> parse_card('---\\ntemplate: "Q: {q}\\\\nA:"\\nfields: ["q"]\\n---\\n').meta
    {'template': 'Q: {q}\\nA:', 'fields': ['q']}
    >>> parse_card("# no front matter\\n", "x/README.md")
    Traceback (most recent call last):
    ...
    calibkit.datasets._dataset.DatasetFormatError: x/README.md: no front matter: ...
    """
    where = os.fspath(path)
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise DatasetFormatError(f"{where}: no front matter: a card begins with a line '---', then 'key: value' "
                                 f"lines ({', '.join(CARD_KEYS)}), then another '---' line")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise DatasetFormatError(f"{where}: the front matter is not closed; end it with a line '---'") from None
    meta: dict[str, Any] = {}
    mapping_key: str | None = None  # the top-level key whose indented lines are being read
    for n in range(1, end):
        line = lines[n]
        at = f"{where}, line {n + 1}"
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise DatasetFormatError(f"{at}: indent with spaces, not tabs")
        indented = line[:1] == " "
        key, value = _split_key(line.strip(), at)
        if indented:
            if mapping_key is None:
                raise DatasetFormatError(f"{at}: an indented line {line.strip()!r} outside a mapping; indent only "
                                         "the lines under a 'key:' that has no value on its own line")
            target = meta[mapping_key]
            if not value:
                raise DatasetFormatError(f"{at}: {key!r} under {mapping_key!r} has no value; mappings are one level deep")
            full = f"{mapping_key}.{key}"
        else:
            target, full = meta, key
            mapping_key = None
        if key in target:
            raise DatasetFormatError(f"{at}: {full!r} is given twice; keep one")
        if not value:  # "key:" alone opens a mapping
            target[key] = {}
            mapping_key = key
        else:
            target[key] = _scalar(value, at, full)
    return Card(path=where, meta=meta, text=text)


def read_card(path: str | os.PathLike) -> Card:
    """Read a card file (UTF-8) with :func:`parse_card`.

    >>> from calibkit.datasets import bundled_root
    >>> read_card(bundled_root() / "topic" / "README.md").require("license")
    'CC0-1.0'
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no card at {str(p)!r}; a data-set folder holds its card as {CARD_FILE}")
    return parse_card(p.read_text(encoding="utf-8"), p)


def load_card_folder(folder: str | os.PathLike, *, name: str | None = None, source: str | None = None,
                     missing: MissingMode = "error") -> Dataset:
    """A :class:`Dataset` from a folder holding ``README.md`` (the card) and ``data.csv``.

    The template, verbalizer, text fields and label column come from the card's front
    matter, which must also give the license and source; labels are read as strings.
    Rows with an empty text field or label are an error naming the lines, or dropped
    with ``missing="drop"`` (see :func:`~calibkit.datasets.settle_missing`).

    >>> from calibkit.datasets import bundled_root
    >>> ds = load_card_folder(bundled_root() / "truefalse")
    >>> ds.name, ds.fields, ds.label_column, ds.classes
    ('truefalse', ['text'], 'label', ['false', 'true'])
    """
    folder = Path(folder)
    card = read_card(folder / CARD_FILE)
    template = card.require("template", str)
    fields = card.require("fields", list)
    label_column = card.require("label_column", str)
    verbalizer = card.require("verbalizer", dict)
    card.require("license", str)
    card.require("source", str)
    try:
        tpl = PromptTemplate(template)
    except ValueError as e:
        raise DatasetFormatError(f"{card.path}: the front matter's 'template' cannot be used ({e}); fix it "
                                 f"there ({CARD_KEYS['template']})") from None
    if fields != list(tpl.fields):
        raise DatasetFormatError(f"{card.path}: the front matter's 'fields' {fields} are not the fields of its "
                                 f"template {list(tpl.fields)}; list the template's fields, in order")
    for cls, forms in verbalizer.items():
        if not (isinstance(forms, str) or (isinstance(forms, list) and forms and all(isinstance(f, str) for f in forms))):
            raise DatasetFormatError(f"{card.path}: the verbalizer's form for {cls!r} is {forms!r}; give a JSON "
                                     f'string (" positive") or a list of them ([" positive", " good"])')
    data = folder / DATA_FILE
    if not data.is_file():
        raise FileNotFoundError(f"no {DATA_FILE} beside the card {card.path!r}; a data-set folder holds its data there")
    import pandas as pd

    # As text: "true"/"false" labels would otherwise turn into booleans.
    frame = pd.read_csv(data, dtype=str, keep_default_na=False)
    absent = [c for c in fields + [label_column] if c not in frame.columns]
    if absent:
        raise DatasetFormatError(f"{data}: no column(s) {absent} (the columns are {list(frame.columns)}); fix "
                                 f"'fields' or 'label_column' in {card.path}")
    frame, _, dropped = settle_missing(frame, fields, label_column, missing=missing, source=str(data),
                                       lines=csv_row_lines(data, len(frame)))
    try:
        verb = Verbalizer(verbalizer)
    except ValueError as e:
        raise DatasetFormatError(f"{card.path}: the front matter's 'verbalizer' cannot be used ({e}); fix it "
                                 "there") from None
    unknown = sorted(set(frame[label_column]) - set(verb.classes))
    if unknown:
        raise DatasetFormatError(f"{data}: the label(s) {unknown} are not classes of the verbalizer in {card.path} "
                                 f"{verb.classes}; add them to its 'verbalizer'")
    return Dataset(name=name or folder.name, frame=frame, fields=list(tpl.fields), label_column=label_column,
                   template=tpl, verbalizer=verb, card=card.text, source=source or str(folder), dropped=dropped)


def write_data_csv(folder: str | os.PathLike, rows: list[dict], fields: list[str]) -> Path:
    r"""Write a bundled set's ``rows`` to ``folder``/data.csv, as its make.py does.

    csv's own dialect (comma, CRLF line ends), UTF-8; returns the path written.

    >>> import tempfile
    >>> path = write_data_csv(tempfile.mkdtemp(), [{"text": "a, b", "label": "x"}], ["text", "label"])
    >>> path.read_bytes()
    b'text,label\r\n"a, b",x\r\n'
    """
    out = Path(folder) / DATA_FILE
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return out
