import pickle

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline

from calibkit.calibration import (
    BatchCalibration,
    ContextualCalibration,
    TemperatureScaling,
)


class Scores:
    def __init__(self, logprobs, classes):
        self.logprobs = np.asarray(logprobs, dtype=float)
        self.classes = list(classes)

    def __array__(self, dtype=None, copy=None):
        return self.logprobs


def test_contextual_calibration_worked_example():
    """Zhao et al. 2021, by hand.

    Label probabilities (unnormalised, as a base LM gives them) of the three
    content-free prompts:       N/A    [0.030, 0.010]
                                ""     [0.020, 0.020]
                                [MASK] [0.040, 0.000]
    Their mean is [0.030, 0.010], normalised p_cf = [0.75, 0.25], so
    W = diag(1/0.75, 1/0.25) = diag(4/3, 4).
    A test prompt with label probabilities [0.006, 0.004] normalises to
    p = [0.6, 0.4]; W p = [0.8, 1.6]; renormalised q = [1/3, 2/3].
    The uncalibrated prediction (class 0) flips to class 1.
    """
    cf = np.array([[0.030, 0.010], [0.020, 0.020], [0.040, 0.000]])
    x = np.array([[0.006, 0.004]])
    with np.errstate(divide="ignore"):
        log_cf = np.log(cf)  # log 0 = -inf: a class with no mass
    cc = ContextualCalibration(content_free=log_cf).fit(np.log(x))
    np.testing.assert_allclose(cc.prior_, [0.75, 0.25])
    np.testing.assert_allclose(cc.predict_proba(np.log(x)), [[1 / 3, 2 / 3]])
    assert cc.predict(np.log(x)).tolist() == [1]
    # the same numbers from Zhao et al.'s reference code path: W = inv(diag(p_cf)), b = 0
    p_cf = cf.mean(axis=0) / cf.mean(axis=0).sum()
    W = np.linalg.inv(np.identity(2) * p_cf)
    p = x[0] / x[0].sum()
    calibrated = W @ p
    np.testing.assert_allclose(cc.predict_proba(np.log(x))[0], calibrated / calibrated.sum())
    # probabilities in, the same answer
    same = ContextualCalibration(content_free=cf, input="probs").fit(x)
    np.testing.assert_allclose(same.predict_proba(x), [[1 / 3, 2 / 3]])


def test_content_free_prior_averages_raw_probabilities_like_the_reference_code():
    cf = np.array([[0.09, 0.01], [0.001, 0.009]])  # very different label mass
    cc = ContextualCalibration(content_free=cf, input="probs").fit(cf)
    np.testing.assert_allclose(cc.prior_, [0.091 / 0.11, 0.019 / 0.11])  # not [0.5, 0.5]


def test_prior_corrections_need_no_labels_but_need_their_prior():
    X = np.log([[0.2, 0.8], [0.6, 0.4]])
    assert BatchCalibration().fit(X).classes_.tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"content_free=calibkit.content_free_scores\(template, verbalizer, backend\)"):
        ContextualCalibration().fit(X)
    with pytest.raises(ValueError, match="content_free has 3 columns"):
        ContextualCalibration(content_free=[[0.0, 0.0, 0.0]]).fit(X)


def test_batch_calibration_divides_by_the_batch_mean():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([4, 1, 1], size=200)
    bc = BatchCalibration(input="probs").fit(p)
    mean = p.mean(axis=0)
    np.testing.assert_allclose(bc.prior_, mean / mean.sum())
    expected = p / mean
    np.testing.assert_allclose(bc.predict_proba(p), expected / expected.sum(axis=1, keepdims=True))
    # the corrected batch is balanced on average: the label bias is gone
    assert np.ptp(bc.predict_proba(p).mean(axis=0)) < np.ptp(p.mean(axis=0)) / 3


def test_batch_calibration_running_estimate_equals_the_full_batch():
    rng = np.random.default_rng(1)
    X = np.log(rng.dirichlet([3, 1], size=300)) + np.log(0.002)
    stream = BatchCalibration()
    for chunk in np.array_split(X, 7):
        stream.partial_fit(chunk)
    np.testing.assert_allclose(stream.prior_, BatchCalibration().fit(X).prior_)
    assert stream.n_seen_ == 300
    w = rng.integers(1, 4, size=300)
    weighted = BatchCalibration().fit(X, sample_weight=w)
    np.testing.assert_allclose(weighted.prior_, BatchCalibration().fit(np.repeat(X, w, axis=0)).prior_)


def test_prior_correction_then_temperature_is_one_pipeline():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(600, 3)) * 2
    y = (z / 2 + rng.gumbel(size=z.shape)).argmax(axis=1)
    biased = z + np.array([1.5, 0.0, 0.0])  # the model leans towards class 0
    cf = np.array([[1.5, 0.0, 0.0]])
    pipe = make_pipeline(ContextualCalibration(content_free=cf), TemperatureScaling()).fit(biased, y)
    proba = pipe.predict_proba(biased)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # the correction removes the bias exactly, so the temperature matches the unbiased fit
    assert pipe[-1].temperature_ == pytest.approx(TemperatureScaling().fit(z, y).temperature_, rel=1e-6)
    again = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(again.predict_proba(biased), proba)


def test_transform_returns_corrected_log_probabilities():
    X = np.log([[0.2, 0.8], [0.6, 0.4]])
    bc = BatchCalibration().fit(X)
    np.testing.assert_allclose(np.exp(bc.transform(X)), bc.predict_proba(X))
