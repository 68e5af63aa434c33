"""The shared estimator base of every calibrator: all of a calibrator's checking happens here
(with the checks of :mod:`calibkit.arrays`), so each calibrator's ``_fit`` starts from
validated, row-normalised log-probabilities.

Input convention (stated, never guessed): ``X`` is an n×K matrix of class
scores, one column per class. ``input="logprobs"`` means unnormalised
log-scores (log P(class | prompt) from a language model, or logits): rows need
not sum to one in probability space and may hold ``-inf`` for a class the model
gives no mass. ``input="probs"`` means non-negative scores, also renormalised
per row. Either way the identity calibration is "renormalise the row".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from ..arrays import (
    ROW_BLOCK,
    as_float_array,
    check_columns,
    check_input_kind,
    check_sample_weight,
    check_y,
    resolve_classes,
    row_max,
)

#: Renormalised log-probabilities are floored here (probability 1e-12, the
#: ``eps`` that scikit-learn's temperature scaling adds to probabilities), so
#: that an example whose true class got no mass (``-inf``) costs a large but
#: finite loss instead of making every fit infinite.
LOG_FLOOR = float(np.log(1e-12))


def _check_scores(X: Any, input: str, name: str) -> np.ndarray:
    """``X`` as a validated float array of the stated kind (see :func:`to_log_proba`)."""
    check_input_kind(input, name)
    X = as_float_array(X, name)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D n×K array of class scores (one column per class); "
            f"got an array of shape {X.shape}. Reshape it, e.g. {name}.reshape(-1, K)."
        )
    check_columns(X, name)
    # One sum is much cheaper than isnan/isinf passes and is finite exactly when
    # every entry is (barring overflow, which the slow path below sorts out).
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf, or overflow: the slow path decides
        all_finite = bool(np.isfinite(X.sum()))
    if all_finite:
        return X
    if np.isnan(X).any():
        raise ValueError(f"{name} contains NaN; drop or impute those rows before calibrating.")
    if input == "probs":
        if np.isinf(X).any():
            raise ValueError(f"{name} contains inf; probabilities must be finite and >= 0.")
    else:
        if np.isposinf(X).any():
            raise ValueError(
                f"{name} contains +inf; log-probabilities must be finite or -inf "
                f"(a class with no mass)."
            )
        dead = np.isneginf(X).all(axis=1)
        if dead.any():
            raise ValueError(
                f"{name} has {int(dead.sum())} row(s) that are -inf for every class; "
                f"every row needs a finite score for at least one class."
            )
    return X


def to_log_proba(X: Any, input: str, *, name: str = "X", floor: bool = True) -> np.ndarray:
    """Validate an n×K score matrix of the stated kind; return row-normalised log-probs.

    Raises ValueError naming ``name`` for NaN, +inf, negative probabilities, rows
    without any mass and arrays that are not 2-D with at least two columns.
    """
    X = _check_scores(X, input, name)
    if input == "probs":
        if (X < 0).any():
            raise ValueError(
                f"Negative values in data: {name} has negative entries but input='probs'; pass probabilities "
                f"(>= 0), or input='logprobs' if these are log-scores or logits."
            )
        with np.errstate(over="ignore"):  # a sum past 1.8e308 is handled below
            totals = X.sum(axis=1)
        if (totals <= 0).any():
            raise ValueError(
                f"{name} has {int((totals <= 0).sum())} row(s) whose probabilities are "
                f"all zero; every row needs mass on at least one class."
            )
        if not np.isfinite(totals).all():  # huge scores: scale each row by its largest first
            X = X / X.max(axis=1, keepdims=True)
            totals = X.sum(axis=1)
        with np.errstate(divide="ignore"):
            out = np.log(X / totals[:, None])
    else:
        out = log_softmax(X, axis=1)
    if floor:
        np.maximum(out, LOG_FLOOR, out=out)
    return out


def to_shifted_log_scores(X: Any, input: str, *, name: str = "X", floor: bool = True) -> np.ndarray:
    """Validate like :func:`to_log_proba`; return the log-probs shifted so each row's max is 0, as float32.

    They equal ``to_log_proba(X, input, floor=floor)`` up to one constant per row
    (the row's log-normaliser) and float32 rounding, with the same entries floored.
    For a loss that a per-row shift leaves unchanged, this skips the renormalising
    exp/log passes and holds half the memory.
    """
    if input == "probs":
        X = to_log_proba(X, input, name=name, floor=floor)
        floor = False  # done: to_log_proba floored the normalised values
    else:
        X = _check_scores(X, input, name)
    n, k = X.shape
    out = np.empty((n, k), dtype=np.float32)
    # An entry at least this far above the floor is never floored (the normaliser is at most log K).
    never_floored = LOG_FLOOR + np.log(k)
    for start in range(0, n, ROW_BLOCK):
        block = X[start : start + ROW_BLOCK]
        top = row_max(block)
        shifted = out[start : start + ROW_BLOCK]
        with np.errstate(over="ignore"):  # below float32's range is -inf, far under the floor
            np.subtract(block, top[:, None], out=shifted, casting="same_kind")
        if floor and shifted.min() < never_floored:
            # Floor at LOG_FLOOR relative to each row's normaliser log S, as to_log_proba does.
            rows = np.flatnonzero(shifted.min(axis=1) < never_floored)
            d = block[rows] - top[rows, None]
            log_norm = np.log(np.exp(d).sum(axis=1))
            shifted[rows] = np.maximum(d, (LOG_FLOOR + log_norm)[:, None])
    return out


class BaseCalibrator(ClassifierMixin, BaseEstimator):
    """Shared boundary of every calibrator: validation, classes_, predict*.

    Subclasses set ``self`` up in ``_fit(logp, y_idx, sample_weight)`` from the
    validated, row-normalised log-probabilities (or, with ``_fit_shift_invariant``,
    log-scores shifted so each row's max is 0) and the labels encoded as column
    indices (``None`` where labels are optional and absent), and map log-probs to
    calibrated log-probs in ``_calibrate(logp)``.
    """

    _requires_y = True
    #: Whether the log-probabilities are floored at LOG_FLOOR for fitting, and for predicting.
    #: A calibrator whose map keeps -inf at -inf (temperature: -inf / T; prior corrections:
    #: a zero stays zero) predicts from the exact values, so a class with no mass keeps none.
    _floor_fit = True
    _floor_predict = True
    #: Whether the fit's loss is unchanged by adding a constant to a row: then ``_fit`` gets
    #: the log-scores shifted so each row's max is 0, as float32 (to_shifted_log_scores),
    #: instead of renormalised float64 log-probs.
    _fit_shift_invariant = False

    def __init__(self, *, input: str = "logprobs", classes: Any = None) -> None:
        self.input = input
        self.classes = classes

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.positive_only = self.input == "probs"
        tags.target_tags.required = self._requires_y
        return tags

    def _check_array(self, X: Any, *, reset: bool) -> np.ndarray:
        check_input_kind(self.input)
        shape = getattr(X, "shape", None)
        if shape is None and isinstance(X, (list, tuple)):
            try:
                shape = np.shape(X)
            except ValueError:  # ragged rows: scikit-learn's own message says so
                shape = None
        if shape is not None and len(shape) != 2:
            raise ValueError(
                f"X must be a 2-D n×K array of class scores (one column per class); got "
                f"shape {tuple(shape)}. Reshape your data: a single row is np.reshape(X, (1, -1))."
            )
        return validate_data(self, X, reset=reset, dtype=np.float64, ensure_all_finite=False)

    def _log_proba(self, X: np.ndarray, *, floor: bool = True) -> np.ndarray:
        return to_log_proba(X, self.input, floor=floor)

    def _check_targets(self, y: np.ndarray) -> None:
        """Hook for calibrators that restrict the labels (PlattScaling)."""

    def _validate_X(self, X: Any, *, reset: bool) -> np.ndarray:
        return self._log_proba(self._check_array(X, reset=reset), floor=self._floor_predict)

    def _validate_fit(self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None):
        scores_classes = getattr(X, "classes", None) if not isinstance(X, np.ndarray) else None
        X = self._check_array(X, reset=True)
        if y is None and self._requires_y:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: "
                f"call fit(X, y) with one label per row."
            )
        if y is not None:
            y = check_y(y, X.shape[0])
            if self._requires_y and not (y[1:] != y[0]).any():  # one pass, not a sort
                given = self.classes is not None or classes is not None or scores_classes is not None
                raise ValueError(
                    f"y holds 1 class only ({np.unique(y).tolist()}); {type(self).__name__} needs "
                    f"calibration labels of at least 2 classes to learn from: add examples of "
                    f"another class to X and y"
                    + ("." if given else " (and list every column's label in classes=).")
                )
            self._check_targets(y)
        if self._fit_shift_invariant:
            logp = to_shifted_log_scores(X, self.input, floor=self._floor_fit)
        else:
            logp = self._log_proba(X, floor=self._floor_fit)
        classes = self.classes if classes is None else classes
        self.classes_, y_idx = resolve_classes(y, logp.shape[1], classes, scores_classes)
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, logp)
        return logp, y_idx, sample_weight

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> BaseCalibrator:
        """Fit the calibrator on an n×K score matrix X and labels y.

        Returns the fitted calibrator.
        """
        logp, y_idx, sample_weight = self._validate_fit(X, y, sample_weight)
        # The fits make many small BLAS calls (matrix-vector products, L-BFGS
        # steps); a multi-threaded OpenBLAS spins on each, and on a busy
        # two-core machine that was measured 10-50x slower than one thread.
        with threadpool_limits(limits=1, user_api="blas"):
            self._fit(logp, y_idx, sample_weight)
        return self

    def _fit(self, logp: np.ndarray, y_idx: np.ndarray | None, sample_weight: np.ndarray | None):
        raise NotImplementedError

    def _calibrate(self, logp: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Calibrated log-probabilities, n×K, columns in the order of ``classes_``."""
        check_is_fitted(self)
        return self._calibrate(self._validate_X(X, reset=False))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated probabilities, n×K; each row sums to one."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class label for each row."""
        log_proba = self.predict_log_proba(X)
        return self.classes_[np.argmax(log_proba, axis=1)]
