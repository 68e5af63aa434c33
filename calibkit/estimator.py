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

import warnings
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .backends.base import Backend
from .calibration import (
    BaseCalibrator,
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
from .names import CALIBRATIONS, CHAIN_ORDER, check_calibration
from .scoring import content_free_scores, default_backend, domain_context_scores, score
from .templates import PromptTemplate, Verbalizer, iter_examples

__all__ = [
    "CALIBRATIONS", "CHAIN_ORDER", "LogprobClassifier", "LogprobVectorizer", "check_calibration", "make_calibrator",
]

def _template(t: PromptTemplate | str | None) -> PromptTemplate:
    if t is None:
        raise ValueError("template is required: e.g. template='Review: {text}\\nSentiment:'")
    return t if isinstance(t, PromptTemplate) else PromptTemplate(t)


def _verbalizer(v: Verbalizer | Mapping[Hashable, Any] | None) -> Verbalizer:
    if v is None:
        raise ValueError("verbalizer is required: e.g. verbalizer={'neg': ' negative', 'pos': ' positive'}")
    if isinstance(v, (list, tuple)):
        raise ValueError(
            f"verbalizer must map each class to its form(s), not be a {type(v).__name__}: e.g. "
            "verbalizer={'neg': ' negative', 'pos': ' positive'}, or {0: ' negative', 1: ' positive'} "
            "for integer labels"
        )
    return v if isinstance(v, Verbalizer) else Verbalizer(v)


def _in_sorted_order(v: Verbalizer) -> Verbalizer:
    """``v`` with its classes in scikit-learn's order (sorted, as LabelEncoder and
    ``np.unique`` sort them), or ``v`` itself where they cannot be sorted (mixed types)."""
    try:
        order = sorted(range(len(v.classes)), key=v.classes.__getitem__)
    except TypeError:
        return v
    if order == list(range(len(v.classes))):
        return v
    return Verbalizer({v.classes[i]: v.forms[i] for i in order})


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
    progress: bool | None = None,
) -> BaseEstimator:
    """A calibrator by name (see :data:`CALIBRATIONS`); ``"a+b"`` chains them in a Pipeline.

    "contextual" takes the scores of content-free inputs from ``content_free``, or
    obtains them through ``backend``, ``template`` and ``verbalizer``; "domain" takes
    the scores of its random in-domain strings from ``content_free``, or needs those
    three and in-domain ``texts``; ``method``, ``k`` and ``progress`` say how they are scored.

    A chain is checked before anything is made or scored (:func:`check_calibration`):
    at most one prior correction, then one scaling, then one binning. Each step but the
    last passes its calibrated log-probabilities on to the next.

    >>> pipe = make_calibrator("contextual+temperature", ["neg", "pos"], content_free=[[-1.0, -2.0]])
    >>> [name for name, _ in pipe.steps]
    ['contextualcalibration', 'temperaturescaling']
    >>> import numpy as np
    >>> X = np.log([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.45, 0.55], [0.55, 0.45], [0.35, 0.65]])
    >>> chain = make_calibrator("batch+temperature+isotonic", ["neg", "pos"])
    >>> [name for name, _ in chain.steps]
    ['batchcalibration', 'temperaturescaling', 'isotoniccalibration']
    >>> chain.fit(X, ["neg", "pos", "neg", "pos", "pos", "neg"]).predict(X).tolist()
    ['neg', 'pos', 'neg', 'pos', 'pos', 'pos']
    """
    parts = check_calibration(name)
    classes = list(classes)
    if "platt" in parts and len(classes) != 2:
        raise ValueError(
            f"calibration={name!r}: 'platt' calibrates two classes and these are {len(classes)}; "
            "use 'temperature' or 'vector' instead"
        )
    if len(parts) > 1:
        kw = dict(backend=backend, template=template, verbalizer=verbalizer, texts=texts,
                  content_free=content_free, method=method, k=k, progress=progress)
        made = [make_calibrator(part, classes, **kw) for part in parts]  # type: ignore[arg-type]
        # Prior corrections are transformers already; a scaling in the middle of a chain is
        # wrapped so that the next step gets its calibrated log-probabilities.
        steps = [(type(cal).__name__.lower(), cal if i == len(made) - 1 or hasattr(cal, "transform")
                  else _PassOn(cal)) for i, cal in enumerate(made)]
        return Pipeline(steps)
    name = parts[0]
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
    if name == "contextual" and content_free is not None:
        return ContextualCalibration(content_free=content_free, classes=classes)
    if name == "domain" and content_free is not None:
        return DomainContextCalibration(content_free=content_free, classes=classes)
    if backend is None or template is None or verbalizer is None:
        raise ValueError(
            f"the {name!r} calibration scores content-free inputs through the model: "
            "give backend, template and verbalizer"
            + (" (or content_free= scores)" if name == "contextual" else "")
        )
    if name == "contextual":
        cf = content_free_scores(template, verbalizer, backend, method=method, k=k, progress=progress)
        return ContextualCalibration(content_free=np.asarray(cf), classes=classes)
    if not texts:
        raise ValueError("the 'domain' calibration draws random words from in-domain texts: give texts=")
    dc = domain_context_scores(template, verbalizer, backend, texts=texts, method=method, k=k, progress=progress)
    return DomainContextCalibration(content_free=np.asarray(dc), classes=classes)


