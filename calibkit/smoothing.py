"""Kernel regression of the calibration residual on the confidence: smooth ECE's machinery.

:class:`KernelSmoother` smooths ``conf - hit`` and the density of ``conf`` with a Gaussian
kernel reflected at 0 and 1 (Błasiok & Nakkiran 2023), and picks the bandwidth where
``sigma = smECE_sigma``. :func:`calibkit.metrics.smooth_ece` is the metric built on it;
:mod:`calibkit.diagrams` draws the smoothed curve.

Written out rather than imported: relplot pulls in seaborn and matplotlib at
import time, and its kernel uses np.convolve, quadratic in the grid size.
This follows relplot 1.0.3 (reflected Gaussian kernel, the same grids and
bandwidth search) and agrees with it to ~1e-12. Only the order of the
arithmetic differs, for speed: the reflected grid's spectrum does not depend
on the bandwidth, so it is transformed once and every bandwidth the search
tries costs one kernel transform; and many rows (bootstrap resamples) are
smoothed together, each with its own bandwidth, as arrays.

Example
-------
>>> import numpy as np
>>> from calibkit.smoothing import smooth_ece_at, smooth_ece_bandwidth
>>> conf, hit = np.array([0.9, 0.8, 0.6]), np.array([1.0, 0.0, 1.0])
>>> sigma = smooth_ece_bandwidth(conf, hit)
>>> bool(0 < sigma <= 1), bool(smooth_ece_at(conf, hit, sigma) > 0)
(True, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft

__all__ = ["KernelSmoother", "smooth_ece_at", "smooth_ece_bandwidth", "smooth_residual"]

_BASE_POINTS = 1001  # relplot's grid size for every bandwidth >= 0.01


def _grid_points(sigma: np.ndarray) -> np.ndarray:
    """relplot's grid size for each bandwidth: max(2000, round(20 / sigma)) // 2 + 1."""
    return np.maximum(2000, np.rint(20 / sigma)).astype(np.intp) // 2 + 1


