"""Property-based tests: every metric and calibrator on adversarial score matrices.

Generated inputs mix finite log-scores with -inf cells (a class the model gave no
mass, as censored labels do), whole -inf columns, rows that are all equal, labels
of one class and single rows. Each function must give the right answer, or a
ValueError that names the argument; never a NaN in its output, never numpy's or
scipy's own error, and never a RuntimeWarning (an overflow or an invalid value on
the way to an answer). One large case (n = 10^6) runs once, outside hypothesis.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import log_softmax

from calibkit import metrics
from calibkit.calibration import (
    BatchCalibration,
    ContextualCalibration,
    HistogramBinning,
    IsotonicCalibration,
    MatrixScaling,
    PlattScaling,
    TemperatureScaling,
    VectorScaling,
)

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
# An overflow or invalid value inside a metric or a fit is a bug even when the answer looks fine.
pytestmark = [pytest.mark.filterwarnings("error::RuntimeWarning")]

NEG_INF = -np.inf


# --- inputs -----------------------------------------------------------------------------


def _revive(X: np.ndarray) -> np.ndarray:
    """Give each all -inf row one finite score: a row without mass is not a valid input."""
    dead = np.flatnonzero(np.isneginf(X).all(axis=1))
    X[dead, dead % X.shape[1]] = 0.0
    return X


@st.composite
def scores(draw, min_n: int = 1, max_n: int = 25, min_k: int = 2, max_k: int = 5, k: int | None = None):
    """(X, y): n×K log-scores with -inf cells, maybe a -inf column or all rows equal; labels 0..K-1."""
    n = draw(st.integers(min_n, max_n))
    k = draw(st.integers(min_k, max_k)) if k is None else k
    cell = st.one_of(
        st.floats(-60.0, 10.0, allow_nan=False, allow_infinity=False),
        st.just(NEG_INF),
        st.sampled_from([0.0, -1e-300, np.log(1e-12), -745.0]),
    )
    X = draw(hnp.arrays(np.float64, (n, k), elements=cell))
    shape = draw(st.sampled_from(["mixed", "censored column", "rows equal"]))
    if shape == "censored column":
        X[:, draw(st.integers(0, k - 1))] = NEG_INF
    _revive(X)  # may give the censored column a finite score in some row: still a valid input
    if shape == "rows equal":
        X[:] = X[0]
    y = draw(hnp.arrays(np.intp, n, elements=st.integers(0, k - 1)))
    return X, y


def _probs(X: np.ndarray) -> np.ndarray:
    with np.errstate(under="ignore"):
        return np.exp(log_softmax(X, axis=1))


def _check_float(value: float, lo: float = 0.0, hi: float = np.inf) -> None:
    assert isinstance(value, float)
    assert not np.isnan(value)
    assert lo - 1e-12 <= value <= hi + 1e-12


# --- metrics ----------------------------------------------------------------------------


def _reference_ece(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    """Top-label l1 ECE with equal-width bins, the plain way."""
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    hit = (pred == y).astype(float)
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    return sum(abs(hit[idx == b].sum() - conf[idx == b].sum()) for b in range(bins)) / len(y)


@SETTINGS
@given(scores(), st.sampled_from(["logprobs", "probs"]))
def test_metrics_give_the_right_finite_answer(data, kind) -> None:
    X, y = data
    p_exact = _probs(X)
    p = X if kind == "logprobs" else p_exact
    n = len(y)
    assert metrics.accuracy(y, p, input=kind) == pytest.approx(np.mean(p_exact.argmax(1) == y), abs=1e-12)
    with np.errstate(under="ignore"):
        log_py = log_softmax(X, axis=1)[np.arange(n), y]
    exact = metrics.nll(y, X, input="logprobs", eps=0)
    assert exact == pytest.approx(-log_py.mean(), rel=1e-9)  # inf where a true class had no mass
    _check_float(metrics.nll(y, p, input=kind), hi=37.0)  # clipped at machine epsilon: at most 36.04
    onehot = np.eye(X.shape[1])[y]
    brier = metrics.brier(y, p, input=kind, scale_by_half=False)
    assert brier == pytest.approx(np.mean(np.sum((p_exact - onehot) ** 2, axis=1)), abs=1e-9)
    _check_float(brier, hi=2.0)
    assert metrics.ece(y, p, input=kind, bins=10) == pytest.approx(_reference_ece(y, p_exact, 10), abs=1e-9)


@SETTINGS
@given(
    scores(),
    st.integers(1, 20),
    st.sampled_from(["width", "mass"]),
    st.sampled_from(["top-label", "classwise"]),
    st.sampled_from(["l1", "l2", "max"]),
)
def test_every_ece_option_stays_in_range(data, bins, binning, reduction, norm) -> None:
    X, y = data
    value = metrics.ece(y, X, input="logprobs", bins=bins, binning=binning, reduction=reduction, norm=norm)
    _check_float(value, hi=1.0)
    _check_float(metrics.debiased_ece(y, X, input="logprobs", bins=bins, binning=binning, reduction=reduction), hi=1.0)
    d = metrics.brier_decomposition(y, X, input="logprobs", bins=bins, binning=binning)
    for term in (d.brier, d.reliability, d.resolution, d.uncertainty):
        _check_float(term, hi=2.0)


@settings(SETTINGS, max_examples=25)
@given(scores(max_n=15), st.one_of(st.none(), st.floats(0.005, 1.0)))
def test_smooth_ece_and_bootstrap_are_finite(data, sigma) -> None:
    X, y = data
    value, s = metrics.smooth_ece(y, X, input="logprobs", sigma=sigma, return_sigma=True)
    _check_float(value, hi=1.0)
    _check_float(s, hi=1.0)
    r = metrics.bootstrap("smooth_ece", y, X, input="logprobs", sigma=sigma, n_boot=20)
    assert r.estimate == value
    assert not np.isnan(r.samples).any() and r.low <= r.high
    for name in ("accuracy", "brier", "ece", "nll"):
        r = metrics.bootstrap(name, y, X, input="logprobs", n_boot=10)
        assert np.isfinite([r.estimate, r.low, r.high]).all()
        assert r.low <= r.high


BAD_CELLS = {"NaN": np.nan, "+inf": np.inf}


@SETTINGS
@given(scores(), st.sampled_from(sorted(BAD_CELLS)), st.sampled_from(["logprobs", "probs"]), st.data())
def test_metrics_refuse_nan_and_plus_inf_naming_p(data, bad, kind, draw) -> None:
    X, y = data
    p = X.copy() if kind == "logprobs" else _probs(X)
    i, j = draw.draw(st.integers(0, len(y) - 1)), draw.draw(st.integers(0, X.shape[1] - 1))
    p[i, j] = BAD_CELLS[bad]
    for fn in (metrics.accuracy, metrics.nll, metrics.brier, metrics.ece, metrics.smooth_ece):
        with pytest.raises(ValueError, match=r"^p "):
            fn(y, p, input=kind)
    with pytest.raises(ValueError, match=r"^p "):
        metrics.bootstrap("ece", y, p, input=kind, n_boot=5)


def test_metrics_refuse_other_bad_arguments_by_name() -> None:
    p = [[0.8, 0.2], [0.3, 0.7]]
    cases = [
        (lambda: metrics.ece([], np.zeros((0, 2))), "^p is empty"),
        (lambda: metrics.ece([0, 1], np.zeros((2, 0))), "^p is empty"),
        (lambda: metrics.ece([0, 1], [["a", "b"], ["c", "d"]]), "^p must hold numbers"),
        (lambda: metrics.ece([0, -1.0], p), "^y must hold column indices"),
        (lambda: metrics.ece([0, np.nan], p), "^y contains NaN"),
        (lambda: metrics.nll([0, 1], p, eps=np.nan), "^eps="),
        (lambda: metrics.nll([0, 1], p, eps=-1), "^eps="),
        (lambda: metrics.smooth_ece([0, 1], p, sigma=np.inf), "^sigma="),
        (lambda: metrics.bootstrap("accuracy", 1, p), "^y must be 1-D"),
        (lambda: metrics.bootstrap("accuracy", [0, 1, 1], p), "^p must have one row per label"),
        (lambda: metrics.bootstrap("accuracy", [0, 1], p, n_boot=2.5), "^n_boot="),
        (lambda: metrics.paired_bootstrap("accuracy", [0, 1, 1], p, p), "^p_a must have one row per label"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert metrics.accuracy([0.0, 1.0], p) == 1.0  # whole-number float labels are column indices


# --- calibrators ------------------------------------------------------------------------


def _calibrators(k: int, kind: str) -> list:
    content_free = np.log(np.full((1, k), 1.0 / k)) if kind == "logprobs" else np.full((1, k), 1.0 / k)
    made = [
        TemperatureScaling(input=kind),
        VectorScaling(input=kind),
        MatrixScaling(input=kind, max_iter=50),
        IsotonicCalibration(input=kind),
        HistogramBinning(input=kind, bins=5),
        ContextualCalibration(content_free=content_free, input=kind),
        BatchCalibration(input=kind),
    ]
    return made + [PlattScaling(input=kind)] if k == 2 else made


NEEDS_LABELS = (TemperatureScaling, VectorScaling, MatrixScaling, PlattScaling, IsotonicCalibration, HistogramBinning)


def _check_output(cal, X_in: np.ndarray, X_log: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "temperature reached the bound" on tiny sets
        proba = cal.predict_proba(X_in)
        log_proba = cal.predict_log_proba(X_in)
    name = type(cal).__name__
    assert proba.shape == X_log.shape
    assert not np.isnan(proba).any(), name
    assert not np.isnan(log_proba).any() and not np.isposinf(log_proba).any(), name
    assert ((proba >= 0) & (proba <= 1)).all(), name
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9, err_msg=name)
    # equal rows in, equal rows out
    first = np.flatnonzero((X_log == X_log[0]).all(axis=1))
    np.testing.assert_allclose(proba[first], np.broadcast_to(proba[0], proba[first].shape), err_msg=name)
    if isinstance(cal, (TemperatureScaling, ContextualCalibration, BatchCalibration)):
        # these maps keep a class without mass at zero
        assert (proba[np.isneginf(X_log)] == 0).all(), name


@settings(SETTINGS, max_examples=40)
@given(scores(min_n=2, max_n=20, max_k=4), st.sampled_from(["logprobs", "probs"]), st.sampled_from([1.0, 1e300]))
def test_every_calibrator_fits_and_predicts_finite_distributions(data, kind, scale) -> None:
    X, y = data
    y[0], y[-1] = 0, 1  # two classes at least; single-class labels are tested below
    # probabilities need not be normalised: huge ones are scores too
    X_in = X if kind == "logprobs" else _probs(X) * scale
    for cal in _calibrators(X.shape[1], kind):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            cal.fit(X_in, y)
        _check_output(cal, X_in, X)


@settings(SETTINGS, max_examples=30)
@given(scores(min_n=1, max_n=10, max_k=4), st.data())
def test_labels_of_one_class_are_refused_naming_y_or_fit_where_no_labels_are_needed(data, draw) -> None:
    X, _ = data
    k = X.shape[1]
    y = np.full(len(X), draw.draw(st.integers(0, k - 1)))
    for cal in _calibrators(k, "logprobs"):
        cal.set_params(classes=list(range(k)))
        if isinstance(cal, NEEDS_LABELS):
            with pytest.raises(ValueError, match=r"^y holds 1 class only.*at least 2 classes"):
                cal.fit(X, y)
        else:
            cal.fit(X, y)
            _check_output(cal, X, X)


@SETTINGS
@given(scores(max_n=10, max_k=4), st.sampled_from(["NaN", "+inf", "-inf probs"]), st.data())
def test_calibrators_refuse_nan_and_plus_inf_naming_x(data, bad, draw) -> None:
    X, y = data
    y[0], y[-1] = 0, 1
    i, j = draw.draw(st.integers(0, len(X) - 1)), draw.draw(st.integers(0, X.shape[1] - 1))
    kind = "probs" if bad == "-inf probs" else "logprobs"
    good = X if kind == "logprobs" else _probs(X)
    broken = good.copy()
    broken[i, j] = {"NaN": np.nan, "+inf": np.inf, "-inf probs": -np.inf}[bad]
    for cal in _calibrators(X.shape[1], kind):
        if len(X) >= 2:
            with pytest.raises(ValueError, match=r"^X |Negative values in data: X "):
                cal.fit(broken, y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            cal.fit(np.vstack([good, good]), np.concatenate([y, 1 - np.minimum(y, 1)]))
        with pytest.raises(ValueError, match=r"^X |Negative values in data: X "):
            cal.predict_proba(broken)


def test_calibrators_name_x_for_other_bad_shapes() -> None:
    X = np.log([[0.8, 0.2], [0.3, 0.7]])
    for cal in _calibrators(2, "logprobs"):
        with pytest.raises(ValueError, match="^X must be a 2-D"):
            cal.fit(X[0], [0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # two rows: the temperature hits its bound
            cal.fit(X, [0, 1])
        with pytest.raises(ValueError, match="^X must be a 2-D"):
            cal.predict_proba(X[0])
        with pytest.raises(ValueError, match="^X has 1 row"):
            cal.predict_proba([[NEG_INF, NEG_INF]])


def test_a_class_without_mass_keeps_none_under_prior_corrections() -> None:
    # a censored label: column 2 is -inf in every row. The batch's prior for it is zero,
    # which must not turn into a share of the mass after dividing it out.
    with np.errstate(divide="ignore"):
        X = np.log([[0.7, 0.3, 0.0], [0.2, 0.8, 0.0], [0.5, 0.5, 0.0]])
    for cal in (BatchCalibration(), ContextualCalibration(content_free=np.log([[0.5, 0.4, 0.1]]))):
        proba = cal.fit(X).predict_proba(X)
        assert (proba[:, 2] == 0).all()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    ts = TemperatureScaling().fit(X, [1, 1, 0])
    assert (ts.predict_proba(X)[:, 2] == 0).all()


def test_huge_finite_probability_scores_are_renormalised_not_overflowed() -> None:
    X = np.array([[1e308, 1e308], [1e308, 1e307], [1.0, 3.0]])
    expected = X / X.max(axis=1, keepdims=True)
    expected /= expected.sum(axis=1, keepdims=True)
    # a uniform content-free prior changes nothing: the output is X renormalised
    uniform = ContextualCalibration(content_free=[[1.0, 1.0]], input="probs")
    np.testing.assert_allclose(uniform.fit(X).predict_proba(X), expected)
    for cal in (BatchCalibration(input="probs"), TemperatureScaling(input="probs")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            proba = cal.fit(X, [0, 0, 1]).predict_proba(X)
        assert not np.isnan(proba).any()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)


# --- one large case ---------------------------------------------------------------------


def test_one_million_rows_with_a_censored_column() -> None:
    rng = np.random.default_rng(0)
    n, k = 10**6, 3
    X = rng.normal(size=(n, k)) * 2
    X[:, 2] = NEG_INF
    X[rng.integers(0, n, 1000), 1] = NEG_INF
    y = rng.integers(0, 2, n)
    p = _probs(X)
    start = time.monotonic()
    assert metrics.accuracy(y, X, input="logprobs") == np.mean(p.argmax(1) == y)
    assert metrics.brier(y, X, input="logprobs", scale_by_half=False) == pytest.approx(
        np.mean(np.sum((p - np.eye(k)[y]) ** 2, axis=1)), rel=1e-9
    )
    _check_float(metrics.nll(y, X, input="logprobs"), hi=37.0)
    assert metrics.ece(y, X, input="logprobs", bins=15) == pytest.approx(_reference_ece(y, p, 15), abs=1e-9)
    _check_float(metrics.ece(y, X, input="logprobs", binning="mass", reduction="classwise", norm="l2"), hi=1.0)
    _check_float(metrics.smooth_ece(y, X, input="logprobs"), hi=1.0)
    r = metrics.bootstrap("accuracy", y, X, input="logprobs", n_boot=3)
    assert r.low <= r.high
    for cal in _calibrators(k, "logprobs"):
        cal.set_params(classes=[0, 1, 2])
        if "max_iter" in cal.get_params():  # L-BFGS: a few steps show the arithmetic holds; keeps time bounded
            cal.set_params(max_iter=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            cal.fit(X, y)
            proba = cal.predict_proba(X[:5000])
        assert not np.isnan(proba).any(), type(cal).__name__
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert time.monotonic() - start < 120
