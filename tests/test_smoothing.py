"""calibkit.smoothing: smooth ECE's kernel regression gives the values it gave before."""

import numpy as np
import pytest
from smooth_reference import SMOOTH_CASES, previous_smooth, previous_smooth_ece, previous_smooth_ece_at, smooth_case

from calibkit import smoothing


def _conf_hit(y, p):
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(float)


@pytest.mark.parametrize(("n", "k", "seed", "temp"), SMOOTH_CASES)
def test_smoothed_values_are_unchanged(n, k, seed, temp):
    conf, hit = _conf_hit(*smooth_case(n, k, seed, temp))
    for s in (0.004, 0.03, 0.2):
        assert smoothing.smooth_ece_at(conf, hit, s) == pytest.approx(previous_smooth_ece_at(conf, hit, s), abs=1e-12)
    t, resid, density = smoothing.smooth_residual(conf, hit, 0.004)
    assert len(t) == 2500 and t[-1] == 1.0
    ref_density = previous_smooth(conf, np.ones_like(conf), 0.004, t) + 1e-4
    # both are transforms: rounding is relative to the largest value, not to each
    assert density == pytest.approx(ref_density, abs=1e-12 * ref_density.max())


@pytest.mark.parametrize(("n", "k", "seed", "temp"), SMOOTH_CASES[:3])
def test_bandwidth_is_the_fixed_point_the_search_found_before(n, k, seed, temp):
    y, p = smooth_case(n, k, seed, temp)
    conf, hit = _conf_hit(y, p)
    value, sigma = previous_smooth_ece(y, p)
    assert smoothing.smooth_ece_bandwidth(conf, hit) == sigma
    assert smoothing.smooth_ece_at(conf, hit, sigma) == pytest.approx(value, abs=1e-12)


def test_rows_are_smoothed_together_with_the_values_of_each_alone():
    y, p = smooth_case(600, 3, 7, 1.5)
    conf, hit = _conf_hit(y, p)
    rows = np.random.default_rng(0).integers(0, 600, size=(5, 600))
    together = smoothing.KernelSmoother(conf[rows], hit[rows])
    sigma, value = together.bandwidth()
    for r, s, v in zip(rows, sigma, value):
        assert smoothing.smooth_ece_bandwidth(conf[r], hit[r]) == s
        assert smoothing.smooth_ece_at(conf[r], hit[r], s) == pytest.approx(v, abs=1e-12)
    # each row at a bandwidth of its own, and a subset of the rows
    assert together.ece(sigma[[3, 1]], np.array([3, 1])) == pytest.approx(value[[3, 1]], abs=1e-12)
