"""Data sets: the small ones calibkit ships, public benchmark files, and the Hugging Face hub.

Each bundled set is a CSV beside this file with a card (``<name>.md``) that says how
it was made, its size, label balance and license, and the prompt template and
verbalizer it is meant to be scored with. :func:`load_dataset` also reads files in the
public formats (SST-2, AG News, TREC, RTE/CB JSONL, any CSV/JSONL; see
:mod:`calibkit.datasets.formats`) and ``hf:<name>`` through the ``datasets`` library.

>>> from calibkit.datasets import load_dataset, list_datasets
>>> list_datasets()
['sentiment', 'topic', 'truefalse']
>>> ds = load_dataset("sentiment")
>>> len(ds.frame), ds.fields, ds.verbalizer.classes
(300, ['text'], ['negative', 'positive'])
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from ..templates import PromptTemplate, Verbalizer
from ._dataset import Dataset, DatasetFormatError
from .formats import FORMATS, read_agnews, read_file, read_path, read_sst2, read_superglue, read_trec
from .hf import HFUnavailableError, load_hf

__all__ = [
    "FORMATS",
    "Dataset",
    "DatasetFormatError",
    "HFUnavailableError",
    "list_datasets",
    "load_dataset",
    "read_agnews",
    "read_file",
    "read_sst2",
    "read_superglue",
    "read_trec",
]


_BUNDLED: dict[str, dict[str, Any]] = {
    "sentiment": {
        "fields": ["text"],
        "template": "Review: {text}\nSentiment:",
        "verbalizer": {"negative": " negative", "positive": " positive"},
    },
    "topic": {
        "fields": ["text"],
        "template": "News: {text}\nCategory:",
        "verbalizer": {"World": " World", "Sports": " Sports", "Business": " Business", "Sci/Tech": " Technology"},
    },
    "truefalse": {
        "fields": ["text"],
        "template": "Statement: {text}\nTrue or false?\nAnswer:",
        "verbalizer": {"false": " False", "true": " True"},
    },
}


def list_datasets() -> list[str]:
    """Names of the bundled data sets."""
    return sorted(_BUNDLED)


def _load_bundled(name: str) -> Dataset:
    spec = _BUNDLED[name]
    here = resources.files(__package__)
    # As text: "true"/"false" labels would otherwise turn into booleans.
    frame = pd.read_csv(here.joinpath(f"{name}.csv").open(encoding="utf-8"), dtype=str, keep_default_na=False)
    card = here.joinpath(f"{name}.md").read_text(encoding="utf-8")
    return Dataset(
        name=name,
        frame=frame,
        fields=list(spec["fields"]),
        label_column="label",
        template=PromptTemplate(spec["template"]),
        verbalizer=Verbalizer(spec["verbalizer"]),
        card=card,
        source="bundled",
    )


def load_dataset(name: str | os.PathLike, *, format: str | None = None, **options: Any) -> Dataset:
    """A data set by bundled name, file path, or ``hf:<name>``.

    - a bundled name (see :func:`list_datasets`): ``load_dataset("topic")``;
    - a file: ``load_dataset("../shared/data/sst2/dev.txt")``, the format inferred from
      the extension and first line, or given as ``format=`` (one of :data:`FORMATS`);
      ``options`` go to the reader (``text_column=``, ``label_column=``,
      ``template=``, ``verbalizer=``, ``label_names=``);
    - ``hf:<name>``: through the Hugging Face ``datasets`` library, with ``config=``,
      ``split=`` and the same options (see :func:`calibkit.datasets.hf.load_hf`).

    >>> load_dataset("truefalse").label_counts()
    {'false': 200, 'true': 200}
    """
    text = os.fspath(name)
    if text.startswith("hf:"):
        config = options.pop("config", None)
        return load_hf(text[3:], config, **options)
    if text in _BUNDLED and format is None and not options:
        return _load_bundled(text)
    if Path(text).is_file():
        return read_path(text, format=format, **options)
    if text in _BUNDLED:
        raise TypeError(f"the bundled data set {text!r} takes no options (got {sorted(options)}); "
                        "change ds.template or ds.verbalizer after loading")
    raise KeyError(
        f"no bundled data set or file {text!r}; the bundled ones are {list_datasets()}, a file path must exist, "
        "and Hugging Face data sets are named 'hf:<name>'"
    )
