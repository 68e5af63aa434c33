"""Binning calibrators: isotonic regression and histogram binning, one-vs-rest.

Each class's probability is mapped by a monotone step function fitted against
"is this row that class"; the K outputs are clipped away from 0 and 1 and
renormalised. With two classes only the second column is fitted and the first
is its complement, as scikit-learn does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

from ..bins import assign_bins, bin_index, check_binning
from ._base import BaseCalibrator


class _OneVsRest(BaseCalibrator):
    """Fit a 1-D map per column of probabilities; predict by clip-and-renormalise."""

    def __init__(self, *, input: str = "logprobs", classes: Any = None, clip: float = 1e-6) -> None:
        super().__init__(input=input, classes=classes)
        self.clip = clip

    def _columns(self, k: int) -> list[int]:
        return [1] if k == 2 else list(range(k))

    def _fit(self, logp, y_idx, sample_weight):
        if not 0 <= self.clip < 0.5:
            raise ValueError(f"clip={self.clip!r}; give a margin from 0 and 1 in [0, 0.5), e.g. 1e-6.")
        probs = np.exp(logp)
        self.maps_ = [
            self._fit_column(probs[:, j], (y_idx == j).astype(np.float64), sample_weight)
            for j in self._columns(logp.shape[1])
        ]

    def _calibrate(self, logp):
        probs = np.exp(logp)
        k = logp.shape[1]
        out = np.empty_like(probs)
        cols = self._columns(k)
        for j, fitted in zip(cols, self.maps_):
            out[:, j] = self._apply_column(fitted, probs[:, j])
        out = np.clip(out, self.clip, 1.0 - self.clip)
        if k == 2:
            out[:, 0] = 1.0 - out[:, 1]
        else:
            out /= out.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore"):  # clip=0 allows exact zeros
            return np.log(out)


class IsotonicCalibration(_OneVsRest):
    """Isotonic regression per class (Zadrozny & Elkan 2002), renormalised.

    Non-parametric: it can fix any monotone miscalibration but needs more
    data than scaling (hundreds of examples per class) and outputs steps.

    Parameters
    ----------
    clip : float, default 1e-6
        Outputs are clipped to ``[clip, 1 - clip]`` before renormalising, so
        no class gets probability exactly 0 or 1 (an unseen or always-seen
        region of a calibration set is not proof of certainty).
    input, classes
        As in :class:`TemperatureScaling`.

    Attributes
    ----------
    maps_ : list of sklearn.isotonic.IsotonicRegression
        One per fitted column.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    >>> IsotonicCalibration(input="probs").fit(X, [0, 0, 1, 1, 1]).predict([[0.2, 0.8]]).tolist()
    [1]
    """

    def _fit_column(self, x, target, sample_weight):
        return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            x, target, sample_weight=sample_weight
        )

    def _apply_column(self, fitted, x):
        return fitted.predict(x)


class HistogramBinning(_OneVsRest):
    """Histogram binning per class: each bin predicts its observed frequency.

    Parameters
    ----------
    bins : int, default 15
    binning : {"width", "mass"}, default "mass"
        Equal-width or equal-mass bins of each class's predicted probability
        (the same binning as :func:`calibkit.metrics.ece`). An empty bin
        predicts its midpoint.
    clip, input, classes
        As in :class:`IsotonicCalibration`.

    Attributes
    ----------
    maps_ : list of (edges, values)
        Bin edges (including 0 and 1) and each bin's prediction, per column.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    >>> HistogramBinning(bins=2, input="probs").fit(X, [0, 0, 1, 1, 1]).predict_proba([[0.2, 0.8]]).round(2).tolist()
    [[0.0, 1.0]]
    """

    def __init__(
        self,
        *,
        bins: int = 15,
        binning: str = "mass",
        input: str = "logprobs",
        classes: Any = None,
        clip: float = 1e-6,
    ) -> None:
        super().__init__(input=input, classes=classes, clip=clip)
        self.bins = bins
        self.binning = binning

    def fit(self, X: Any, y: Any) -> HistogramBinning:
        """Fit the bins' frequencies on scores X and labels y (no sample weights:
        equal-mass bins are defined by counts)."""
        return super().fit(X, y)

    def _fit(self, logp, y_idx, sample_weight):
        check_binning(self.bins, self.binning)
        super()._fit(logp, y_idx, sample_weight)

    def _fit_column(self, x, target, sample_weight):
        idx, n_bins, edges = bin_index(x, self.bins, self.binning)
        mass = np.bincount(idx, minlength=n_bins)
        hits = np.bincount(idx, weights=target, minlength=n_bins)
        mid = (edges[:-1] + edges[1:]) / 2
        values = np.where(mass > 0, hits / np.where(mass > 0, mass, 1.0), mid)
        return edges, values

    def _apply_column(self, fitted, x):
        edges, values = fitted
        return values[assign_bins(x, edges, self.binning)]
