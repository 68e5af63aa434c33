"""Data sets: the small ones calibkit ships, public benchmark files, and the Hugging Face hub.

Each bundled set is a folder of the repository's top-level ``datasets/`` (shipped in
the wheel as ``calibkit/datasets/bundled/``): ``data.csv``, its card ``README.md`` and
the ``make.py`` that wrote it. The card's front matter gives the prompt template,
verbalizer, text fields, label column, license and source (see
:mod:`calibkit.datasets.cards`); its prose says how the data was made, its size and
label balance. :func:`load_dataset` also reads files in the public formats (SST-2, AG
News, TREC, RTE/CB JSONL, any CSV/JSONL; see :mod:`calibkit.datasets.formats`), a
folder with a card, and ``hf:<name>`` through the ``datasets`` library.

>>> from calibkit.datasets import load_dataset, list_datasets
>>> list_datasets()
['sentiment', 'topic', 'truefalse']
>>> ds = load_dataset("sentiment")
>>> len(ds.frame), ds.fields, ds.verbalizer.classes
(300, ['text'], ['negative', 'positive'])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._dataset import (
    MISSING_MODES,
    Dataset,
    DatasetFormatError,
    DroppedRows,
    MissingMode,
    MissingValuesError,
    MissingValuesWarning,
    settle_missing,
)
from .cards import CARD_FILE, load_card_folder, read_card
from .formats import FORMATS, read_agnews, read_file, read_path, read_sst2, read_superglue, read_trec
from .hf import HFUnavailableError, load_hf

__all__ = [
    "FORMATS",
    "MISSING_MODES",
    "Dataset",
    "DatasetFormatError",
    "DroppedRows",
    "HFUnavailableError",
    "MissingValuesError",
    "MissingValuesWarning",
    "bundled_root",
    "list_datasets",
    "load_card_folder",
    "load_dataset",
    "read_agnews",
    "read_card",
    "read_file",
    "read_sst2",
    "read_superglue",
    "read_trec",
    "settle_missing",
]


_HERE = Path(__file__).resolve().parent
# Where the bundled sets are: inside the installed package (a wheel maps the repository's
# datasets/ folder to calibkit/datasets/bundled, see pyproject.toml), else the datasets/
# folder of the source checkout this package sits in (an editable install, or the
# repository on sys.path).
_PACKAGED = _HERE / "bundled"
_CHECKOUT = _HERE.parents[1]


def bundled_root() -> Path:
    """The folder that holds the bundled data sets, one sub-folder each.

    >>> (bundled_root() / "sentiment" / "data.csv").is_file()
    True
    """
    places = [_PACKAGED]
    if (_CHECKOUT / "pyproject.toml").is_file():  # not site-packages, whose datasets/ is Hugging Face's
        places.append(_CHECKOUT / "datasets")
    for place in places:
        if place.is_dir() and any((d / CARD_FILE).is_file() for d in place.iterdir()):
            return place
    raise FileNotFoundError(
        f"calibkit's bundled data sets are missing: looked in {[str(p) for p in places]}; reinstall calibkit "
        "(its wheel carries them in calibkit/datasets/bundled), or restore the checkout's datasets/ folder"
    )


def list_datasets() -> list[str]:
    """Names of the bundled data sets: the folders of :func:`bundled_root` that hold a card.

    >>> "topic" in list_datasets()
    True
    """
    return sorted(d.name for d in bundled_root().iterdir() if (d / CARD_FILE).is_file())


def load_dataset(name: str | os.PathLike, *, format: str | None = None, missing: MissingMode = "error",
                 **options: Any) -> Dataset:
    """A data set by bundled name, file path, or ``hf:<name>``.

    - a bundled name (see :func:`list_datasets`): ``load_dataset("topic")``;
    - a folder with a card (``README.md`` with front matter) and ``data.csv``, as the
      bundled ones are (see :func:`calibkit.datasets.cards.load_card_folder`);
    - a file: ``load_dataset("../shared/data/sst2/dev.txt")``, the format inferred from
      the extension and first line, or given as ``format=`` (one of :data:`FORMATS`);
      ``options`` go to the reader (``text_column=``, ``label_column=``,
      ``template=``, ``verbalizer=``, ``label_names=``);
    - ``hf:<name>``: through the Hugging Face ``datasets`` library, with ``config=``,
      ``split=`` and the same options (see :func:`calibkit.datasets.hf.load_hf`).

    Rows with no text (an empty or blank cell, a null) or no label are found as the
    data is read: with ``missing="error"`` (the default) a :class:`MissingValuesError`
    names the file, the column and the lines; ``missing="drop"`` drops them, warns
    (:class:`MissingValuesWarning`) how many, and ``ds.dropped`` says which.

    >>> load_dataset("truefalse").label_counts()
    {'false': 200, 'true': 200}
    >>> load_dataset("truefalse", missing="drop").dropped is None   # nothing to drop
    True
    """
    if missing not in MISSING_MODES:
        raise ValueError(f"missing must be 'error' (rows with no text or label are an error) or 'drop' (drop "
                         f"them, saying how many), not {missing!r}")
    text = os.fspath(name)
    if text.startswith("hf:"):
        config = options.pop("config", None)
        return load_hf(text[3:], config, missing=missing, **options)
    bundled = list_datasets()
    if text in bundled and format is None and not options:
        return load_card_folder(bundled_root() / text, source="bundled", missing=missing)
    path = Path(text)
    if path.is_file():
        return read_path(text, format=format, missing=missing, **options)
    card_folder = path.is_dir() and (path / CARD_FILE).is_file()
    if card_folder and format is None and not options:
        return load_card_folder(path, missing=missing)
    if text in bundled or card_folder:
        what = f"the bundled data set {text!r}" if text in bundled else f"the data-set folder {text!r}"
        raise TypeError(f"{what} takes no options (got {sorted(options) + (['format'] if format else [])}); "
                        "its card sets them: change ds.template or ds.verbalizer after loading")
    raise KeyError(
        f"no bundled data set or file {text!r}; the bundled ones are {bundled}, a file path must exist "
        f"(a folder needs its card, {CARD_FILE}, and data.csv), and Hugging Face data sets are named 'hf:<name>'"
    )
