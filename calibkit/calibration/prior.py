"""Prior corrections that need no labels: contextual, domain-context and batch.

Each estimates the model's bias towards some labels as a class distribution
``prior`` and divides it out: ``q ∝ p / prior``, renormalised (equivalently,
``log q = log p - log prior`` up to a constant). They are transformers too:
``transform`` returns the corrected log-probabilities, so a prior correction
followed by :class:`TemperatureScaling` is one scikit-learn Pipeline::

    make_pipeline(ContextualCalibration(content_free=cf_scores), TemperatureScaling())

Arrays in, arrays out: the scores of the content-free inputs come from the scoring
layer (``calibkit.content_free_scores``, ``calibkit.domain_context_scores``), or from
anywhere else; nothing here talks to a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_softmax, logsumexp
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..arrays import check_input_kind, check_sample_weight
from ._base import LOG_FLOOR, BaseCalibrator, to_log_proba


def _log_mean_prob(scores: Any, input: str, name: str) -> np.ndarray:
    """log of the mean (unnormalised) class probability over rows, renormalised.

    Zhao et al.'s reference code averages the raw label probabilities of the
    content-free prompts and normalises the average; so does this.
    """
    check_input_kind(input, name)
    arr = np.asarray(scores)
    if arr.ndim == 1:
        arr = arr[None, :]
    if input == "probs":
        to_log_proba(arr, "probs", name=name)  # validation only
        with np.errstate(divide="ignore"):
            log_rows = np.log(arr)
    else:
        to_log_proba(arr, "logprobs", name=name)
        log_rows = np.asarray(arr, dtype=np.float64)
    mean = logsumexp(log_rows, axis=0) - np.log(len(log_rows))
    return mean - logsumexp(mean)


class _PriorCorrection(TransformerMixin, BaseCalibrator):
    """``log q = log_softmax(log p - log prior_)``; subclasses set ``log_prior_``.

    X is used unfloored: a class with no mass in a row (-inf) keeps none, whatever
    the prior; the prior is floored at LOG_FLOOR when divided out, so a class the
    prior gives no mass is not made infinitely likely.
    """

    _requires_y = False
    _floor_fit = False
    _floor_predict = False

    def _calibrate(self, logp):
        shifted = np.where(np.isneginf(logp), -np.inf, logp - np.maximum(self.log_prior_, LOG_FLOOR))
        return log_softmax(shifted, axis=1)

    def transform(self, X: Any) -> np.ndarray:
        """Corrected log-probabilities (n×K), ready for a scaling calibrator."""
        return self.predict_log_proba(X)

    @property
    def prior_(self) -> np.ndarray:
        """The class distribution divided out (sums to one)."""
        check_is_fitted(self)
        return np.exp(self.log_prior_)


class ContextualCalibration(_PriorCorrection):
    """Contextual calibration (Zhao et al. 2021, "Calibrate before use").

    The prior is the model's class distribution on content-free inputs such as
    "N/A", "" and "[MASK]" put through the same prompt: with ``p_cf`` the mean
    of their class probabilities (renormalised), ``q ∝ p / p_cf``. That is
    Zhao et al.'s diagonal ``W = diag(p_cf)^-1``, ``b = 0``, with the output
    renormalised into probabilities.

    Parameters
    ----------
    content_free : array-like of shape (m, K) or (K,)
        Scores of the m content-free inputs, of the same kind as X (``input``):
        ``calibkit.content_free_scores(template, verbalizer, backend)`` scores
        "N/A", "" and "[MASK]" through the same prompt.
    input : {"logprobs", "probs"}
        Kind of both X and ``content_free``.
    classes : sequence, optional
        Label of each column. ``fit`` needs no labels; given ``y`` it checks
        them and, without ``classes``, takes the labels from ``y``.

    Attributes
    ----------
    log_prior_, prior_ : ndarray of shape (K,)

    Examples
    --------
    >>> import numpy as np
    >>> cc = ContextualCalibration(content_free=[[0.7, 0.3]], input="probs")
    >>> cc.fit(np.array([[0.6, 0.4]])).predict_proba([[0.6, 0.4]]).round(4).tolist()
    [[0.3913, 0.6087]]
    """

    _scored_by = "content_free_scores"  # where the content_free scores come from, for the error message

    def __init__(self, content_free: Any = None, *, input: str = "logprobs", classes: Any = None) -> None:
        super().__init__(input=input, classes=classes)
        self.content_free = content_free

    def fit(self, X: Any, y: Any = None) -> ContextualCalibration:
        """Check X (and y if given) and take the prior from ``content_free``; X's values are unused."""
        logp, _, _ = self._validate_fit(X, y)
        if self.content_free is None:
            raise ValueError(
                f"{type(self).__name__} needs the scores of content-free inputs: pass "
                f"content_free=calibkit.{self._scored_by}(template, verbalizer, backend)."
            )
        log_prior = _log_mean_prob(self.content_free, self.input, "content_free")
        if log_prior.shape != (logp.shape[1],):
            raise ValueError(
                f"content_free has {log_prior.shape[0]} columns but X has {logp.shape[1]}; "
                f"score both with the same verbalizer."
            )
        self.log_prior_ = log_prior
        return self


