"""scikit-learn estimators over a language model: examples in, class scores or probabilities out.

:class:`LogprobVectorizer` turns examples into the n×K class log-probabilities (the
seam); :class:`LogprobClassifier` adds a calibrator, so that it is a complete
classifier. Both work in ``Pipeline``, ``GridSearchCV`` (over templates, verbalizers
and calibrators) and ``cross_val_predict``. ``clone`` and ``pickle`` share the
loaded embedded model rather than copying or reloading it, and open no connection;
an example scored twice comes from the backend's response cache.

Example
-------
>>> import calibkit as ck
>>> clf = ck.LogprobClassifier(template="Review: {text}\\nSentiment:",
...                            verbalizer={"neg": " negative", "pos": " positive"},
...                            calibration="contextual")                  # doctest: +SKIP
>>> clf.fit(X_train, y_train).predict_proba(X_test)                       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from .backends.base import Backend
from .calibration._base import BaseCalibrator
from .calibration import (
    BatchCalibration,
    ContextualCalibration,
    DomainContextCalibration,
    HistogramBinning,
    IsotonicCalibration,
    MatrixScaling,
    PlattScaling,
    TemperatureScaling,
    VectorScaling,
)
from .label_scores import LabelScores
from .scoring import content_free_scores, default_backend, domain_context_scores, score
from .templates import PromptTemplate, Verbalizer, iter_examples

__all__ = ["CALIBRATIONS", "LogprobClassifier", "LogprobVectorizer", "make_calibrator"]

#: Calibrators by name, for ``calibration=`` and ``calibkit eval --calibrators``.
#: "none" renormalises the model's scores over the classes and fits nothing.
CALIBRATIONS = (
    "none",
    "temperature",
    "vector",
    "matrix",
    "platt",
    "isotonic",
    "histogram",
    "contextual",
    "domain",
    "batch",
)


def _template(t: PromptTemplate | str | None) -> PromptTemplate:
    if t is None:
        raise ValueError("template is required: e.g. template='Review: {text}\\nSentiment:'")
    return t if isinstance(t, PromptTemplate) else PromptTemplate(t)


def _verbalizer(v: Verbalizer | Mapping[Hashable, Any] | None) -> Verbalizer:
    if v is None:
        raise ValueError("verbalizer is required: e.g. verbalizer={'neg': ' negative', 'pos': ' positive'}")
    return v if isinstance(v, Verbalizer) else Verbalizer(v)


def make_calibrator(
    name: str,
    classes: Sequence[Hashable],
    *,
    backend: Backend | None = None,
    template: PromptTemplate | str | None = None,
    verbalizer: Verbalizer | Mapping[Hashable, Any] | None = None,
    texts: Sequence[str] | None = None,
    content_free: Any = None,
    method: str = "auto",
    k: int | None = None,
) -> BaseEstimator:
    """A calibrator by name (see :data:`CALIBRATIONS`); ``"a+b"`` chains them in a Pipeline.

    "contextual" takes the scores of content-free inputs from ``content_free``, or
    obtains them through ``backend``, ``template`` and ``verbalizer``; "domain" needs
    those three and in-domain ``texts``; ``method`` and ``k`` say how they are scored.

    >>> pipe = make_calibrator("contextual+temperature", ["neg", "pos"], content_free=[[-1.0, -2.0]])
    >>> [name for name, _ in pipe.steps]
    ['contextualcalibration', 'temperaturescaling']
    """
    if "+" in name:
        from sklearn.pipeline import make_pipeline

        kw = dict(backend=backend, template=template, verbalizer=verbalizer, texts=texts,
                  content_free=content_free, method=method, k=k)
        return make_pipeline(*(make_calibrator(part, classes, **kw) for part in name.split("+")))  # type: ignore[arg-type]
    classes = list(classes)
    simple = {
        "temperature": TemperatureScaling,
        "vector": VectorScaling,
        "matrix": MatrixScaling,
        "platt": PlattScaling,
        "isotonic": IsotonicCalibration,
        "histogram": HistogramBinning,
        "batch": BatchCalibration,
        "none": _Renormalise,
    }
    if name in simple:
        return simple[name](classes=classes)
    if name in ("contextual", "domain"):
        if name == "contextual" and content_free is not None:
            return ContextualCalibration(content_free=content_free, classes=classes)
        if backend is None or template is None or verbalizer is None:
            raise ValueError(
                f"the {name!r} calibration scores content-free inputs through the model: "
                "give backend, template and verbalizer"
                + (" (or content_free= scores)" if name == "contextual" else "")
            )
        if name == "contextual":
            cf = content_free_scores(template, verbalizer, backend, method=method, k=k)
            return ContextualCalibration(content_free=np.asarray(cf), classes=classes)
        if not texts:
            raise ValueError("the 'domain' calibration draws random words from in-domain texts: give texts=")
        dc = domain_context_scores(template, verbalizer, backend, texts=texts, method=method, k=k)
        return DomainContextCalibration(content_free=np.asarray(dc), classes=classes)
    raise ValueError(f"unknown calibration {name!r}; choose from {', '.join(CALIBRATIONS)}, or join them with '+'")


class LogprobVectorizer(TransformerMixin, BaseEstimator):
    """Examples to class log-probabilities: ``transform`` returns a :class:`LabelScores`.

    Parameters
    ----------
    backend : a Client or LocalModel; None uses the embedded model.
    template : a PromptTemplate or a format string.
    verbalizer : a Verbalizer or a mapping ``{class: form or [forms]}``.
    method : "auto", "topk" or "exact" (see :func:`calibkit.score`).
    k : top-k for "topk"/"auto" (default: the endpoint's cap).
    progress : show a progress bar (None: for 64 examples or more).

    ``np.asarray`` of the result is the n×K matrix, so a calibrator can follow in a
    Pipeline.

    >>> vec = LogprobVectorizer(template="Q: {text}\\nA:", verbalizer={"y": " yes", "n": " no"})
    >>> vec.get_params()["method"]
    'auto'
    """

    def __init__(
        self,
        backend: Backend | None = None,
        template: PromptTemplate | str | None = None,
        verbalizer: Verbalizer | Mapping[Hashable, Any] | None = None,
        method: str = "auto",
        k: int | None = None,
        progress: bool | None = None,
    ):
        self.backend = backend
        self.template = template
        self.verbalizer = verbalizer
        self.method = method
        self.k = k
        self.progress = progress

    def fit(self, X: Any, y: Any = None) -> "LogprobVectorizer":
        """Check the parameters; nothing is learnt from X."""
        self.template_ = _template(self.template)
        self.verbalizer_ = _verbalizer(self.verbalizer)
        self.backend_ = default_backend(self.backend)
        if self.method not in ("auto", "topk", "exact"):
            raise ValueError(f"method must be 'auto', 'topk' or 'exact' (got {self.method!r})")
        self.classes_ = np.array(self.verbalizer_.classes, dtype=object)
        return self

    def transform(self, X: Any) -> LabelScores:
        check_is_fitted(self, "template_")
        return score(
            X, self.template_, self.verbalizer_, self.backend_, method=self.method, k=self.k,  # type: ignore[arg-type]
            progress=self.progress, check=False,
        )

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "classes_")
        return np.array([f"logprob[{c}]" for c in self.classes_], dtype=object)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags


class LogprobClassifier(ClassifierMixin, BaseEstimator):
    """A classifier that scores examples with a language model and calibrates the scores.

    Parameters
    ----------
    backend : a Client or LocalModel; None uses the embedded model.
    template, verbalizer, method, k, progress : as for :class:`LogprobVectorizer`.
    calibration : a name from :data:`CALIBRATIONS` (``"a+b"`` chains two, e.g.
        ``"contextual+temperature"``) or a calibrator estimator (cloned).
        The prior corrections need no labels: "contextual" scores "N/A", "" and
        "[MASK]" through the template, "domain" random strings of words from the
        training examples, "batch" takes the mean class distribution of the training
        examples as the prior.

    Attributes
    ----------
    classes_ : the verbalizer's classes (the columns of predict_proba).
    calibrator_ : the fitted calibrator.
    vectorizer_ : the fitted LogprobVectorizer.

    >>> clf = LogprobClassifier(template="Q: {text}\\nA:", verbalizer={"y": " yes", "n": " no"})
    >>> clf.get_params()["calibration"]
    'temperature'
    """

    def __init__(
        self,
        backend: Backend | None = None,
        template: PromptTemplate | str | None = None,
        verbalizer: Verbalizer | Mapping[Hashable, Any] | None = None,
        calibration: str | BaseEstimator = "temperature",
        method: str = "auto",
        k: int | None = None,
        progress: bool | None = None,
    ):
        self.backend = backend
        self.template = template
        self.verbalizer = verbalizer
        self.calibration = calibration
        self.method = method
        self.k = k
        self.progress = progress

    def _make_calibrator(self, X: Any, classes: list[Hashable]) -> BaseEstimator:
        if not isinstance(self.calibration, str):
            return clone(self.calibration)
        vec = self.vectorizer_
        texts = [str(v) for ex in iter_examples(X) for v in (ex.values() if isinstance(ex, Mapping) else [ex])]
        return make_calibrator(
            self.calibration, classes, backend=vec.backend_, template=vec.template_,
            verbalizer=vec.verbalizer_, texts=texts, method=self.method, k=self.k,
        )

    def fit(self, X: Any, y: Any) -> "LogprobClassifier":
        """Score X with the model and fit the calibrator on the scores and labels y."""
        self.vectorizer_ = LogprobVectorizer(
            self.backend, self.template, self.verbalizer, self.method, self.k, self.progress
        ).fit(X)
        classes = list(self.vectorizer_.verbalizer_.classes)
        y = np.asarray(y, dtype=object)
        unknown = sorted({repr(v) for v in y} - {repr(c) for c in classes})
        if unknown:
            raise ValueError(
                f"y has labels {', '.join(unknown[:5])} that the verbalizer does not name; "
                f"its classes are {classes}"
            )
        self.classes_ = np.array(classes, dtype=object)
        scores = self.vectorizer_.transform(X)
        self.calibrator_ = self._make_calibrator(X, classes)
        self.calibrator_.fit(scores, _as_class_labels(y, classes))
        return self

    def scores(self, X: Any) -> LabelScores:
        """The model's uncalibrated class scores of X."""
        check_is_fitted(self, "calibrator_")
        return self.vectorizer_.transform(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.calibrator_.predict_proba(self.scores(X))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def decision_function(self, X: Any) -> np.ndarray:
        """Calibrated log-probabilities (n×K); for two classes, the log-odds of the second."""
        lp = self.predict_log_proba(X)
        return lp[:, 1] - lp[:, 0] if lp.shape[1] == 2 else lp

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags


def _as_class_labels(y: np.ndarray, classes: Sequence[Hashable]) -> np.ndarray:
    # Labels keep their own type (ints stay ints) so the calibrator maps them to columns by value.
    try:
        return np.asarray(y.tolist())
    except (TypeError, ValueError):
        return y


class _Renormalise(BaseCalibrator):
    """No calibration: the model's scores renormalised over the classes."""

    _requires_y = False

    def _fit(self, logp: np.ndarray, y_idx: Any, sample_weight: Any) -> None:
        pass

    def _calibrate(self, logp: np.ndarray) -> np.ndarray:
        return logp
