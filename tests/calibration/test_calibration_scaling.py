import pickle
import warnings

import numpy as np
import pytest
from scipy.optimize import brentq
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from calibkit import metrics
from calibkit.calibration import (
    MatrixScaling,
    PlattScaling,
    TemperatureScaling,
    VectorScaling,
)


def synthetic(n, k, temperature, seed=0, scale=3.0, bias=None):
    """Logits z and labels drawn from softmax(z / temperature + bias)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    shift = 0.0 if bias is None else bias
    y = (z / temperature + shift + rng.gumbel(size=(n, k))).argmax(axis=1)
    return z, y


class Scores:
    """Stand-in for the core's LabelScores: __array__ gives the logprobs, .classes names the columns."""

    def __init__(self, logprobs, classes):
        self.logprobs = np.asarray(logprobs, dtype=float)
        self.classes = list(classes)

    def __array__(self, dtype=None, copy=None):
        return self.logprobs if dtype is None else self.logprobs.astype(dtype)

    def __len__(self):
        return len(self.logprobs)


class Identity(ClassifierMixin, BaseEstimator):
    """A 'model' whose decision function is its input, to feed scikit-learn's calibration."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def decision_function(self, X):
        return np.asarray(X)

    def predict(self, X):
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_temperature_recovered_within_two_percent(temperature):
    z, y = synthetic(40_000, 5, temperature, seed=1)
    fitted = TemperatureScaling().fit(z, y).temperature_
    assert abs(fitted / temperature - 1) < 0.02


@pytest.mark.parametrize("seed", range(12))
def test_fitted_nll_never_worse_than_identity(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    z, y = synthetic(n, int(rng.integers(2, 6)), float(rng.uniform(0.3, 5)), seed=seed)
    y[:2] = [0, 1]  # at least two classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny sets may pin T at a bound
        ts = TemperatureScaling().fit(z, y)
    assert metrics.nll(y, ts.predict_proba(z), eps=0) <= metrics.nll(y, z, input="logprobs", eps=0) + 1e-12


def test_temperature_matches_scikit_learn():
    z, y = synthetic(3000, 4, 2.5, seed=3)
    ours = TemperatureScaling().fit(z, y)
    ref = CalibratedClassifierCV(FrozenEstimator(Identity().fit(z, y)), method="temperature").fit(z, y)
    beta = ref.calibrated_classifiers_[0].calibrators[0].beta_
    assert 1 / ours.temperature_ == pytest.approx(beta, rel=1e-5)
    np.testing.assert_allclose(ours.predict_proba(z), ref.predict_proba(z), atol=1e-6)


def test_unnormalised_logprobs_and_probs_give_the_same_fit():
    z, y = synthetic(2000, 3, 2.0, seed=4)
    logp = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
    tiny_mass = logp + np.log(0.002)  # label mass of a base LM: rows sum to 0.002
    t_logit = TemperatureScaling().fit(z, y).temperature_
    assert TemperatureScaling().fit(tiny_mass, y).temperature_ == pytest.approx(t_logit, rel=1e-9)
    assert TemperatureScaling(input="probs").fit(np.exp(logp), y).temperature_ == pytest.approx(t_logit, rel=1e-9)


def test_minus_inf_scores_are_handled():
    z, y = synthetic(500, 3, 1.5, seed=5)
    z[:50, 2] = -np.inf  # the model gives class 2 no mass on these rows
    y[:50] = np.where(y[:50] == 2, 0, y[:50])
    proba = TemperatureScaling().fit(z, y).predict_proba(z)
    assert proba[:50, 2].max() < 1e-6  # floored at 1e-12 before scaling, so still ~0
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)

    y[0] = 2  # ... and yet one of them is class 2: a large but finite loss
    ts = TemperatureScaling().fit(z, y)
    proba = ts.predict_proba(z)
    assert np.isfinite(ts.temperature_) and np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_label_scores_name_the_columns_and_absent_classes_keep_theirs():
    z, _ = synthetic(300, 3, 1.0, seed=6)
    y = np.where(z[:, 0] > z[:, 1], "world", "sports")  # "business" never occurs
    scores = Scores(z, ["world", "sports", "business"])
    ts = TemperatureScaling().fit(scores, y)
    assert ts.classes_.tolist() == ["world", "sports", "business"]
    assert ts.predict_proba(scores).shape == (300, 3)
    assert set(ts.predict(scores)) <= {"world", "sports", "business"}
    # a plain array needs classes= for the same labels
    with pytest.raises(ValueError, match="classes="):
        TemperatureScaling().fit(z, y)
    explicit = TemperatureScaling(classes=["world", "sports", "business"]).fit(z, y)
    assert explicit.temperature_ == pytest.approx(ts.temperature_)


def test_integer_labels_are_column_indices():
    z, y = synthetic(300, 4, 1.0, seed=7)
    y = np.where(y == 3, 0, y)  # column 3 never the label
    ts = TemperatureScaling().fit(z, y)
    assert ts.classes_.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("X", "kwargs", "message"),
    [
        ([[0.0, np.nan], [0.0, 0.0]], {}, "NaN"),
        ([[0.0, np.inf], [0.0, 0.0]], {}, r"\+inf"),
        ([[-np.inf, -np.inf], [0.0, 0.0]], {}, "-inf for every class"),
        ([[0.5, -0.1], [0.5, 0.5]], {"input": "probs"}, "input='logprobs'"),
        ([[0.0, 0.0], [0.2, 0.8]], {"input": "probs"}, "all zero"),
        ([[0.1, 0.9], [0.5, 0.5]], {"input": "logits"}, "input='logprobs'"),
        ([[0.1], [0.2]], {}, "1 feature"),
    ],
)
def test_bad_input_names_the_problem(X, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TemperatureScaling(**kwargs).fit(np.array(X), [0, 1])


def test_single_class_labels_are_refused():
    with pytest.raises(ValueError, match="1 class"):
        TemperatureScaling().fit(np.zeros((4, 2)), [1, 1, 1, 1])


def test_predict_checks_the_column_count():
    z, y = synthetic(100, 3, 1.0)
    ts = TemperatureScaling().fit(z, y)
    with pytest.raises(ValueError, match="features"):
        ts.predict_proba(z[:, :2])


def objective(est, X, y):
    """Mean NLL plus the estimator's own penalty, from its fitted parameters."""
    logp = X - np.logaddexp.reduce(X, axis=1, keepdims=True)
    k = X.shape[1]
    if isinstance(est, VectorScaling):
        a = logp * est.coef_ + est.intercept_
        pen = est.reg / k * (np.sum((est.coef_ - 1) ** 2) + np.sum(est.intercept_**2))
    else:
        a = logp @ est.coef_.T + est.intercept_
        D = est.coef_ - np.eye(k)
        if est.regularization == "odir":
            D = D * (1 - np.eye(k))
            pen = est.lam / (k * (k - 1)) * np.sum(D**2) + est.mu / k * np.sum(est.intercept_**2)
        else:
            pen = est.lam / k**2 * np.sum(D**2) + est.mu / k * np.sum(est.intercept_**2)
    return metrics.nll(y, a, input="logprobs", eps=0) + pen


