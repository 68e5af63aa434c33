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

from ._base import BaseCalibrator

# Temperature is searched in [1/100, 100]; a fit that ends at a bound means the
# calibration set is too small or separable to pin it down.
_T_MIN, _T_MAX = 1e-2, 1e2


def _weights(sample_weight: np.ndarray | None, n: int) -> np.ndarray:
    w = np.full(n, 1.0 / n) if sample_weight is None else np.asarray(sample_weight, float)
    return w / w.sum()


class TemperatureScaling(BaseCalibrator):
    """Divide the log-scores by one temperature T, fitted by maximum likelihood.

    ``predict_proba(X) = softmax(log p / T)``; T > 1 softens over-confident
    scores, T < 1 sharpens. T is searched in [0.01, 100]. A class scored -inf (no
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

    def __init__(self, *, input: str = "logprobs", classes: Any = None) -> None:
        super().__init__(input=input, classes=classes)

    def _fit(self, logp, y_idx, sample_weight):
        n, k = logp.shape
        w = _weights(sample_weight, n)
        zc = logp - logp.max(axis=1, keepdims=True)  # <= 0, so exp(s * zc) never overflows
        zy = zc[np.arange(n), y_idx]
        wzy = w @ zy
        ones = np.ones(k)

        # The NLL is convex in the inverse temperature s = 1/T (its second
        # derivative is a variance), so a bracketed Newton iteration on s is
        # safe and needs a handful of passes over the data; scipy's 1-D
        # minimisers are derivative-free and need many more.
        def nll_grad_hess(s: float) -> tuple[float, float, float]:
            e = np.exp(s * zc)
            total = e @ ones
            ez = e * zc
            mean_z = (ez @ ones) / total
            mean_z2 = np.einsum("ij,ij->i", ez, zc) / total
            nll = w @ np.log(total) - s * wzy
            return nll, w @ mean_z - wzy, w @ (mean_z2 - mean_z**2)

        lo, hi = 1.0 / _T_MAX, 1.0 / _T_MIN
        s = 1.0
        nll_at_one = nll, g, h = nll_grad_hess(s)
        for iteration in range(1, 101):
            if g > 0:
                hi = s
            else:
                lo = s
            step = s - g / h if h > 0 else np.nan
            if not lo < step < hi:  # Newton left the bracket: bisect it (geometrically)
                step = np.sqrt(lo * hi)
            if abs(step - s) <= 1e-10 * s:
                break
            s = step
            nll, g, h = nll_grad_hess(s)
        self.n_iter_ = iteration
        if nll > nll_at_one[0]:  # rounding only; the optimum is never worse than T = 1
            s = 1.0
        if s <= 1.0001 / _T_MAX or s >= 0.9999 / _T_MIN:
            warnings.warn(
                f"temperature reached the bound of [{_T_MIN}, {_T_MAX}]: the calibration "
                f"set ({n} rows) is too small or separable to fix it.",
                UserWarning,
                stacklevel=3,
            )
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
