"""Conformal prediction sets over any calibrator's probabilities, by MAPIE, and how well they cover.

:func:`conformal_sets` fits MAPIE's split-conformal classifier (``SplitConformalClassifier``,
``prefit=True``) on labelled calibration rows and returns, for each new row, the set of
classes that contains the true one with probability at least ``1 - alpha``. That holds
on average over calibration sets exchangeable with the new rows, and it is at most
``1 - alpha + 1 / (n_cal + 1)`` for LAC. The probabilities can come from any source: a
calibrator's ``predict_proba``, ``LabelScores.probs``, another tool. MAPIE sees them
through a prefit estimator whose input rows are those probabilities
(:class:`PrefitProbabilities`), so no code of ours computes a quantile.

Conformity scores: ``"lac"`` (least ambiguous set-valued classifier, Sadinle et al.
2019), ``"aps"`` (adaptive prediction sets, Romano et al. 2020) and ``"raps"``
(regularised APS, Angelopoulos et al. 2021), for three classes or more. ``"aps"`` and
``"raps"`` include each set's last class at random (MAPIE's ``"randomized"``), so that
they cover 1 - alpha rather than more; pass ``random_state`` to repeat a result.

:func:`coverage` (with a Clopper-Pearson interval), :func:`mean_set_size` and
:func:`size_stratified_coverage` measure the sets. ``LogprobClassifier`` also works with
MAPIE as it is (``SplitConformalClassifier(LogprobClassifier(...), prefit=True)``).

>>> import numpy as np
>>> from calibkit import conformal
>>> rng = np.random.default_rng(0)
>>> p = rng.dirichlet([1, 1, 1], size=400)
>>> y = np.array([rng.choice(3, p=row) for row in p])                 # p is calibrated
>>> sets = conformal.conformal_sets(p[:200], y[:200], p[200:], alpha=0.1)
>>> sets.shape, sets.dtype
((200, 3), dtype('bool'))
>>> bool(0.8 < conformal.coverage(y[200:], sets).estimate < 1.0)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta
from sklearn.base import BaseEstimator, ClassifierMixin

from .metrics import check_labels_probs

__all__ = ["METHODS", "Coverage", "PrefitProbabilities", "conformal_sets", "coverage", "mean_set_size",
           "size_stratified_coverage"]

METHODS = ("lac", "aps", "raps")


class PrefitProbabilities(ClassifierMixin, BaseEstimator):
    """A fitted classifier whose input rows are class probabilities already: MAPIE's prefit estimator
    over any calibrator's output. Column ``j`` of a row is the probability of ``classes[j]``.

    >>> PrefitProbabilities([0, 1]).fit().predict_proba([[0.2, 0.8]])
    array([[0.2, 0.8]])
    """

    def __init__(self, classes: Any = (0, 1)):
        self.classes = classes

    def fit(self, X: Any = None, y: Any = None) -> "PrefitProbabilities":
        self.classes_ = np.asarray(list(self.classes))
        self.n_features_in_ = len(self.classes_)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.asarray(X, dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(np.asarray(X, dtype=np.float64), axis=1)]


def conformal_sets(p_cal: Any, y_cal: Any, p: Any, *, alpha: float = 0.1, method: str = "lac",
                   classes: Any = None, input: str = "probs", random_state: int | None = None) -> np.ndarray:
    """Prediction sets for the rows of ``p``, calibrated on ``(p_cal, y_cal)``: an n×K boolean mask.

    ``y_cal`` holds column indices, or labels with ``classes`` (as in :mod:`calibkit.metrics`);
    ``input`` says whether ``p_cal`` and ``p`` are probabilities or log-scores.

    >>> conformal_sets([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 1, 1], [[0.85, 0.15], [0.5, 0.5]], alpha=0.5).tolist()
    [[True, False], [False, False]]

    LAC's sets may be empty, where no class is likely enough: the model is unsure of every one.
    """
    try:
        from mapie.classification import SplitConformalClassifier
    except ImportError as e:
        raise ImportError("conformal sets are MAPIE's: pip install 'calibkit[conformal]'") from e
    if method not in METHODS:
        raise ValueError(f"method={method!r}; use one of {', '.join(map(repr, METHODS))}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1): the sets miss the truth at most that often (got {alpha})")
    y_idx, p_cal = check_labels_probs(y_cal, p_cal, input, classes)
    p_new = check_labels_probs(np.zeros(len(np.atleast_2d(p)), dtype=int), p, input, None)[1]
    if p_new.shape[1] != p_cal.shape[1]:
        raise ValueError(f"p has {p_new.shape[1]} columns and p_cal {p_cal.shape[1]}; give both the same classes")
    k = p_cal.shape[1]
    if (n := len(y_idx)) < int(np.ceil(1 / alpha)) - 1:
        raise ValueError(f"{n} calibration rows cannot give a set that covers with probability 1 - alpha = "
                         f"{1 - alpha:g}: give at least {int(np.ceil(1 / alpha)) - 1}, or raise alpha")
    if method != "lac" and len(np.unique(y_idx)) <= 2:
        raise ValueError(f"method={method!r} needs calibration rows of three classes or more (MAPIE takes only "
                         "'lac' for two); use method='lac'")
    estimator = PrefitProbabilities(range(k)).fit()
    mapie = SplitConformalClassifier(estimator, confidence_level=1 - alpha, conformity_score=method, prefit=True,
                                     random_state=random_state)
    mapie.conformalize(p_cal, y_idx)
    # APS and RAPS include a set's last class at random, so that coverage is 1 - alpha, not more
    params = None if method == "lac" else {"include_last_label": "randomized"}
    _, sets = mapie.predict_set(p_new, conformity_score_params=params)
    return np.asarray(sets[:, :, 0], dtype=bool)


@dataclass(frozen=True)
class Coverage:
    """How often the sets hold the true class, with a Clopper-Pearson interval at ``level``."""

    estimate: float
    low: float
    high: float
    level: float
    n: int


def _hits(y: Any, sets: Any, classes: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(sets, dtype=bool)
    if s.ndim != 2:
        raise ValueError(f"sets must be an n×K boolean mask (got shape {s.shape})")
    y_idx, _ = check_labels_probs(y, np.full(s.shape, 1.0 / s.shape[1]), "probs", classes)
    return s[np.arange(len(y_idx)), y_idx], s.sum(axis=1)


def coverage(y: Any, sets: Any, *, classes: Any = None, level: float = 0.95) -> Coverage:
    """The share of rows whose set holds the true class, with an exact (Clopper-Pearson) interval.

    >>> c = coverage([0, 1, 1], [[True, False], [True, True], [True, False]])
    >>> round(c.estimate, 3), c.n
    (0.667, 3)
    """
    hit, _ = _hits(y, sets, classes)
    n, k = len(hit), int(hit.sum())
    a = 1 - level
    low = float(beta.ppf(a / 2, k, n - k + 1)) if k > 0 else 0.0
    high = float(beta.ppf(1 - a / 2, k + 1, n - k)) if k < n else 1.0
    return Coverage(k / n, low, high, level, n)


def mean_set_size(sets: Any) -> float:
    """The average number of classes in a set (1 for a sure classifier; K where it knows nothing).

    >>> mean_set_size([[True, False], [True, True]])
    1.5
    """
    return float(np.asarray(sets, dtype=bool).sum(axis=1).mean())


def size_stratified_coverage(y: Any, sets: Any, *, classes: Any = None) -> dict[int, tuple[float, int]]:
    """Coverage by set size: ``{size: (coverage, rows)}``. Sets of one size that cover much less than
    1 - alpha show where the guarantee holds only on average (Angelopoulos et al. 2021).

    >>> size_stratified_coverage([0, 1, 1], [[True, False], [True, True], [True, False]])
    {1: (0.5, 2), 2: (1.0, 1)}
    """
    hit, size = _hits(y, sets, classes)
    return {int(s): (float(hit[size == s].mean()), int((size == s).sum())) for s in np.unique(size)}
