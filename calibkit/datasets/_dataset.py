"""The Dataset record every loader returns, and the error for bad input files."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..templates import PromptTemplate, Verbalizer

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Dataset", "DatasetFormatError"]


class DatasetFormatError(ValueError):
    """A data file that cannot be read as asked: the message names the file, the line and the fix."""


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

    def label_counts(self) -> dict[Any, int]:
        """How many examples each class has, in class order."""
        counts = self.frame[self.label_column].value_counts()
        return {c: int(counts.get(c, 0)) for c in self.verbalizer.classes}