@pytest.mark.parametrize(
    "est", [VectorScaling(), MatrixScaling(regularization="odir"), MatrixScaling(regularization="l2")]
)
def test_scaling_fits_are_stationary(est):
    """No small step of any parameter lowers the objective: the analytic gradients are right."""
    z, y = synthetic(2000, 3, 1.7, seed=8, bias=np.array([0.5, 0.0, -0.5]))
    est.fit(z, y)
    base = objective(est, z, y)
    for name in ("coef_", "intercept_"):
        params = getattr(est, name)
        for idx in np.ndindex(params.shape):
            for step in (1e-3, -1e-3):
                moved = clone(est)
                moved.__dict__.update({k: v for k, v in est.__dict__.items() if k.endswith("_")})
                arr = params.copy()
                arr[idx] += step
                setattr(moved, name, arr)
                assert objective(moved, z, y) >= base - 1e-9


def test_vector_scaling_recovers_a_class_bias():
    bias = np.array([1.0, 0.0, -1.0])
    z, y = synthetic(200_000, 3, 1.0, seed=9, bias=bias)
    vs = VectorScaling(reg=0.0).fit(z, y)
    np.testing.assert_allclose(vs.intercept_, bias - bias.mean(), atol=0.03)
    np.testing.assert_allclose(vs.coef_, 1.0, atol=0.03)


