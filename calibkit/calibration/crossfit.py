"""Cross-fitted calibration: fit on folds, predict out of fold.

A calibrator fitted and evaluated on the same labelled set looks better than
it is. :func:`cross_val_calibrate` gives every example a calibrated
probability from a calibrator that never saw it (for honest metrics on one
labelled set); :class:`CrossFitCalibration` is the estimator form, like
scikit-learn's ``CalibratedClassifierCV``, predicting new data with the mean
of the fold calibrators (or one refitted on everything).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.model_selection import check_cv
from sklearn.utils.validation import check_array, check_is_fitted

from ..arrays import check_columns, check_y, resolve_classes


def _with_classes(calibrator: Any, classes: np.ndarray) -> Any:
    """A clone whose unset ``classes`` parameters (nested ones too, as in a Pipeline) are filled."""
    est = clone(calibrator)
    unset = {k: list(classes) for k, v in est.get_params(deep=True).items()
             if (k == "classes" or k.endswith("__classes")) and v is None}
    return est.set_params(**unset)


def _folds(calibrator: Any, X: Any, y: Any, cv: Any, classes: Any):
    scores_classes = None if isinstance(X, np.ndarray) else getattr(X, "classes", None)
    # -inf is a legitimate log-score; the calibrator validates the rest per fold.
    X = check_array(X, dtype=np.float64, ensure_all_finite=False)
    if np.isnan(X).any() or np.isposinf(X).any():
        raise ValueError("X contains NaN or +inf; class scores must be finite (or -inf log-scores).")
    check_columns(X)
    y = check_y(y, len(X))
    if classes is None:
        classes = calibrator.get_params().get("classes")
    classes_, _ = resolve_classes(y, X.shape[1], classes, scores_classes)
    splits = list(check_cv(cv, y, classifier=True).split(X, y))
    return X, y, classes_, splits


def cross_val_calibrate(
    calibrator: Any, X: Any, y: Any, *, cv: Any = 5, classes: Any = None
) -> np.ndarray:
    """Out-of-fold calibrated probabilities (n×K) for every row of X.

    Parameters
    ----------
    calibrator : estimator
        Any calibrator here, or a Pipeline of them; it is cloned per fold.
    X : array-like of shape (n, K)
        Class scores, of the kind the calibrator's ``input`` states.
    y : array-like of shape (n,)
    cv : int or splitter, default 5
        As in scikit-learn (an int is stratified k-fold, unshuffled; pass
        ``StratifiedKFold(5, shuffle=True, random_state=0)`` to shuffle).
    classes : sequence, optional
        Label of each column; defaults to the calibrator's ``classes``, the
        scores' own (LabelScores) or the distinct labels of y. Every fold's
        calibrator gets them, so a fold missing a class still has its column.

    Examples
    --------
    >>> import numpy as np
    >>> from calibkit.calibration import TemperatureScaling, cross_val_calibrate
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 3)) * 3
    >>> y = (X + rng.gumbel(size=X.shape)).argmax(1)   # drawn from softmax(X)
    >>> cross_val_calibrate(TemperatureScaling(), X, y, cv=5).shape
    (100, 3)
    """
    X, y, classes_, splits = _folds(calibrator, X, y, cv, classes)
    out = np.empty(X.shape)
    for train, test in splits:
        est = _with_classes(calibrator, classes_).fit(X[train], y[train])
        out[test] = est.predict_proba(X[test])
    return out


class CrossFitCalibration(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Fit a calibrator on cross-validation folds; keep the out-of-fold predictions.

    Parameters
    ----------
    calibrator : estimator
        The calibrator (or Pipeline) to cross-fit.
    cv : int or splitter, default 5
    ensemble : bool, default True
        Predict new data with the mean of the fold calibrators' probabilities
        (as ``CalibratedClassifierCV(ensemble=True)``), else with one
        calibrator refitted on all rows.
    classes : sequence, optional
        As in :func:`cross_val_calibrate`.

    Attributes
    ----------
    calibrators_ : list of fitted calibrators, one per fold
    oof_proba_ : ndarray of shape (n, K)
        Out-of-fold probabilities of the training rows.
    calibrator_ : fitted calibrator (``ensemble=False`` only)
    classes_ : ndarray of shape (K,)

    Examples
    --------
    >>> import numpy as np
    >>> from calibkit.calibration import CrossFitCalibration, TemperatureScaling
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 3)) * 3
    >>> y = (X + rng.gumbel(size=X.shape)).argmax(1)
    >>> cf = CrossFitCalibration(TemperatureScaling(), cv=4).fit(X, y)
    >>> len(cf.calibrators_), cf.oof_proba_.shape
    (4, (100, 3))
    """

    def __init__(self, calibrator: Any, *, cv: Any = 5, ensemble: bool = True, classes: Any = None) -> None:
        self.calibrator = calibrator
        self.cv = cv
        self.ensemble = ensemble
        self.classes = classes

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = self.calibrator.__sklearn_tags__()
        tags.input_tags = inner.input_tags
        tags.classifier_tags = inner.classifier_tags
        return tags

    def fit(self, X: Any, y: Any) -> CrossFitCalibration:
        """Fit one calibrator per fold and record out-of-fold probabilities."""
        X, y, self.classes_, splits = _folds(self.calibrator, X, y, self.cv, self.classes)
        self.calibrators_ = []
        self.oof_proba_ = np.empty(X.shape)
        for train, test in splits:
            est = _with_classes(self.calibrator, self.classes_).fit(X[train], y[train])
            self.oof_proba_[test] = est.predict_proba(X[test])
            self.calibrators_.append(est)
        if not self.ensemble:
            self.calibrator_ = _with_classes(self.calibrator, self.classes_).fit(X, y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated probabilities (n×K)."""
        check_is_fitted(self)
        if not self.ensemble:
            return self.calibrator_.predict_proba(X)
        return np.mean([est.predict_proba(X) for est in self.calibrators_], axis=0)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class label for each row."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