class _PassOn(TransformerMixin, BaseEstimator):
    """A calibrator as a middle step of a Pipeline: ``transform`` gives its calibrated log-probabilities."""

    def __init__(self, calibrator: BaseEstimator):
        self.calibrator = calibrator

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> "_PassOn":
        self.calibrator_ = clone(self.calibrator).fit(X, y, **fit_params)
        self.classes_ = self.calibrator_.classes_
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "calibrator_")
        return self.calibrator_.predict_log_proba(X)


class LogprobVectorizer(TransformerMixin, BaseEstimator):
    """Examples to class log-probabilities: ``transform`` returns a :class:`LabelScores`.

    Parameters
    ----------
    backend : any Backend (Client, LocalModel, TransformersModel, RayPool); None uses the embedded model.
    template : a PromptTemplate or a format string.
    verbalizer : a Verbalizer or a mapping ``{class: form or [forms]}``.
    method : "auto", "topk" or "exact" (see :func:`calibkit.score`).
    k : top-k for "topk"/"auto" (default: the endpoint's cap).
    progress : show a progress bar (None: once scoring has lasted two seconds).

    ``np.asarray`` of the result is the n×K matrix, so a calibrator can follow in a
    Pipeline. Its columns are the verbalizer's classes in sorted order (``classes_``),
    the order in which scikit-learn encodes labels as 0..K-1, so that a calibrator after
    it reads those codes as the right columns.

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
        self.verbalizer_ = _in_sorted_order(_verbalizer(self.verbalizer))
        self.backend_ = default_backend(self.backend)
        if self.method not in ("auto", "topk", "exact"):
            raise ValueError(f"method must be 'auto', 'topk' or 'exact' (got {self.method!r})")
        self.classes_ = _label_array(self.verbalizer_.classes)
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
    backend : any Backend (Client, LocalModel, TransformersModel, RayPool); None uses the embedded model.
    template, verbalizer, method, k, progress : as for :class:`LogprobVectorizer`.
    calibration : a name from :data:`CALIBRATIONS` (``"a+b"`` chains them, e.g.
        ``"contextual+temperature"``; see :func:`check_calibration`) or a calibrator
        estimator (cloned, and fitted on the scores and the labels of ``classes_``).
        The prior corrections need no labels: "contextual" scores "N/A", "" and
        "[MASK]" through the template, "domain" random strings of words from the
        training examples, "batch" takes the mean class distribution of the training
        examples as the prior.

    The labels in ``y`` are the verbalizer's classes. scikit-learn sometimes hands a
    classifier its labels encoded as 0..K-1 in sorted order instead (cross_val_predict
    with ``method="predict_proba"``, CalibratedClassifierCV, MAPIE's cross-conformal
    classifier); those are read as such when ``y`` holds all of 0..K-1 and they are not
    the verbalizer's classes themselves, and ``classes_`` is then 0..K-1. So integers
    given for a string-keyed verbalizer mean its classes in *sorted* order (0 is
    ``sorted(classes)[0]``), whatever order the verbalizer lists them in; that is not
    the order of ``ck.score``'s columns, which follow the verbalizer.

    Attributes
    ----------
    classes_ : the labels of the columns of predict_proba, sorted as scikit-learn sorts
        them: the verbalizer's classes (all of them, whether or not y has each).
    verbalizer_classes_ : the verbalizer's class of each entry of ``classes_``.
    calibrator_ : the fitted calibrator; a calibrator made from a name is fitted on the
        column indices 0..K-1 of ``classes_``, so that labels of any type work.
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

    def _make_calibrator(self, X: Any, n_classes: int) -> BaseEstimator:
        if not isinstance(self.calibration, str):
            return clone(self.calibration)
        vec = self.vectorizer_
        texts = [str(v) for ex in iter_examples(X) for v in (ex.values() if isinstance(ex, Mapping) else [ex])]
        return make_calibrator(
            self.calibration, list(range(n_classes)), backend=vec.backend_, template=vec.template_,
            verbalizer=vec.verbalizer_, texts=texts, method=self.method, k=self.k,
        )

    def fit(self, X: Any, y: Any) -> "LogprobClassifier":
        """Score X with the model and fit the calibrator on the scores and labels y."""
        if isinstance(self.calibration, str):
            check_calibration(self.calibration)  # before anything is scored
        self.vectorizer_ = LogprobVectorizer(
            self.backend, self.template, self.verbalizer, self.method, self.k, self.progress
        ).fit(X)
        self.vectorizer_.template_.check(X)  # a missing value is an error before anything is scored
        names = list(self.vectorizer_.verbalizer_.classes)
        self.classes_, y_idx = _read_labels(y, names)
        self.verbalizer_classes_ = self.vectorizer_.classes_
        self.calibrator_ = self._make_calibrator(X, len(names))
        scores = self.vectorizer_.transform(X)
        fit_labels = np.arange(len(names)) if isinstance(self.calibration, str) else self.classes_
        try:
            self.calibrator_.fit(scores, fit_labels[y_idx])
        except ValueError:
            if fit_labels is self.classes_ or len(set(y_idx.tolist())) > 1:
                raise
            # The calibrator saw column indices; the user gave labels: name the label.
            label = np.asarray(self.classes_).tolist()[int(y_idx[0])]
            raise ValueError(
                f"y holds 1 class only ([{label!r}]); calibration={self.calibration!r} needs calibration labels of "
                "at least 2 classes to learn from: add examples of another class to X and y"
            ) from None
        self._fit_labels = fit_labels
        learnt = getattr(self.calibrator_, "classes_", None)
        if learnt is not None and len(learnt) < len(fit_labels):
            missing = [c for c in fit_labels.tolist() if c not in set(np.asarray(learnt).tolist())]
            warnings.warn(
                f"the calibrator {type(self.calibrator_).__name__} learnt only the classes of y, and y has no "
                f"example of {missing}: predict_proba gives those probability 0; give y examples of every class",
                UserWarning, stacklevel=2,
            )
        return self

    def scores(self, X: Any) -> LabelScores:
        """The model's uncalibrated class scores of X, one column per entry of ``verbalizer_classes_``."""
        check_is_fitted(self, "calibrator_")
        return self.vectorizer_.transform(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated probabilities (n×K), columns in the order of ``classes_``."""
        proba = np.asarray(self.calibrator_.predict_proba(self.scores(X)))
        columns = getattr(self.calibrator_, "classes_", None)
        if columns is None or np.array_equal(columns, self._fit_labels):
            return proba
        # A calibrator estimator that learnt its own classes_ (say, only those in y):
        # put each of its columns under its label, and nothing under a label it lacks.
        where = {label: i for i, label in enumerate(self._fit_labels.tolist())}
        out = np.zeros((proba.shape[0], len(self.classes_)))
        out[:, [where[label] for label in np.asarray(columns).tolist()]] = proba
        return out

    def predict_log_proba(self, X: Any) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def decision_function(self, X: Any) -> np.ndarray:
        """Calibrated log-probabilities (n×K); for two classes, the log-odds of ``classes_[1]``."""
        lp = self.predict_log_proba(X)
        return lp[:, 1] - lp[:, 0] if lp.shape[1] == 2 else lp

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags


def _label_array(labels: Sequence[Hashable]) -> np.ndarray:
    """Labels as the 1-D array scikit-learn expects of ``classes_``: numbers or strings in
    their own dtype (an object array of ints reads as an "unknown" target type there),
    mixed types as objects."""
    arr = np.asarray(labels)
    if arr.ndim == 1 and arr.dtype.kind in "biufU" and arr.tolist() == list(labels):
        return arr
    out = np.empty(len(labels), dtype=object)
    out[:] = list(labels)
    return out


def _read_labels(y: Any, names: list[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """``(classes_, the column of each label in y)`` for labels ``y`` and the verbalizer's
    classes ``names`` (in sorted order where they sort).

    The labels are either the verbalizer's classes, or scikit-learn's encoding of them:
    cross_val_predict (with method="predict_proba"), CalibratedClassifierCV (its
    temperature method, and cross_val_predict again when ensemble=False) and MAPIE's
    cross-conformal classifier fit the estimator on ``LabelEncoder().fit_transform(y)``,
    the integers 0..K-1 in the sorted order of the classes. Nothing in the call says
    which of the two y is, so y is read in the one way that cannot be misread:

    - labels that are all verbalizer classes are taken as they are, so integer classes
      ({0: ..., 1: ...}) keep meaning themselves, codes or not;
    - otherwise integers are read as codes only when y holds every one of 0..K-1
      (ints, not floats or booleans: LabelEncoder makes ints) and the classes sort.
      scikit-learn encodes the labels present in the whole y, so the codes of a data
      set that lacks a class would stand for other classes; all K codes in one fit
      rule that out. Code i is then ``names[i]``, which is also column i of the scores
      and of predict_proba: calibkit's convention that integer labels are column
      indices, so integers that a user passes for a string-keyed verbalizer are read
      the same way;
    - anything else is an error that says what y should hold.

    Left over: integer classes such as {0, 1, 2} and a data set without class 0, whose
    codes 0, 1 are classes too. They are taken as classes, and ``classes_`` keeps all
    K, more than the entry points that encoded y expect, so those fail loudly
    (an IndexError in cross_val_predict) instead of mislabelling columns.
    """
    arr = np.asarray(y, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.ravel()
    if arr.ndim != 1 or not len(arr):
        raise ValueError(f"y must be a 1-D sequence with one label per example (got shape {arr.shape})")
    values = arr.tolist()
    column = {c: i for i, c in enumerate(names)}

    def column_of(label: Any) -> int:
        try:
            return column.get(label, -1)
        except TypeError:  # an unhashable label
            return -1

    idx = [column_of(v) for v in values]
    if min(idx) >= 0:
        return _label_array(names), np.asarray(idx, dtype=np.intp)
    k = len(names)
    integers = all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values)
    if integers and set(values) <= set(range(k)):
        if not _sorts(names):
            why = "these classes mix types that do not sort, so scikit-learn cannot have encoded them"
        elif len(set(values)) < k:
            why = (f"codes can be read back only when y holds all {k} of them, so every class must be in "
                   f"each training fold (e.g. cv=StratifiedKFold(...))")
        else:
            return np.arange(k), np.asarray(values, dtype=np.intp)
        raise ValueError(
            f"y holds the integer labels {sorted({int(v) for v in values})}, which are not the verbalizer's classes "
            f"{names}. scikit-learn passes a classifier its labels as the codes 0..{k - 1} of the sorted "
            f"classes (cross_val_predict with method='predict_proba', CalibratedClassifierCV, MAPIE), but "
            f"{why}; give y the verbalizer's classes, or key verbalizer= by the labels y uses."
        )
    unknown = sorted({repr(v.item() if isinstance(v, np.generic) else v) for v, i in zip(values, idx) if i < 0})
    raise ValueError(
        f"y has labels {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} that the verbalizer "
        f"does not name; its classes are {names}: give y those labels, or key verbalizer= by the labels y uses"
    )


def _sorts(labels: list[Hashable]) -> bool:
    try:
        return sorted(labels) == labels
    except TypeError:
        return False


class _Renormalise(BaseCalibrator):
    """No calibration: the model's scores renormalised over the classes."""

    _requires_y = False

    def _fit(self, logp: np.ndarray, y_idx: Any, sample_weight: Any) -> None:
        pass

    def _calibrate(self, logp: np.ndarray) -> np.ndarray:
        return logp
