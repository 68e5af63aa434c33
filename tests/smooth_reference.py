"""Smooth ECE as calibkit computed it before the bandwidth search reused its transforms and
bootstrap resamples were measured together (it agreed with relplot to ~1e-12), kept as the
reference that tests/test_smoothing.py and tests/test_metrics.py hold today's values to."""

from __future__ import annotations

import numpy as np

# (n, k, seed, temperature of the labels): 1.0 is calibrated, so that at n = 20000 the
# bandwidth falls below 0.01, where the grid grows with 1 / sigma
SMOOTH_CASES = [
    (150, 2, 0, 1.5), (150, 3, 1, 3.0), (40, 5, 2, 1.5), (2000, 4, 3, 1.0), (20000, 2, 4, 1.0), (3, 2, 5, 1.0),
]


def smooth_case(n: int, k: int, seed: int, temp: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of one of SMOOTH_CASES."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 3
    p = np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))
    y = (z / temp + rng.gumbel(size=(n, k))).argmax(axis=1)
    return y, p


def previous_smooth(f, values, sigma, t):
    from scipy.signal import fftconvolve

    points = max(2000, round(20 / sigma)) // 2 + 1
    pos = f * (points - 1)
    left = pos.astype(np.intp).clip(0, points - 2)
    frac = pos - left
    grid = np.bincount(left, (1 - frac) * values, minlength=points) + np.bincount(
        left + 1, frac * values, minlength=points)
    u = np.linspace(0.0, 1.0, points)
    kernel = np.exp(-((u - 0.5) ** 2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    extended = np.concatenate([grid[::-1][:-1], grid, grid[::-1][1:]])
    smoothed = fftconvolve(extended, kernel, mode="valid")[points // 2 : points // 2 + points]
    pos = t * (points - 1)
    left = pos.astype(np.intp).clip(0, points - 2)
    frac = pos - left
    return smoothed[left] * (1 - frac) + smoothed[left + 1] * frac


def previous_smooth_ece_at(conf, hit, sigma):
    t = np.linspace(0.0, 1.0, max(round(10 / sigma), 200))
    density = previous_smooth(conf, np.ones_like(conf), sigma, t) + 1e-4
    resid = previous_smooth(conf, conf - hit, sigma, t) / density
    return float(np.sum(np.abs(resid) * density) / np.sum(density))


def previous_smooth_ece(y, p):
    conf, hit = p.max(axis=1), (p.argmax(axis=1) == y).astype(float)
    if 1.0 < previous_smooth_ece_at(conf, hit, 1.0):
        return previous_smooth_ece_at(conf, hit, 1.0), 1.0
    hi, lo = 1.0, 0.0
    for _ in range(10):
        mid = (hi + lo) / 2
        if mid < 1e-3 or mid < previous_smooth_ece_at(conf, hit, mid):
            lo = mid
        else:
            hi = mid
    return previous_smooth_ece_at(conf, hit, hi), hi