def _reflected_windows(conf: np.ndarray, values: np.ndarray, points: int) -> np.ndarray:
    """Spread ``values`` (rows × V × n) at ``conf`` (rows × n) linearly onto ``points`` nodes
    on [0, 1], reflect at both ends, and keep the window the smoothed grid is read from
    (rows × V × (2 points - 1))."""
    rows, n_values, n = values.shape
    pos = conf * (points - 1)
    left = pos.astype(np.intp).clip(0, points - 2)
    frac = pos - left
    start = (np.arange(rows * n_values) * points).reshape(rows, n_values, 1)
    index = start + left[:, None, :]
    size = rows * n_values * points
    grid = np.bincount(index.ravel(), ((1 - frac)[:, None, :] * values).ravel(), minlength=size) + np.bincount(
        (index + 1).ravel(), (frac[:, None, :] * values).ravel(), minlength=size
    )
    grid = grid.reshape(rows, n_values, points)
    rev = grid[..., ::-1]
    extended = np.concatenate([rev[..., :-1], grid, rev[..., 1:]], axis=-1)
    # relplot keeps `points` outputs of the 'valid' convolution with the kernel; they read only this window
    return extended[..., points // 2 : points // 2 + 2 * points - 1]


class KernelSmoother:
    """The residual ``conf - hit`` and the density of ``conf``, Gaussian-smoothed with reflection
    at 0 and 1 on relplot's grids, for rows × n arrays ``conf`` and ``hit`` (one row per
    sample: a data set, or each bootstrap resample of it), each row at its own bandwidth.

    >>> smoother = KernelSmoother(np.array([[0.9, 0.8, 0.6], [0.6, 0.7, 0.9]]), np.array([[1.0, 0.0, 1.0]] * 2))
    >>> sigma, value = smoother.bandwidth()          # each row's own bandwidth and smooth ECE
    >>> sigma.shape, bool(np.allclose(smoother.ece(sigma), value))
    ((2,), True)
    """

    def __init__(self, conf: np.ndarray, hit: np.ndarray) -> None:
        self.conf = np.atleast_2d(np.asarray(conf, dtype=np.float64))
        hit = np.atleast_2d(np.asarray(hit, dtype=np.float64))
        self.values = np.stack([self.conf - hit, np.ones_like(self.conf)], axis=1)
        self._base: np.ndarray | None = None

    def _spectra(self, rows: np.ndarray, points: int) -> tuple[np.ndarray, int]:
        size = next_fast_len(2 * points - 1, real=True)
        if points != _BASE_POINTS:  # only bandwidths below 0.01, each its own size: not worth keeping
            return rfft(_reflected_windows(self.conf[rows], self.values[rows], points), size), size
        if self._base is None:
            self._base = rfft(_reflected_windows(self.conf, self.values, points), size)
        return (self._base if len(rows) == len(self._base) else self._base[rows]), size

    def _curves(self, sigma: np.ndarray, rows: np.ndarray, points: int):
        """t, residual / density, density and the mask of real points (rows of t are padded)."""
        spectra, size = self._spectra(rows, points)
        # rows share bandwidths (all of them at the search's first steps): one kernel each
        distinct, which = np.unique(sigma, return_inverse=True)
        s = distinct[:, None]
        u = np.linspace(0.0, 1.0, points)
        kernel = np.exp(-((u - 0.5) ** 2) / (2 * s**2)) / (np.sqrt(2 * np.pi) * s)
        # Correlating with the symmetric kernel is convolving with it; the transform is at
        # least as long as the window, so no kept output wraps around.
        smoothed = irfft(spectra * np.conj(rfft(kernel, size))[which][:, None, :], size)
        n_t = np.maximum(np.rint(10 / sigma), 200).astype(np.intp)
        j = np.arange(n_t.max())
        mask = j < n_t[:, None]
        t = j * (1.0 / (n_t - 1))[:, None]  # np.linspace(0, 1, n_t) row by row, padded
        t[np.arange(len(n_t)), n_t - 1] = 1.0
        t[~mask] = 0.0
        pos = t * (points - 1)
        left = pos.astype(np.intp).clip(0, points - 2)
        frac = pos - left
        flat = smoothed.reshape(-1)
        index = (np.arange(2 * len(rows)) * size).reshape(-1, 2, 1) + left[:, None, :]
        at = flat[index] * (1 - frac)[:, None, :] + flat[index + 1] * frac[:, None, :]
        density = at[:, 1] + 1e-4
        return t, at[:, 0] / density, density, mask

    def curves(self, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The first row's t, smoothed residual and density at bandwidth ``sigma``."""
        sig = np.array([float(sigma)])
        t, resid, density, mask = self._curves(sig, np.array([0]), int(_grid_points(sig)[0]))
        return t[0][mask[0]], resid[0][mask[0]], density[0][mask[0]]

    def ece(self, sigma: Any, rows: np.ndarray | None = None) -> np.ndarray:
        """Smooth ECE of each row in ``rows`` (default: all) at its bandwidth in ``sigma``."""
        rows = np.arange(len(self.conf)) if rows is None else rows
        sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), rows.shape)
        points = _grid_points(sigma)
        out = np.empty(len(rows))
        for size in np.unique(points):
            sel = points == size
            _, resid, density, mask = self._curves(sigma[sel], rows[sel], int(size))
            out[sel] = np.sum(np.abs(resid) * density, axis=1, where=mask) / np.sum(density, axis=1, where=mask)
        return out

    def bandwidth(self, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """Each row's bandwidth by relplot's bisection, and its smooth ECE there."""
        n_rows = len(self.conf)
        value = self.ece(np.ones(n_rows))  # at hi = 1
        active = ~((1.0 < eps) | (1.0 < value))
        lo, hi = np.zeros(n_rows), np.ones(n_rows)
        for _ in range(10):
            mid = (hi + lo) / 2
            small = mid < eps
            measure = np.flatnonzero(active & ~small)
            at_mid = np.full(n_rows, np.nan)
            at_mid[measure] = self.ece(mid[measure], measure)
            small |= mid < at_mid
            lo = np.where(active & small, mid, lo)
            grow = active & ~small
            hi = np.where(grow, mid, hi)
            value = np.where(grow, at_mid, value)
        return hi, value


def smooth_residual(conf: np.ndarray, hit: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluation points t, smoothed residual E[conf - hit | conf = t] and density at t.

    >>> t, resid, density = smooth_residual(np.array([0.9, 0.8]), np.array([1.0, 1.0]), 0.1)
    >>> float(t[0]), float(t[-1]), len(t) == len(resid) == len(density)
    (0.0, 1.0, True)
    """
    return KernelSmoother(conf, hit).curves(sigma)


def smooth_ece_at(conf: np.ndarray, hit: np.ndarray, sigma: float) -> float:
    """Smooth ECE with the kernel bandwidth ``sigma`` (see :func:`smooth_ece_bandwidth`).

    >>> smooth_ece_at(np.array([0.9, 0.8]), np.array([1.0, 1.0]), 0.1) > 0
    True
    """
    return float(KernelSmoother(conf, hit).ece(sigma)[0])


def smooth_ece_bandwidth(conf: np.ndarray, hit: np.ndarray, eps: float = 1e-3) -> float:
    """Bandwidth of Błasiok & Nakkiran: the fixed point sigma = smECE_sigma, by bisection.

    >>> 0 < smooth_ece_bandwidth(np.array([0.9, 0.8, 0.6]), np.array([1.0, 0.0, 1.0])) <= 1
    True
    """
    return float(KernelSmoother(conf, hit).bandwidth(eps)[0][0])
