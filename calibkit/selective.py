"""Selective prediction: answer where the model is sure enough, abstain elsewhere, and know the error of the answers.

An example is accepted where its *signal* is at least a threshold. By default the
signal is the top-label probability (confidence). Any score where higher means surer
can stand in for it, such as the label mass: how much probability the model put on
the label set at all (:attr:`calibkit.LabelScores.label_mass`).

- :func:`risk_coverage`: the risk-coverage curve's data (the error rate among the
  accepted, against the share accepted, one point per distinct threshold), apart from
  drawing it;
- :func:`aurc` and :func:`excess_aurc`: the area under that curve, and its excess over
  an oracle that accepts the same examples' correct answers first (Geifman et al. 2019);
- :func:`accuracy_at_coverage`: the accuracy of the surest ``coverage`` share;
- :func:`select_threshold`: the loosest threshold whose error among the accepted is
  below ``target_error`` with probability at least ``1 - delta`` (Clopper-Pearson
  bounds in a binary search, Geifman & El-Yaniv 2017).

``y`` and ``p`` follow :mod:`calibkit.metrics`'s conventions (``input``, ``classes``).

>>> import numpy as np
>>> from calibkit import selective
>>> y = np.array([0, 1, 1, 0, 1])
>>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.45, 0.55]])
>>> curve = selective.risk_coverage(y, p)
>>> curve.coverage.tolist(), curve.risk.round(3).tolist()
([0.2, 0.4, 0.6, 0.8, 1.0], [0.0, 0.0, 0.0, 0.25, 0.2])
>>> round(selective.aurc(y, p), 3), round(selective.accuracy_at_coverage(y, p, 0.6), 3)
(0.09, 1.0)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta

from .metrics import checked_top_label_hits

__all__ = [
    "RiskCoverage",
    "SelectiveThreshold",
    "accuracy_at_coverage",
    "aurc",
    "excess_aurc",
    "risk_coverage",
    "select_threshold",
]


@dataclass(frozen=True)
class RiskCoverage:
    """The risk-coverage curve: at each distinct ``threshold`` (strictest first), the share of
    examples whose signal reaches it (``coverage``) and the error rate among them (``risk``)."""

    threshold: np.ndarray
    coverage: np.ndarray
    risk: np.ndarray
    #: examples accepted and errors among them, at each threshold
    accepted: np.ndarray
    errors: np.ndarray


@dataclass(frozen=True)
class SelectiveThreshold:
    """What :func:`select_threshold` chose, and on what evidence.

    ``threshold`` is ``inf`` where no threshold passed (abstain on everything).
    """

    threshold: float
    target_error: float
    delta: float
    #: on the calibration examples: the share accepted, the error among them, and its upper bound
    coverage: float
    error: float
    upper_bound: float

    def accept(self, signal: Any) -> np.ndarray:
        """Which examples to answer: those whose signal reaches the threshold."""
        return np.asarray(signal, dtype=np.float64) >= self.threshold


def _hits_and_signal(y: Any, p: Any, signal: Any, input: str, classes: Any) -> tuple[np.ndarray, np.ndarray]:
    conf, hit = checked_top_label_hits(y, p, input, classes)
    if signal is None:
        return hit, conf
    s = np.asarray(signal, dtype=np.float64)
    if s.shape != conf.shape:
        raise ValueError(f"signal must have one value per example ({conf.shape[0]}); got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("signal contains NaN; give every example a value (higher: surer)")
    return hit, s


def risk_coverage(y: Any, p: Any, *, signal: Any = None, input: str = "probs", classes: Any = None) -> RiskCoverage:
    """The risk-coverage curve of accepting the examples whose ``signal`` (default: confidence) is highest.

    >>> c = risk_coverage([0, 1], [[0.9, 0.1], [0.6, 0.4]])
    >>> c.threshold.tolist(), c.risk.tolist()
    ([0.9, 0.6], [0.0, 0.5])
    """
    hit, s = _hits_and_signal(y, p, signal, input, classes)
    order = np.argsort(-s, kind="stable")
    s, err = s[order], 1.0 - hit[order]
    # one point per distinct threshold: the last of each run of equal signals
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    accepted = last + 1
    errors = np.cumsum(err)[last]
    return RiskCoverage(s[last], accepted / len(s), errors / accepted, accepted, errors)


def aurc(y: Any, p: Any, *, signal: Any = None, input: str = "probs", classes: Any = None) -> float:
    """The area under the risk-coverage curve (a step curve; lower is better).

    >>> aurc([0, 1], [[0.9, 0.1], [0.6, 0.4]])
    0.25
    """
    c = risk_coverage(y, p, signal=signal, input=input, classes=classes)
    return float(np.sum(np.diff(c.coverage, prepend=0.0) * c.risk))


def excess_aurc(y: Any, p: Any, *, signal: Any = None, input: str = "probs", classes: Any = None) -> float:
    """:func:`aurc` less the oracle's: the same errors, accepted last. 0 is a perfect ranking.

    >>> excess_aurc([0, 1], [[0.9, 0.1], [0.6, 0.4]])
    0.0
    """
    c = risk_coverage(y, p, signal=signal, input=input, classes=classes)
    n, e = int(c.accepted[-1]), int(round(c.errors[-1]))
    k = np.arange(1, n + 1)
    oracle = float(np.sum(np.maximum(0, k - (n - e)) / k) / n)
    return float(np.sum(np.diff(c.coverage, prepend=0.0) * c.risk)) - oracle


def accuracy_at_coverage(y: Any, p: Any, coverage: float, *, signal: Any = None, input: str = "probs",
                         classes: Any = None) -> float:
    """The accuracy among the surest ``coverage`` share of the examples (at least one example).

    Examples tied at the cut are taken in their order, as a threshold cannot split them.

    >>> accuracy_at_coverage([0, 1, 1], [[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]], 2 / 3)
    0.5
    """
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1] (got {coverage})")
    hit, s = _hits_and_signal(y, p, signal, input, classes)
    m = max(1, int(np.floor(coverage * len(s) + 1e-9)))
    return float(hit[np.argsort(-s, kind="stable")[:m]].mean())


def select_threshold(y: Any, p: Any, *, target_error: float = 0.1, delta: float = 0.1, signal: Any = None,
                     input: str = "probs", classes: Any = None) -> SelectiveThreshold:
    """The loosest threshold whose error among the accepted stays under ``target_error``, with a guarantee.

    Fit on labelled calibration examples, exchangeable with those it is used on. This is
    the selection-with-guaranteed-risk algorithm of Geifman & El-Yaniv (2017). A binary
    search over the thresholds, ordered from strictest to loosest, tests at most
    ``m = ceil(log2 n)`` of them. Each test is the one-sided Clopper-Pearson upper bound,
    at level ``1 - delta / m``, on the error rate of the examples that threshold accepts.
    The search returns the loosest tested threshold whose bound is at most
    ``target_error``.

    **Guarantee** (their Theorem 1, by a union bound over the ``m`` tests): with
    probability at least ``1 - delta`` over the calibration examples, the returned
    threshold's selective risk is at most ``target_error``. Selective risk is the
    probability of an error on a new example, given that the threshold accepts it.
    Where no tested threshold passes, the threshold is ``inf``: abstain on everything.
    That comes with a warning, because the calibration set is too small or the model
    too weak for the target.

    >>> rng = np.random.default_rng(0)
    >>> conf = rng.uniform(0.5, 1, 2000)
    >>> y = (rng.uniform(size=2000) > conf).astype(int)           # calibrated: P(correct) = conf
    >>> t = select_threshold(y, np.c_[conf, 1 - conf], target_error=0.1)
    >>> bool(t.upper_bound <= 0.1 and 0.3 < t.coverage < 0.8)
    True
    """
    if not 0 < target_error < 1:
        raise ValueError(f"target_error must be in (0, 1) (got {target_error})")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1) (got {delta})")
    c = risk_coverage(y, p, signal=signal, input=input, classes=classes)
    m = max(1, int(np.ceil(np.log2(len(c.threshold) + 1))))

    def bound(i: int) -> float:
        n, e = int(c.accepted[i]), int(round(c.errors[i]))
        return 1.0 if e >= n else float(beta.ppf(1 - delta / m, e + 1, n - e))

    lo, hi, best = 0, len(c.threshold) - 1, None
    for _ in range(m):  # the loosest passing threshold, tested at most m times
        if lo > hi:
            break
        mid = (lo + hi + 1) // 2
        b = bound(mid)
        if b <= target_error:
            best, lo = (mid, b), mid + 1
        else:
            hi = mid - 1
    if best is None:
        warnings.warn(
            f"no threshold keeps the error among the accepted under target_error={target_error} with "
            f"probability {1 - delta:g} on these {int(c.accepted[-1])} examples: abstain on all (threshold inf); "
            "calibrate on more examples, or raise target_error or delta",
            UserWarning,
            stacklevel=2,
        )
        return SelectiveThreshold(float("inf"), target_error, delta, 0.0, 0.0, 1.0)
    i, b = best
    return SelectiveThreshold(float(c.threshold[i]), target_error, delta, float(c.coverage[i]), float(c.risk[i]), b)
