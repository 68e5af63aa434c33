import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline

from calibkit.calibration import (
    BatchCalibration,
    CrossFitCalibration,
    IsotonicCalibration,
    TemperatureScaling,
    cross_val_calibrate,
)


def data(n=300, k=3, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 3
    y = (z / 2 + rng.gumbel(size=(n, k))).argmax(axis=1)
    return z, y


def test_each_row_is_predicted_by_a_calibrator_that_never_saw_it():
    z, y = data()
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    oof = cross_val_calibrate(TemperatureScaling(), z, y, cv=cv)
    for train, test in cv.split(z, y):
        fold = TemperatureScaling().fit(z[train], y[train])
        np.testing.assert_allclose(oof[test], fold.predict_proba(z[test]))


def test_a_fold_missing_a_class_still_gets_its_column():
    z, y = data(120)
    order = np.argsort(y, kind="stable")
    z, y = z[order], y[order]  # unshuffled KFold on sorted labels: a training fold lacks a class
    labels = np.array(["a", "b", "c"])[y]
    oof = cross_val_calibrate(IsotonicCalibration(), z, labels, cv=KFold(3), classes=["a", "b", "c"])
    assert oof.shape == (120, 3)
    np.testing.assert_allclose(oof.sum(axis=1), 1.0)


def test_pipelines_get_the_classes_too():
    z, y = data(200)
    labels = np.array(["a", "b", "c"])[y]
    pipe = make_pipeline(BatchCalibration(), TemperatureScaling())
    oof = cross_val_calibrate(pipe, z, labels, cv=KFold(4))
    assert oof.shape == (200, 3)


def test_cross_fit_estimator_keeps_out_of_fold_predictions_and_averages_folds():
    z, y = data(400, seed=1)
    cf = CrossFitCalibration(TemperatureScaling(), cv=KFold(5)).fit(z, y)
    np.testing.assert_allclose(cf.oof_proba_, cross_val_calibrate(TemperatureScaling(), z, y, cv=KFold(5)))
    mean = np.mean([c.predict_proba(z[:10]) for c in cf.calibrators_], axis=0)
    np.testing.assert_allclose(cf.predict_proba(z[:10]), mean)
    assert cf.predict(z[:10]).tolist() == cf.classes_[mean.argmax(axis=1)].tolist()

    refit = CrossFitCalibration(TemperatureScaling(), cv=KFold(5), ensemble=False).fit(z, y)
    whole = TemperatureScaling().fit(z, y)
    assert refit.calibrator_.temperature_ == pytest.approx(whole.temperature_)
    assert clone(refit).get_params()["ensemble"] is False


def test_cross_fit_rejects_bad_scores():
    z, y = data(50)
    z[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cross_val_calibrate(TemperatureScaling(), z, y)