class DomainContextCalibration(ContextualCalibration):
    """Domain-context calibration (Fei et al. 2023, "Mitigating label biases for ICL").

    Contextual calibration whose content-free inputs are random strings of
    in-domain words, which also captures the label bias that the domain's
    vocabulary induces. The parameter is still ``content_free``: the scores of
    those strings, from ``calibkit.domain_context_scores(template, verbalizer,
    backend, texts=in_domain_texts)``.

    Examples
    --------
    >>> import numpy as np
    >>> dc = DomainContextCalibration(content_free=np.log([[0.2, 0.6], [0.4, 0.2]]))
    >>> dc.fit(np.zeros((1, 2))).prior_.round(3).tolist()
    [0.429, 0.571]
    """

    _scored_by = "domain_context_scores"


class BatchCalibration(_PriorCorrection):
    """Batch calibration (Zhou et al. 2024): the batch's mean class distribution is the prior.

    ``fit(X)`` on the unlabelled batch to be classified (the paper's
    setting: ``BatchCalibration().fit(X).predict_proba(X)``), or on an
    unlabelled in-domain pool. ``partial_fit`` keeps a running mean over a
    stream of batches, so each batch can be corrected with the prior of all
    rows seen so far.

    The prior is the mean of the row-normalised probabilities (not of the raw
    label mass, unlike contextual calibration): each example weighs the same.

    Attributes
    ----------
    log_prior_, prior_ : ndarray of shape (K,)
    n_seen_ : float
        Rows (or total sample weight) in the running estimate.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.log([[0.8, 0.2], [0.6, 0.4]])
    >>> BatchCalibration().fit(X).predict_proba(X).round(3).tolist()
    [[0.632, 0.368], [0.391, 0.609]]
    """

    def __init__(self, *, input: str = "logprobs", classes: Any = None) -> None:
        super().__init__(input=input, classes=classes)

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> BatchCalibration:
        """Estimate the prior as the (weighted) mean class distribution of X's rows."""
        logp, _, sample_weight = self._validate_fit(X, y, sample_weight)
        self.n_seen_ = 0.0
        return self._update(logp, sample_weight)

    def partial_fit(
        self, X: Any, y: Any = None, classes: Any = None, sample_weight: Any = None
    ) -> BatchCalibration:
        """Fold another batch of rows into the running mean.

        The first call is ``fit`` (``classes``, as in scikit-learn's
        ``partial_fit``, may name the columns then); later calls only update.
        """
        if not hasattr(self, "n_seen_"):
            logp, _, sample_weight = self._validate_fit(X, y, sample_weight, classes=classes)
            self.n_seen_ = 0.0
            return self._update(logp, sample_weight)
        logp = self._validate_X(X, reset=False)
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, logp)
        return self._update(logp, sample_weight)

    def _update(self, logp: np.ndarray, sample_weight: np.ndarray | None) -> BatchCalibration:
        w = np.ones(len(logp)) if sample_weight is None else sample_weight
        mass = float(w.sum())
        mean = np.exp(logp).T @ w / mass
        total = self.n_seen_ + mass
        if self.n_seen_ > 0:
            mean = np.exp(self.log_prior_) * (self.n_seen_ / total) + mean * (mass / total)
        self.n_seen_ = total
        with np.errstate(divide="ignore"):  # a class no row gives mass: prior 0, log -inf
            self.log_prior_ = np.log(mean / mean.sum())
        return self
