"""The n×K score arrays and label vectors that the statistics modules take: their checks, and
the row blocks their passes run in.

Calibrators (:mod:`calibkit.calibration`) and metrics (:mod:`calibkit.metrics`) check
their input here, so a bad array gets the same message naming the parameter and the fix
wherever it goes in.

Example
-------
>>> import numpy as np
>>> from calibkit.arrays import as_float_array, check_input_kind, resolve_classes
>>> as_float_array([[0.2, 0.8]], "p").dtype, check_input_kind("logprobs")
(dtype('float64'), 'logprobs')
>>> classes_, y_idx = resolve_classes(["pos", "neg", "pos"], 2)
>>> classes_.tolist(), y_idx.tolist()
(['neg', 'pos'], [1, 0, 1])
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils import column_or_1d
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight

__all__ = [
    "INPUT_KINDS", "ROW_BLOCK", "as_float_array", "check_columns", "check_input_kind", "check_sample_weight",
    "check_y", "resolve_classes", "row_max",
]

#: What an n×K score matrix may hold, said with ``input=``: log-scores (logits) or probabilities.
INPUT_KINDS = ("logprobs", "probs")


def check_input_kind(input: str, name: str = "X") -> str:
    """``input`` if it is a score kind, else a ValueError saying what ``name`` may hold.

    >>> check_input_kind("probs")
    'probs'
    """
    if input not in INPUT_KINDS:
        raise ValueError(
            f"input={input!r} is not a score kind; say what {name} holds with "
            f"input='logprobs' (log-scores, logits) or input='probs' (probabilities)."
        )
    return input


def check_columns(X: np.ndarray, name: str = "X") -> None:
    """A ValueError naming ``name`` unless the 2-D ``X`` has a column per class, at least two.

    >>> check_columns(np.zeros((3, 1)))
    Traceback (most recent call last):
    ...
    ValueError: X has 1 feature(s) (columns) but needs one column per class and at least 2 classes.
    """
    if X.shape[1] < 2:
        raise ValueError(
            f"{name} has {X.shape[1]} feature(s) (columns) but needs one column per "
            f"class and at least 2 classes."
        )


def as_float_array(a: Any, name: str) -> np.ndarray:
    """``a`` as a float64 array, or a ValueError naming ``name`` when it is not numeric.

    >>> as_float_array([[1, 2]], "p").dtype
    dtype('float64')
    >>> as_float_array([["a", "b"]], "p")
    Traceback (most recent call last):
    ...
    ValueError: p must hold numbers (class scores); numpy cannot read it as floats: could not convert ...
    """
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must hold numbers (class scores); numpy cannot read it as floats: {e}") from None


#: Rows per block of the blocked passes over an n×K array: a block and its scratch stay in a core's L2 cache.
ROW_BLOCK = 8192


def row_max(block: np.ndarray) -> np.ndarray:
    """The largest entry of each row (NaN where a row has one).

    ``block.max(axis=1)`` runs one short inner loop per row, about four times slower
    for K around 10 than reducing the transposed copy column by column.
    """
    return np.maximum.reduce(block.T.copy(), axis=0)


def _as_classes(classes: Any, n_columns: int) -> np.ndarray:
    classes_ = np.asarray(classes)
    if classes_.ndim != 1 or len(classes_) != n_columns:
        raise ValueError(
            f"classes has {classes_.size} label(s) but X has {n_columns} columns; "
            f"give exactly one label per column of X, in column order."
        )
    if len(np.unique(classes_)) != n_columns:
        raise ValueError("classes has duplicate labels; each column needs its own label.")
    return classes_


def _all_in(values: np.ndarray, labels: list) -> bool:
    try:
        return bool(np.isin(values, np.asarray(labels)).all())
    except TypeError:  # labels of incomparable types
        return False


def _column_indices(y: np.ndarray, n_columns: int) -> bool:
    """Whether every label is a whole number in 0..n_columns-1 (ints, or floats like 1.0)."""
    if y.dtype.kind not in "iubf" or not y.size:
        return False
    return bool(y.min() >= 0 and y.max() < n_columns and (y.dtype.kind != "f" or np.all(y == np.round(y))))


def resolve_classes(
    y: Any, n_columns: int, classes: Any = None, scores_classes: Any = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return ``(classes_, y encoded as column indices or None)``.

    The label of each column comes from the first rule that applies:

    1. ``classes``, given by the caller;
    2. the score matrix's own names (the core's LabelScores has ``.classes``),
       when every label in ``y`` is one of them;
    3. whole-number labels that all lie in ``0..K-1`` are column indices
       (``classes_ = [0, ..., K-1]``), the convention of calibkit.metrics;
    4. the sorted distinct labels of ``y``, when there is one per column.

    Otherwise it refuses rather than guess which column is which label.
    """
    y_arr = None if y is None else np.asarray(y)
    if classes is not None:
        classes_ = _as_classes(classes, n_columns)
    elif scores_classes is not None and (y_arr is None or _all_in(y_arr, list(scores_classes))):
        classes_ = _as_classes(list(scores_classes), n_columns)
    elif y_arr is None or _column_indices(y_arr, n_columns):
        classes_ = np.arange(n_columns)
    else:
        present = np.unique(y_arr)
        if len(present) != n_columns:
            raise ValueError(
                f"y has {len(present)} distinct label(s) {present.tolist()[:10]} but X has "
                f"{n_columns} columns, so which column is which label is unknown; pass "
                f"classes=[label of column 0, label of column 1, ...] (integer labels "
                f"0..{n_columns - 1} are taken as column indices)."
            )
        classes_ = present
    if y is None:
        return classes_, None
    if (
        y_arr.dtype.kind in "iu"
        and classes_.dtype.kind in "iu"
        and np.array_equal(classes_, np.arange(n_columns))
        and y_arr.size
        and y_arr.min() >= 0
        and y_arr.max() < n_columns
    ):
        return classes_, y_arr.astype(np.intp, copy=False)  # labels are the column indices
    try:
        order = np.argsort(classes_, kind="stable")
        sorted_classes = classes_[order]
        pos = np.searchsorted(sorted_classes, y)
    except TypeError as exc:
        raise ValueError(f"labels in y are not comparable with classes {classes_.tolist()}") from exc
    pos = np.clip(pos, 0, n_columns - 1)
    unknown = sorted_classes[pos] != y
    if np.any(unknown):
        bad = np.unique(np.asarray(y)[unknown]).tolist()[:10]
        raise ValueError(
            f"y has label(s) {bad} that are not among the classes {classes_.tolist()}; "
            f"pass classes= listing the label of every column of X."
        )
    return classes_, order[pos]


def check_y(y: Any, n_samples: int) -> np.ndarray:
    """``y`` as a 1-D array of class labels, one per row of an ``n_samples``-row X (ValueError if not).

    >>> check_y(["b", "a"], 2).tolist()
    ['b', 'a']
    """
    y = column_or_1d(y, warn=True)
    check_classification_targets(y)
    if len(y) != n_samples:
        raise ValueError(f"y has {len(y)} labels but X has {n_samples} rows; give one label per row.")
    return y


def check_sample_weight(sample_weight: Any, X: np.ndarray) -> np.ndarray:
    """Non-negative weights, one per row of ``X``, with some positive (ValueError if not).

    >>> check_sample_weight([0, 2], np.zeros((2, 3))).tolist()
    [0.0, 2.0]
    """
    sample_weight = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
    if not sample_weight.sum() > 0:
        raise ValueError("sample_weight sums to zero; give some rows positive weight.")
    return sample_weight