def test_matrix_scaling_improves_held_out_nll_on_mixed_up_scores():
    rng = np.random.default_rng(10)
    z, y = synthetic(6000, 4, 1.0, seed=10)
    mix = np.eye(4) + 0.4 * rng.normal(size=(4, 4))
    scores = z @ mix.T  # the model's scores mix the classes up
    ms = MatrixScaling().fit(scores[:3000], y[:3000])
    before = metrics.nll(y[3000:], scores[3000:], input="logprobs")
    after = metrics.nll(y[3000:], ms.predict_proba(scores[3000:]))
    ts_after = metrics.nll(y[3000:], TemperatureScaling().fit(scores[:3000], y[:3000]).predict_proba(scores[3000:]))
    assert after < ts_after < before


def test_matrix_scaling_rejects_unknown_regularization():
    with pytest.raises(ValueError, match="odir"):
        MatrixScaling(regularization="l1").fit(np.zeros((4, 2)), [0, 1, 0, 1])


def test_platt_matches_scikit_learn_sigmoid():
    rng = np.random.default_rng(11)
    margin = rng.normal(size=800) * 2
    y = (rng.uniform(size=800) < 1 / (1 + np.exp(-(0.6 * margin + 0.3)))).astype(int)
    X = np.stack([np.zeros(800), margin], axis=1)  # log-scores whose difference is the margin
    ours = PlattScaling().fit(X, y)

    class Margin(Identity):
        def decision_function(self, X):
            return np.asarray(X)[:, 0]

    ref = CalibratedClassifierCV(FrozenEstimator(Margin().fit(margin[:, None], y)), method="sigmoid")
    ref.fit(margin[:, None], y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(margin[:, None]), atol=1e-4)


