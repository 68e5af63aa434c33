"""Conformal prediction sets (MAPIE under calibkit.conformal): coverage over many random splits, and the set metrics."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mapie")

import calibkit as ck  # noqa: E402
from calibkit import conformal  # noqa: E402


def _calibrated(ds, scores, cf) -> tuple[np.ndarray, np.ndarray, list]:
    """A bundled set scored by the embedded model, contextually calibrated (no labels used)."""
    proba = ck.ContextualCalibration(content_free=cf).fit(scores).predict_proba(scores)
    return proba, np.array(ds.y, dtype=object), list(ds.verbalizer.classes)


@pytest.fixture(scope="module")
def bundled(bundled_scores):
    return {name: _calibrated(*bundled_scores(name)) for name in ("sentiment", "topic")}


@pytest.mark.parametrize("data, method", [("sentiment", "lac"), ("topic", "lac"), ("topic", "aps"), ("topic", "raps")])
def test_sets_cover_ninety_percent_on_average_over_200_random_splits(bundled, data, method) -> None:
    proba, y, classes = bundled[data]
    rng = np.random.default_rng(0)
    covered, sizes = [], []
    for i in range(200):
        idx = rng.permutation(len(y))
        cal, test = idx[: len(y) // 2], idx[len(y) // 2 :]
        sets = conformal.conformal_sets(proba[cal], y[cal], proba[test], alpha=0.1, method=method,
                                        classes=classes, random_state=i)
        covered.append(conformal.coverage(y[test], sets, classes=classes).estimate)
        sizes.append(conformal.mean_set_size(sets))
    n_cal = len(y) // 2
    # split conformal: 1 - alpha <= E[coverage], and for LAC <= 1 - alpha + 1 / (n_cal + 1)
    assert abs(np.mean(covered) - 0.9) <= 0.02, np.mean(covered)
    assert np.mean(covered) >= 0.9 - 0.005, np.mean(covered)  # the guarantee, less Monte Carlo noise
    if method == "lac":
        assert np.mean(covered) <= 0.9 + 1 / (n_cal + 1) + 0.005
    assert 0 < np.mean(sizes) <= len(classes) - 1


def test_coverage_interval_is_clopper_pearson_and_sizes_are_counted() -> None:
    from scipy.stats import binomtest

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 50)
    sets = rng.uniform(size=(50, 3)) < 0.6
    c = conformal.coverage(y, sets, level=0.9)
    hits = int(sets[np.arange(50), y].sum())
    ci = binomtest(hits, 50).proportion_ci(confidence_level=0.9, method="exact")
    assert c.estimate == hits / 50 and c.n == 50
    assert c.low == pytest.approx(ci.low) and c.high == pytest.approx(ci.high)
    by_size = conformal.size_stratified_coverage(y, sets)
    assert sum(n for _, n in by_size.values()) == 50
    assert conformal.mean_set_size(sets) == pytest.approx(sets.sum() / 50)
    for size, (cov, n) in by_size.items():
        rows = sets.sum(axis=1) == size
        assert n == rows.sum() and cov == pytest.approx(sets[rows][np.arange(n), y[rows]].mean())


def test_log_scores_and_labels_go_in_as_the_metrics_take_them() -> None:
    rng = np.random.default_rng(4)
    p = rng.dirichlet([2, 2], size=60)
    y = np.array(["neg", "pos"], dtype=object)[(rng.uniform(size=60) < p[:, 1]).astype(int)]
    a = conformal.conformal_sets(p[:40], y[:40], p[40:], classes=["neg", "pos"])
    b = conformal.conformal_sets(np.log(p[:40]) + 3.0, y[:40], np.log(p[40:]) - 1.0, classes=["neg", "pos"],
                                 input="logprobs")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "naive"}, "method='naive'; use one of 'lac', 'aps', 'raps'"),
    ({"alpha": 0}, "alpha must be in"),
    ({"alpha": 0.01}, "cannot give a set that covers"),
    ({"method": "aps"}, "needs calibration rows of three classes or more"),
])
def test_bad_arguments_name_themselves(kwargs, match) -> None:
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]] * 5)
    y = np.array([0, 1, 0, 1] * 5)
    with pytest.raises(ValueError, match=match):
        conformal.conformal_sets(p, y, p, **kwargs)
    with pytest.raises(ValueError, match="give both the same classes"):
        conformal.conformal_sets(p, y, np.c_[p, np.zeros(len(p))] / 1.0)
