"""Scaling calibrators: temperature, vector, matrix (regularised) and Platt.

Each fits a few parameters of a map from the renormalised log-probabilities to
new logits by minimising the (weighted) mean negative log-likelihood, with
analytic gradients.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, logsumexp

from ..arrays import ROW_BLOCK
from ._base import BaseCalibrator

# Temperature is searched in [1/100, 100]; a fit that ends at a bound is reported.
_T_MIN, _T_MAX = 1e-2, 1e2


def _bound_warning(T: float, n: int) -> str:
    if T >= _T_MAX:
        meaning = (
            "the calibration labels carry no signal the scores can be scaled to, so the fit "
            "flattens the predictions until they are nearly uniform; check that y matches X's "
            "rows (same examples, same order)"
        )
    else:
        meaning = (
            f"the calibration set ({n} rows) is separable or too small to fix it, so the "
            "predictions become nearly one-hot; calibrate on more examples"
        )
    end = "upper" if T >= _T_MAX else "lower"
    return f"temperature reached the bound T = {T:g}, the {end} end of [{_T_MIN:g}, {_T_MAX:g}]: {meaning}."


def _tempered_moments(zc: np.ndarray, s: float, w: np.ndarray, dtype: type) -> tuple[float, float]:
    """Sums over rows, weighted by ``w``, of the mean and variance of ``z`` under
    ``softmax(s z)``: the NLL's gradient (less the labels' term) and curvature in s.

    One blocked pass; exp and the sums over a row run in ``dtype``, the sums over rows in float64.
    Written out rather than through scipy's softmax so that the exp and the three sums
    share one pass over cache-sized blocks, with no n×K temporaries.
    """
    n, k = zc.shape
    rows = min(n, ROW_BLOCK)
    e, ez = np.empty((rows, k), dtype), np.empty((rows, k), dtype)
    ones = np.ones(k, dtype)
    mean = var = 0.0
    for start in range(0, n, rows):
        z = zc[start : start + rows]
        m = len(z)
        eb, ezb = e[:m], ez[:m]
        np.multiply(z, dtype(s), out=eb, casting="same_kind")  # s in the pass's precision
        np.exp(eb, out=eb)
        total = (eb @ ones).astype(np.float64)  # >= 1: the row's max is 0
        np.multiply(eb, z, out=ezb)
        mean_z = (ezb @ ones) / total
        np.multiply(ezb, z, out=eb)
        mean_z2 = (eb @ ones) / total
        wb = w[start : start + m]
        mean += wb @ mean_z
        var += wb @ (mean_z2 - mean_z * mean_z)
    return mean, var


#: Rows of the subsample that finds the fit's starting point on large calibration sets.
_SUBSAMPLE = 32_768


def _newton(
    zc: np.ndarray, w: np.ndarray, wzy: float, s: float, dtype: type, rel_step: float
) -> tuple[float, int, bool]:
    """Minimise the temperature-scaling NLL over the inverse temperature s from ``s``.

    The NLL is convex in s = 1/T (its second derivative is a variance), so a
    bracketed Newton iteration is safe and needs a handful of passes over the
    data (scipy's 1-D minimisers are derivative-free and need many more). It
    stops after a step of at most ``rel_step * s``, or at a bound of the search
    whose slope points outwards: then the optimum is there or beyond it.
    Returns ``(s, passes over zc, whether s is such a bound)``.
    """
    lo, hi = 1.0 / _T_MAX, 1.0 / _T_MIN
    tried_lo = tried_hi = False
    for passes in range(1, 101):
        mean, h = _tempered_moments(zc, s, w, dtype)
        g = mean - wzy
        tried_lo |= s == 1.0 / _T_MAX
        tried_hi |= s == 1.0 / _T_MIN
        if (s == 1.0 / _T_MAX and g >= 0) or (s == 1.0 / _T_MIN and g <= 0):
            return s, passes, True
        if g == 0:
            break
        if g > 0:
            hi = min(hi, s)
        else:
            lo = max(lo, s)
        step = s - g / h if h > 0 else np.nan
        inside = lo < step < hi
        # A step out of the bracket, or one that moves s by more than a fifth, may head for a
        # bound that still ends the bracket (labels without signal, separable data): look
        # there first, once. It costs a pass on a far start only; a subsample's start is near.
        if g > 0 and lo == 1.0 / _T_MAX and not tried_lo and not (inside and step > s / 1.2):
            step = lo
        elif g < 0 and hi == 1.0 / _T_MIN and not tried_hi and not (inside and step < 1.2 * s):
            step = hi
        elif not inside:  # Newton left the bracket: bisect it (geometrically)
            step = np.sqrt(lo * hi)
        converged = abs(step - s) <= rel_step * s
        s = float(step)
        if converged:
            break
    return s, passes, False


def _weights(sample_weight: np.ndarray | None, n: int) -> np.ndarray:
    w = np.full(n, 1.0 / n) if sample_weight is None else np.asarray(sample_weight, float)
    return w / w.sum()


class TemperatureScaling(BaseCalibrator):
    """Divide the log-scores by one temperature T, fitted by maximum likelihood.

    ``predict_proba(X) = softmax(log p / T)``; T > 1 softens over-confident
    scores, T < 1 sharpens. T is searched in [0.01, 100]; a fit that ends at a
    bound warns (at 100 the labels carry no signal, at 0.01 the calibration set
    is separable) and keeps the bound. A class scored -inf (no
    mass, e.g. a censored label) keeps probability 0; the fit floors it at 1e-12 so
    that a true class without mass costs a finite loss.

    Parameters
    ----------
    input : {"logprobs", "probs"}
        What X holds: log-scores (unnormalised log-probabilities or logits) or
        probabilities. Rows are renormalised either way.
    classes : sequence, optional
        The label of each column of X. Needed when the calibration labels miss
        some class, unless X is a LabelScores (which names its columns); by
        default the sorted distinct labels of y, one per column.

    Attributes
    ----------
    temperature_ : float
    classes_ : ndarray of shape (K,)
    n_iter_ : int
        Passes over the calibration set (each one Newton step); a fit that stops at
        a bound takes one or two.

    Examples
    --------
    >>> import numpy as np
    >>> from calibkit.calibration import TemperatureScaling
    >>> logits = np.array([[4.0, 0.0], [0.0, 4.0], [3.0, 0.0], [0.0, 3.0], [2.0, 0.0]])
    >>> ts = TemperatureScaling(input="logprobs").fit(logits, [0, 1, 1, 1, 0])
    >>> bool(ts.temperature_ > 1)
    True
    """

    # -inf / T is -inf: a class with no mass keeps none (the fit uses the floor).
    _floor_predict = False
    _fit_shift_invariant = True

    def __init__(self, *, input: str = "logprobs", classes: Any = None) -> None:
        super().__init__(input=input, classes=classes)

    def _fit(self, logp, y_idx, sample_weight):
        # logp: float32, each row shifted so its max is 0 (the NLL ignores a row's shift).
        n = logp.shape[0]
        w = _weights(sample_weight, n)
        zy = logp[np.arange(n), y_idx].astype(np.float64)
        s = 1.0
        every = n // _SUBSAMPLE
        if every >= 4 and w[::every].sum() > 0:
            # A start fitted on every few rows leaves the full data one or two Newton steps.
            w_sub = w[::every] / w[::every].sum()
            s, _, _ = _newton(np.ascontiguousarray(logp[::every]), w_sub, w_sub @ zy[::every], s, np.float32, 1e-4)
        wzy = w @ zy
        s, passes, at_bound = _newton(logp, w, wzy, s, np.float32, 1e-2)
        if not at_bound:
            # The float32 passes bring s near the optimum (their rounding would stop them at
            # about 1e-7); Newton squares the error of each float64 step, so one or two finish.
            s, more, _ = _newton(logp, w, wzy, s, np.float64, 1e-5)
            passes += more
        self.n_iter_ = passes
        if s <= 1.0001 / _T_MAX or s >= 0.9999 / _T_MIN:
            warnings.warn(_bound_warning(1.0 / s, n), UserWarning, stacklevel=3)
        self.temperature_ = float(1.0 / s)

    def _calibrate(self, logp):
        return log_softmax(logp / self.temperature_, axis=1)


def _softmax_loss(a: np.ndarray, y_idx: np.ndarray, w: np.ndarray):
    """Weighted mean NLL of logits ``a`` and its gradient with respect to ``a``."""
    lse = logsumexp(a, axis=1)
    n = a.shape[0]
    nll = w @ (lse - a[np.arange(n), y_idx])
    r = np.exp(a - lse[:, None])
    r[np.arange(n), y_idx] -= 1.0
    return nll, r * w[:, None]


def _lbfgs(fun, x0: np.ndarray, max_iter: int) -> tuple[np.ndarray, int]:
    res = minimize(fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return res.x, int(res.nit)


class VectorScaling(BaseCalibrator):
    """Per-class scale and bias: ``softmax(w * log p + b)``.

    Parameters
    ----------
    reg : float, default 1e-3
        L2 penalty pulling ``w`` towards 1 and ``b`` towards 0 (mean over
        classes, added to the mean NLL). It keeps the bias of a class absent
        from the calibration labels finite.
    input, classes
        As in :class:`TemperatureScaling`.
    max_iter : int, default 200
        L-BFGS iterations.

    Attributes
    ----------
    coef_ : ndarray of shape (K,)
    intercept_ : ndarray of shape (K,)

    Examples
    --------
    >>> import numpy as np
    >>> X = np.log([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]])
    >>> VectorScaling().fit(X, [0, 1, 2, 1]).predict_proba(X).shape
    (4, 3)
    """

    def __init__(
        self, *, reg: float = 1e-3, input: str = "logprobs", classes: Any = None, max_iter: int = 200
    ) -> None:
        super().__init__(input=input, classes=classes)
        self.reg = reg
        self.max_iter = max_iter

    def _fit(self, logp, y_idx, sample_weight):
        n, k = logp.shape
        w = _weights(sample_weight, n)
        lam = float(self.reg) / k

        def fun(theta):
            scale, bias = theta[:k], theta[k:]
            nll, r = _softmax_loss(logp * scale + bias, y_idx, w)
            nll += lam * (np.sum((scale - 1.0) ** 2) + np.sum(bias**2))
            grad = np.concatenate(
                [np.einsum("ij,ij->j", r, logp) + 2 * lam * (scale - 1.0), r.sum(0) + 2 * lam * bias]
            )
            return nll, grad

        theta, self.n_iter_ = _lbfgs(fun, np.concatenate([np.ones(k), np.zeros(k)]), self.max_iter)
        self.coef_, self.intercept_ = theta[:k], theta[k:] - theta[k:].mean()

    def _calibrate(self, logp):
        return log_softmax(logp * self.coef_ + self.intercept_, axis=1)


class MatrixScaling(BaseCalibrator):
    """Full affine map of the log-probabilities: ``softmax(log p @ W.T + b)``.

    With K classes it has K² + K parameters, so it must be regularised
    (Kull et al. 2019, "Beyond temperature scaling"):

    - ``regularization="odir"``: off-diagonal and intercept regularisation,
      ``lam * mean(offdiag(W)**2) + mu * mean(b**2)``; the diagonal is free.
    - ``regularization="l2"``: ``lam * mean((W - I)**2) + mu * mean(b**2)``,
      i.e. shrinkage towards the identity map.

    Tune ``lam`` and ``mu`` by cross-validation (see
    :func:`calibkit.calibration.cross_val_calibrate`).

    Attributes
    ----------
    coef_ : ndarray of shape (K, K)
    intercept_ : ndarray of shape (K,)

    Examples
    --------
    >>> import numpy as np
    >>> X = np.log([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]])
    >>> MatrixScaling(lam=0.1, mu=0.1).fit(X, [0, 1, 2, 1]).coef_.shape
    (3, 3)
    """

    def __init__(
        self,
        *,
        regularization: str = "odir",
        lam: float = 1e-2,
        mu: float = 1e-2,
        input: str = "logprobs",
        classes: Any = None,
        max_iter: int = 200,
    ) -> None:
        super().__init__(input=input, classes=classes)
        self.regularization = regularization
        self.lam = lam
        self.mu = mu
        self.max_iter = max_iter

    def _fit(self, logp, y_idx, sample_weight):
        if self.regularization not in ("odir", "l2"):
            raise ValueError(
                f"regularization={self.regularization!r}; use 'odir' (off-diagonal and "
                f"intercept) or 'l2' (towards the identity map)."
            )
        n, k = logp.shape
        w = _weights(sample_weight, n)
        eye = np.eye(k)
        if self.regularization == "odir":
            mask, lam = 1.0 - eye, float(self.lam) / max(k * (k - 1), 1)
        else:
            mask, lam = np.ones((k, k)), float(self.lam) / (k * k)
        mu = float(self.mu) / k

        def fun(theta):
            W, b = theta[: k * k].reshape(k, k), theta[k * k :]
            nll, r = _softmax_loss(logp @ W.T + b, y_idx, w)
            D = (W - eye) * mask
            nll += lam * np.sum(D**2) + mu * np.sum(b**2)
            gW = r.T @ logp + 2 * lam * D
            return nll, np.concatenate([gW.ravel(), r.sum(0) + 2 * mu * b])

        theta, self.n_iter_ = _lbfgs(fun, np.concatenate([eye.ravel(), np.zeros(k)]), self.max_iter)
        self.coef_, self.intercept_ = theta[: k * k].reshape(k, k), theta[k * k :]

    def _calibrate(self, logp):
        return log_softmax(logp @ self.coef_.T + self.intercept_, axis=1)


class PlattScaling(BaseCalibrator):
    """Platt's sigmoid on the log-odds, for two classes.

    ``P(classes_[1]) = sigmoid(a * (log p1 - log p0) + b)``, fitted with Platt's
    smoothed targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)`` (as scikit-
    learn's sigmoid calibration does), which keeps ``a`` finite on tiny or
    separable calibration sets.

    Attributes
    ----------
    coef_ : float
    intercept_ : float

    Examples
    --------
    >>> import numpy as np
    >>> X = np.log([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    >>> PlattScaling(input="logprobs").fit(X, ["neg", "pos", "pos", "pos"]).classes_.tolist()
    ['neg', 'pos']
    """

    def __init__(self, *, input: str = "logprobs", classes: Any = None, max_iter: int = 200) -> None:
        super().__init__(input=input, classes=classes)
        self.max_iter = max_iter

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _check_targets(self, y):
        labels = np.unique(y)
        if len(labels) > 2:
            raise ValueError(
                f"Only binary classification is supported. y has {len(labels)} labels; "
                f"use TemperatureScaling or VectorScaling for more classes."
            )

    def _log_proba(self, X, *, floor=True):
        logp = super()._log_proba(X, floor=floor)
        if X.shape[1] != 2:
            raise ValueError(
                f"PlattScaling is for two classes but X has {X.shape[1]} columns; "
                f"use TemperatureScaling or VectorScaling for more classes."
            )
        return logp

    def _fit(self, logp, y_idx, sample_weight):
        n = logp.shape[0]
        w = np.ones(n) if sample_weight is None else sample_weight
        margin = logp[:, 1] - logp[:, 0]
        pos = y_idx == 1
        n_pos, n_neg = w[pos].sum(), w[~pos].sum()
        t = np.where(pos, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
        w = w / w.sum()

        def fun(theta):
            u = theta[0] * margin + theta[1]
            # -[t log s(u) + (1 - t) log s(-u)] = log(1 + e^u) - t u
            nll = w @ (np.logaddexp(0.0, u) - t * u)
            r = w * (np.exp(-np.logaddexp(0.0, -u)) - t)
            return nll, np.array([r @ margin, r.sum()])

        theta, self.n_iter_ = _lbfgs(fun, np.array([1.0, 0.0]), self.max_iter)
        self.coef_, self.intercept_ = float(theta[0]), float(theta[1])

    def _calibrate(self, logp):
        u = self.coef_ * (logp[:, 1] - logp[:, 0]) + self.intercept_
        return -np.logaddexp(0.0, np.stack([u, -u], axis=1))