def test_platt_is_binary_only():
    with pytest.raises(ValueError, match="Only binary"):
        PlattScaling().fit(np.zeros((3, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="two classes"):
        PlattScaling().fit(np.zeros((4, 3)), [0, 1, 0, 1])


@pytest.mark.parametrize("est", [TemperatureScaling(), VectorScaling(), MatrixScaling(), PlattScaling()])
def test_clone_and_pickle_keep_predictions(est):
    z, y = synthetic(400, 2, 1.3, seed=12)
    fitted = clone(est).fit(z, y)
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict_proba(z), fitted.predict_proba(z))
    assert clone(fitted).get_params() == est.get_params()


def test_sample_weight_equals_repetition():
    z, y = synthetic(300, 3, 2.0, seed=13)
    w = np.random.default_rng(13).integers(0, 3, size=300)
    weighted = TemperatureScaling().fit(z, y, sample_weight=w).temperature_
    repeated = TemperatureScaling().fit(np.repeat(z, w, axis=0), np.repeat(y, w)).temperature_
    assert weighted == pytest.approx(repeated, rel=1e-9)


def reference_temperature(z, y, sample_weight=None):
    """The plain fit: the root of the NLL's slope in s = 1/T on the floored, renormalised float64 log-probs."""
    logp = np.maximum(z - np.logaddexp.reduce(z, axis=1, keepdims=True), np.log(1e-12))
    n = len(y)
    w = np.full(n, 1.0 / n) if sample_weight is None else sample_weight / np.sum(sample_weight)
    zc = logp - logp.max(axis=1, keepdims=True)
    wzy = w @ zc[np.arange(n), y]

    def slope(s):
        e = np.exp(s * zc)
        return w @ ((e * zc).sum(axis=1) / e.sum(axis=1)) - wzy

    return 1.0 / brentq(slope, 0.01, 100.0, xtol=1e-14, rtol=1e-14)


REFERENCE_CASES = [
    # n, k, true temperature, seed, weighted: the largest starts from a subsample
    (5000, 4, 2.5, 20, False),
    (20_000, 10, 0.7, 21, True),
    (3000, 3, 1.3, 22, True),
    (150_000, 3, 1.8, 23, False),
]


@pytest.mark.parametrize(("n", "k", "temperature", "seed", "weighted"), REFERENCE_CASES)
def test_temperature_matches_float64_reference_and_scikit_learn_to_1e6(n, k, temperature, seed, weighted):
    z, y = synthetic(n, k, temperature, seed=seed)
    w = np.random.default_rng(seed).uniform(0, 3, size=n) if weighted else None
    ours = TemperatureScaling().fit(z, y, sample_weight=w).temperature_
    assert ours == pytest.approx(reference_temperature(z, y, w), rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the frozen model takes no weights: it needs none
        ref = CalibratedClassifierCV(FrozenEstimator(Identity().fit(z, y)), method="temperature")
        ref.fit(z, y, sample_weight=w)
    assert ours == pytest.approx(1 / ref.calibrated_classifiers_[0].calibrators[0].beta_, rel=1e-6)


@pytest.mark.parametrize("seed", [30, 31])
def test_temperature_matches_float64_reference_with_minus_inf_scores(seed):
    z, y = synthetic(8000, 5, 1.5, seed=seed)
    rng = np.random.default_rng(seed)
    z[rng.uniform(size=z.shape) < 0.15] = -np.inf  # classes without mass, some of them the true class
    z[:, 0] = np.where(np.isneginf(z).all(axis=1), 0.0, z[:, 0])
    z[:20] -= np.array([0, 30, 60, 90, 120])  # far below the floor of 1e-12
    assert np.isneginf(z[np.arange(len(y)), y]).any()
    w = rng.uniform(0, 2, size=len(y))
    for weights in (None, w):
        ours = TemperatureScaling().fit(z, y, sample_weight=weights).temperature_
        assert ours == pytest.approx(reference_temperature(z, y, weights), rel=1e-6)


@pytest.mark.parametrize("n", [200_000, 5000])
def test_labels_without_signal_stop_at_the_upper_bound_with_a_warning(n):
    rng = np.random.default_rng(40)
    z = rng.normal(size=(n, 5)) * 2
    # labels drawn apart from z; on the small set, the least likely class, so that chance gives no signal either
    y = rng.integers(0, 5, size=n) if n > 100_000 else z.argmin(axis=1)
    with pytest.warns(UserWarning, match="upper end .* no signal .* check that y matches"):
        ts = TemperatureScaling().fit(z, y)
    assert ts.temperature_ == 100.0
    assert ts.n_iter_ <= 2  # stopped once the slope at the bound pointed outwards
    proba = ts.predict_proba(z)
    assert np.abs(proba - 0.2).max() < 0.05  # nearly uniform


def test_separable_labels_stop_at_the_lower_bound_with_a_warning():
    z, _ = synthetic(50_000, 4, 1.0, seed=41)
    with pytest.warns(UserWarning, match="temperature reached the bound T = 0.01, the lower end .* separable"):
        ts = TemperatureScaling().fit(z, z.argmax(axis=1))
    assert ts.temperature_ == 0.01 and ts.n_iter_ <= 2


def test_a_fit_inside_the_bounds_does_not_warn():
    z, y = synthetic(50_000, 4, 3.0, seed=42)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ts = TemperatureScaling().fit(z, y)
    assert 2.8 < ts.temperature_ < 3.2 and ts.n_iter_ <= 10
