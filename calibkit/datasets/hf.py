"""Data sets from the Hugging Face ``datasets`` library, when it is installed.

``load_dataset("hf:stanfordnlp/sst2", split="validation")`` reads through
``datasets.load_dataset`` (its cache, its downloads), turns class-index labels into
their names and returns a :class:`~calibkit.datasets.Dataset`. Without the library,
or offline without a cached copy, it raises :class:`HFUnavailableError` saying why
and what to do.

>>> from calibkit.datasets import load_dataset
>>> ds = load_dataset("hf:stanfordnlp/sst2", split="validation")   # doctest: +SKIP
>>> ds.classes                                                     # doctest: +SKIP
['negative', 'positive']
"""

from __future__ import annotations

import importlib
from typing import Any, Hashable, Mapping, Sequence

from ..templates import PromptTemplate, Verbalizer
from ._dataset import Dataset, MissingMode, settle_missing

__all__ = ["HFUnavailableError", "load_hf"]

_SPLIT_PREFERENCE = ("validation", "test", "train")


class HFUnavailableError(RuntimeError):
    """The Hugging Face ``datasets`` library is missing, or cannot reach the Hub (offline)."""


_INSTALL = ("install it with `pip install 'calibkit[hf]'` (or `pip install datasets`), or read a local file "
            "instead: its path in place of 'hf:<name>', with its text and label columns named")


def _import_datasets() -> Any:
    try:
        module = importlib.import_module("datasets")
    except ImportError as e:
        raise HFUnavailableError(
            f"reading 'hf:' data sets needs the Hugging Face `datasets` library, which is not installed ({e}); "
            + _INSTALL
        ) from None
    if not callable(getattr(module, "load_dataset", None)):
        # Without the library, `import datasets` can find a plain folder of that name on sys.path (a
        # namespace package), such as calibkit's own bundled data sets at the top of a source checkout.
        where = list(getattr(module, "__path__", None) or []) or getattr(module, "__file__", None)
        raise HFUnavailableError(
            "reading 'hf:' data sets needs the Hugging Face `datasets` library, which is not installed: "
            f"`import datasets` found {where} instead, which has no load_dataset; " + _INSTALL
        )
    return module


def _is_offline(exc: BaseException) -> bool:
    """Whether an exception from ``datasets`` means the Hub could not be reached."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = f"{type(exc).__name__} {exc}"
        if isinstance(exc, (ConnectionError, TimeoutError)) or any(
            s in text for s in ("Couldn't reach", "OfflineModeIsEnabled", "LocalEntryNotFoundError",
                                "Name or service not known", "Temporary failure in name resolution",
                                "ConnectTimeout", "ConnectError", "Max retries exceeded")
        ):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def load_hf(
    name: str,
    config: str | None = None,
    *,
    split: str | None = None,
    text_column: str | Sequence[str] | None = None,
    label_column: str = "label",
    template: PromptTemplate | str | None = None,
    verbalizer: Verbalizer | Mapping | None = None,
    missing: MissingMode = "error",
    **load_options: Any,
) -> Dataset:
    """A split of a Hugging Face data set (``name`` without the ``hf:`` prefix).

    ``split`` defaults to validation, else test, else train. Class-index labels
    become their names from the data set's features; ``text_column`` defaults to
    ``text``/``sentence``, or ``premise`` and ``hypothesis`` where both are present.
    Rows with an empty or null text field or label are an error naming them (by
    position, from 0), or dropped with ``missing="drop"``. Other keyword arguments go
    to ``datasets.load_dataset``.
    """
    hf = _import_datasets()
    try:
        loaded = hf.load_dataset(name, config, **load_options) if split is None else \
            hf.load_dataset(name, config, split=split, **load_options)
    except Exception as e:
        if _is_offline(e):
            raise HFUnavailableError(
                f"could not reach the Hugging Face Hub for {name!r} and it is not in the local cache ({e}); "
                "run once with a network connection to cache it (set HF_HUB_OFFLINE=1 afterwards to use the "
                "cache without trying the network), or read a local copy with load_dataset('path/to/file')"
            ) from e
        raise
    if split is None:
        available = list(loaded.keys())
        split = next((s for s in _SPLIT_PREFERENCE if s in available), available[0])
        loaded = loaded[split]
    features = getattr(loaded, "features", {}) or {}
    if hasattr(loaded, "to_pandas"):
        frame = loaded.to_pandas()
    else:
        import pandas as pd

        frame = pd.DataFrame(list(loaded))
    columns = list(frame.columns)
    if label_column not in columns:
        raise ValueError(f"hf:{name} ({split}) has no column {label_column!r} (the columns are {columns}); "
                         "pass label_column= naming the label column")
    names: list[str] | None = getattr(features.get(label_column), "names", None) if hasattr(features, "get") else None
    if names:
        unlabelled = frame[label_column] < 0
        if unlabelled.all():
            raise ValueError(f"hf:{name} split {split!r} has no labels (all -1): pick a labelled split with split=")
        frame = frame[~unlabelled].copy()
        frame[label_column] = [names[i] for i in frame[label_column]]
    if text_column is None:
        if template is not None:
            text_column = (template if isinstance(template, PromptTemplate) else PromptTemplate(template)).fields
        elif {"premise", "hypothesis"} <= set(columns):
            text_column = ["premise", "hypothesis"]
        else:
            found = [c for c in ("text", "sentence", "question") if c in columns]
            if not found:
                raise ValueError(f"hf:{name} has no 'text' or 'sentence' column (the columns are {columns}); "
                                 "pass text_column= naming the text column(s)")
            text_column = found[0]
    fields = [text_column] if isinstance(text_column, str) else list(text_column)
    for col in fields:
        if col not in columns:
            raise ValueError(f"hf:{name} has no column {col!r} (the columns are {columns}); pass text_column=")
    tpl = template if isinstance(template, PromptTemplate) else PromptTemplate(
        template or "\n".join(f"{c[:1].upper()}{c[1:]}: {{{c}}}" for c in fields) + "\nAnswer:")
    full = f"hf:{name}" + (f"/{config}" if config else "")
    frame, _, dropped = settle_missing(frame.reset_index(drop=True), fields + [f for f in tpl.fields if f not in fields],
                                       label_column, missing=missing, source=f"{full} ({split})")
    classes: list[Hashable] = list(names) if names else sorted(set(frame[label_column]), key=str)
    verb = verbalizer if isinstance(verbalizer, Verbalizer) else Verbalizer(
        verbalizer or {c: f" {c}" for c in classes})
    return Dataset(name=f"{full}:{split}", frame=frame.reset_index(drop=True), fields=list(tpl.fields),
                   label_column=label_column, template=tpl, verbalizer=verb,
                   card=f"{full}, split {split}, read through the Hugging Face datasets library: {len(frame)} examples.",
                   source=full, dropped=dropped)
