import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from calibkit import metrics
from calibkit.calibration import HistogramBinning, IsotonicCalibration


def overconfident(n, k, seed=0):
    """Probabilities that are sharper than the truth: labels come from softmax(z / 2)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 3
    y = (z / 2 + rng.gumbel(size=(n, k))).argmax(axis=1)
    p = np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))
    return p, y


class Column1(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.asarray(X)

    def predict(self, X):
        return np.argmax(X, axis=1)


@pytest.mark.parametrize("cls", [IsotonicCalibration, HistogramBinning])
def test_binning_lowers_calibration_error_out_of_sample(cls):
    p, y = overconfident(8000, 3, seed=1)
    cal = cls(input="probs").fit(p[:4000], y[:4000])
    before = metrics.ece(y[4000:], p[4000:])
    after = metrics.ece(y[4000:], cal.predict_proba(p[4000:]))
    assert after < before / 2


@pytest.mark.parametrize("cls", [IsotonicCalibration, HistogramBinning])
def test_outputs_are_clipped_distributions(cls):
    p, y = overconfident(500, 4, seed=2)
    proba = cls(input="probs", clip=1e-3).fit(p, y).predict_proba(p)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert proba.min() > 0 and proba.max() < 1


def test_isotonic_binary_matches_scikit_learn():
    p, y = overconfident(1000, 2, seed=3)
    ours = IsotonicCalibration(input="probs", clip=0.0).fit(p, y).predict_proba(p)
    ref = CalibratedClassifierCV(FrozenEstimator(Column1().fit(p, y)), method="isotonic").fit(p, y)
    np.testing.assert_allclose(ours, ref.predict_proba(p), atol=1e-12)


def test_isotonic_keeps_a_column_for_a_class_absent_from_the_labels():
    p, y = overconfident(600, 3, seed=4)
    y = np.where(y == 2, 0, y)
    cal = IsotonicCalibration(input="probs", clip=1e-4).fit(p, y)
    proba = cal.predict_proba(p)
    assert proba.shape == (600, 3)
    assert cal.classes_.tolist() == [0, 1, 2]
    assert proba[:, 2].max() < 1e-3


def test_histogram_bins_predict_their_observed_frequency():
    p = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4 + [[0.2, 0.8]] * 2)
    y = np.array([0, 0, 0, 1] + [0, 1, 1, 1] + [1, 1])
    hb = HistogramBinning(bins=10, binning="width", input="probs", clip=0.0).fit(p, y)
    np.testing.assert_allclose(hb.predict_proba(p)[:, 1], [0.25] * 4 + [0.75] * 4 + [1.0] * 2)
    _, values = hb.maps_[0]
    assert values[0] == pytest.approx(0.05)  # an empty bin predicts its midpoint


def test_histogram_mass_bins_keep_ties_together():
    p1 = np.array([0.3] * 7 + [0.7] * 3)
    p = np.stack([1 - p1, p1], axis=1)
    y = np.array([0, 1, 0, 0, 1, 0, 0, 1, 1, 0])
    hb = HistogramBinning(bins=4, binning="mass", input="probs", clip=0.0).fit(p, y)
    # equal-mass bins would split the seven ties at 0.3; they stay in one bin instead
    np.testing.assert_allclose(hb.predict_proba(p)[:, 1], [2 / 7] * 7 + [2 / 3] * 3)


def test_bad_binning_settings_are_named():
    p, y = overconfident(50, 2)
    with pytest.raises(ValueError, match="binning"):
        HistogramBinning(binning="quantile", input="probs").fit(p, y)
    with pytest.raises(ValueError, match="bins"):
        HistogramBinning(bins=0, input="probs").fit(p, y)
    with pytest.raises(ValueError, match="clip"):
        IsotonicCalibration(clip=0.7, input="probs").fit(p, y)
