"""Selective prediction: the risk-coverage curve, AURC, and a threshold whose error guarantee holds on held-out data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import calibkit as ck
from calibkit import selective


def test_the_curve_has_one_point_per_distinct_threshold_and_aurc_is_its_area() -> None:
    y = np.array([0, 0, 1, 1, 0])
    p = np.array([[0.9, 0.1], [0.7, 0.3], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])
    c = selective.risk_coverage(y, p)
    assert c.threshold.tolist() == [0.9, 0.8, 0.7, 0.6]  # the two 0.7s are one threshold
    assert c.accepted.tolist() == [1, 2, 4, 5] and c.errors.tolist() == [0, 0, 1, 2]
    assert selective.aurc(y, p) == pytest.approx(0.2 * 0 + 0.2 * 0 + 0.4 * 0.25 + 0.2 * 0.4)
    assert selective.accuracy_at_coverage(y, p, 0.4) == 1.0
    perfect = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6], [0.45, 0.55]])
    assert selective.excess_aurc([0, 0, 0, 0, 0], perfect) == pytest.approx(0.0)
    assert selective.excess_aurc(y, p) > 0


def test_another_signal_ranks_the_examples() -> None:
    y = np.array([0, 1, 0])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]])
    mass = np.array([0.001, 0.5, 0.2])  # the label mass says the second is surest
    assert selective.risk_coverage(y, p, signal=mass).errors.tolist() == [1, 1, 1]
    assert selective.aurc(y, p, signal=mass) > selective.aurc(y, p)


@pytest.mark.parametrize("kwargs, match", [
    ({"signal": [0.1, 0.2]}, "signal must have one value per example"),
    ({"signal": [0.1, np.nan, 0.3]}, "signal contains NaN"),
])
def test_a_bad_signal_names_itself(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        selective.aurc([0, 1, 0], [[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]], **kwargs)


def test_bad_targets_are_refused_and_an_impossible_one_abstains_with_a_warning() -> None:
    y, p = [0, 1], [[0.9, 0.1], [0.8, 0.2]]
    with pytest.raises(ValueError, match="target_error must be in"):
        selective.select_threshold(y, p, target_error=0)
    with pytest.raises(ValueError, match="delta must be in"):
        selective.select_threshold(y, p, delta=1)
    with pytest.raises(ValueError, match="coverage must be in"):
        selective.accuracy_at_coverage(y, p, 0)
    with pytest.warns(UserWarning, match="abstain on all"):
        t = selective.select_threshold(y, p, target_error=0.1)
    assert t.threshold == np.inf and not t.accept([0.99, 1.0]).any()


def _held_out_errors(conf: np.ndarray, correct: np.ndarray, splits: int, target: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The error among the accepted held-out half (0 where nothing is accepted) and the share accepted,
    over random halvings."""
    rng = np.random.default_rng(seed)
    p = np.c_[conf, 1 - conf]
    y = np.where(correct, 0, 1)
    out, covered = [], []
    for _ in range(splits):
        idx = rng.permutation(len(y))
        cal, test = idx[: len(y) // 2], idx[len(y) // 2 :]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            t = selective.select_threshold(y[cal], p[cal], target_error=target, delta=0.1)
        accepted = t.accept(conf[test])
        out.append(float(np.mean(~correct[test][accepted])) if accepted.any() else 0.0)
        covered.append(float(np.mean(accepted)))
    return np.array(out), np.array(covered)


def test_the_chosen_threshold_keeps_the_error_on_simulated_calibrated_scores() -> None:
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.5, 1.0, 2000)
    correct = rng.uniform(size=2000) < conf
    errors, covered = _held_out_errors(conf, correct, 300, 0.1, seed=2)
    assert np.mean(errors <= 0.1) >= 0.9 and covered.mean() > 0.1  # the ideal, 0.4, less the bound's price


def test_the_chosen_threshold_keeps_a_ten_percent_error_on_the_embedded_models_scores(bundled_scores) -> None:
    ds, scores, cf = bundled_scores("sentiment")  # scored once per session (test_conformal reads them too)
    proba = ck.ContextualCalibration(content_free=cf).fit(scores).predict_proba(scores)
    classes = list(ds.verbalizer.classes)
    truth = np.array(ds.y, dtype=object)
    # contextually calibrated (accuracy 0.96 here): a 10% target accepts nearly all
    correct = np.array(classes, dtype=object)[proba.argmax(axis=1)] == truth
    errors, covered = _held_out_errors(proba.max(axis=1), correct, 200, 0.1, seed=0)
    assert np.mean(errors <= 0.1) >= 0.9 and covered.mean() > 0.8, (np.mean(errors <= 0.1), covered.mean())
    # uncalibrated (accuracy about 0.5): a 20% target must abstain on much, and still holds
    raw_correct = np.array(classes, dtype=object)[scores.probs.argmax(axis=1)] == truth
    errors, covered = _held_out_errors(scores.probs.max(axis=1), raw_correct, 200, 0.2, seed=0)
    assert np.mean(errors <= 0.2) >= 0.9 and 0.2 < covered.mean() < 0.9, (np.mean(errors <= 0.2), covered.mean())
    # the label mass, a second abstention signal, on the same curve's terms
    by_mass = selective.aurc(ds.y, proba, signal=scores.label_mass, classes=classes)
    by_conf = selective.aurc(ds.y, proba, classes=classes)
    assert 0 <= by_conf <= 1 and 0 <= by_mass <= 1
