"""Data sets: the small ones calibkit ships, loaded by name.

Each bundled set is a CSV beside this file with a card (``<name>.md``) that says how
it was made, its size, label balance and license, and the prompt template and
verbalizer it is meant to be scored with.

>>> from calibkit.datasets import load_dataset
>>> ds = load_dataset("sentiment")
>>> len(ds.frame), ds.fields, ds.verbalizer.classes
(300, ['text'], ['negative', 'positive'])
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import pandas as pd

from ..templates import PromptTemplate, Verbalizer

__all__ = ["Dataset", "list_datasets", "load_dataset"]


@dataclass
class Dataset:
    """A labelled data set with the template and verbalizer meant for it."""

    name: str
    frame: pd.DataFrame
    fields: list[str]
    label_column: str
    template: PromptTemplate
    verbalizer: Verbalizer
    card: str = ""

    @property
    def X(self) -> Any:
        """The examples: the text column, or the field columns for a multi-field template."""
        return self.frame[self.fields[0]] if len(self.fields) == 1 else self.frame[self.fields]

    @property
    def y(self) -> Any:
        return self.frame[self.label_column].to_numpy()


_BUNDLED: dict[str, dict[str, Any]] = {
    "sentiment": {
        "fields": ["text"],
        "template": "Review: {text}\nSentiment:",
        "verbalizer": {"negative": " negative", "positive": " positive"},
    },
}


def list_datasets() -> list[str]:
    """Names of the bundled data sets."""
    return sorted(_BUNDLED)


def load_dataset(name: str) -> Dataset:
    """A bundled data set by name (see :func:`list_datasets`)."""
    if name not in _BUNDLED:
        raise KeyError(f"no bundled data set {name!r}; the bundled ones are {list_datasets()}")
    spec = _BUNDLED[name]
    here = resources.files(__package__)
    frame = pd.read_csv(here.joinpath(f"{name}.csv").open(encoding="utf-8"))
    card = here.joinpath(f"{name}.md").read_text(encoding="utf-8")
    return Dataset(
        name=name,
        frame=frame,
        fields=list(spec["fields"]),
        label_column="label",
        template=PromptTemplate(spec["template"]),
        verbalizer=Verbalizer(spec["verbalizer"]),
        card=card,
    )
