"""Time calibkit's temperature fit and ECE against scikit-learn and netcal.

    python benchmarks/bench_calibration.py            # n = 1,000,000 fit, n = 10,000,000 ECE
    python benchmarks/bench_calibration.py --scale 0.1

Temperature scaling: calibkit's TemperatureScaling against scikit-learn's
CalibratedClassifierCV(method="temperature") on a FrozenEstimator (>= 1.8) and
netcal's TemperatureScaling (MLE). ECE (15 equal-width bins, top label):
calibkit.metrics.ece against netcal.metrics.ECE. Every timing is the best of
three runs on the same data in the same process; the ratio is reference time /
calibkit time. netcal needs torch (and pyro-ppl and
tensorboard for its scaling); a missing reference is reported and skipped.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from calibkit import metrics
from calibkit.calibration import TemperatureScaling


class _Scores(ClassifierMixin, BaseEstimator):
    """A fitted 'model' whose decision function is its input: the scores to calibrate."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def decision_function(self, X):
        return X

    def predict(self, X):
        return self.classes_[np.argmax(X, axis=1)]


def _timed(fn, repeat=3):
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _report(name, ours, refs):
    print(f"\n{name}")
    print(f"  {'calibkit':<34} {ours[0]:8.3f} s   {ours[1]}")
    for label, result in refs.items():
        if isinstance(result, str):
            print(f"  {label:<34} skipped: {result}")
        else:
            print(f"  {label:<34} {result[0]:8.3f} s   {result[1]}   ratio {result[0] / ours[0]:6.1f}x")


def bench_temperature(n: int, k: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 2.0
    y = (z / 2.5 + rng.gumbel(size=(n, k))).argmax(axis=1)  # true temperature 2.5
    ours_t, ts = _timed(lambda: TemperatureScaling().fit(z, y))
    refs: dict[str, object] = {}
    try:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.frozen import FrozenEstimator

        model = FrozenEstimator(_Scores().fit(z, y))
        t, cal = _timed(lambda: CalibratedClassifierCV(model, method="temperature").fit(z, y))
        beta = cal.calibrated_classifiers_[0].calibrators[0].beta_
        refs["scikit-learn CalibratedClassifierCV"] = (t, f"T = {1 / beta:.5f}")
    except (ImportError, ValueError) as exc:  # scikit-learn < 1.8 has no method="temperature"
        refs["scikit-learn CalibratedClassifierCV"] = f"{type(exc).__name__}: {exc}"
    try:
        from netcal.scaling import TemperatureScaling as NetcalTS

        probs = _softmax_rows(z.copy())
        def fit_netcal():
            model = NetcalTS(method="mle")
            model.fit(probs, y, tensorboard=False)
            return model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t, model = _timed(fit_netcal)
        refs["netcal TemperatureScaling (mle)"] = (t, f"T = {1 / float(model.weights[0]):.5f}")
    except ImportError as exc:
        refs["netcal TemperatureScaling (mle)"] = f"{exc} (pip install netcal torch pyro-ppl tensorboard)"
    _report(f"temperature-scaling fit, n = {n:,}, K = {k} (true T = 2.5)",
            (ours_t, f"T = {ts.temperature_:.5f}"), refs)


def bench_ece(n: int, k: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    p = _softmax_rows(rng.normal(size=(n, k)) * 2.0)
    y = rng.integers(0, k, size=n)
    ours_t, value = _timed(lambda: metrics.ece(y, p, bins=15))
    refs: dict[str, object] = {}
    try:
        from netcal.metrics import ECE

        t, ref = _timed(lambda: ECE(bins=15).measure(p, y))
        refs["netcal ECE"] = (t, f"ECE = {ref:.8f}")
    except ImportError as exc:
        refs["netcal ECE"] = f"{exc} (pip install netcal torch)"
    _report(f"ECE, 15 equal-width bins, top label, n = {n:,}, K = {k}", (ours_t, f"ECE = {value:.8f}"), refs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply both sample sizes (default 1)")
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    bench_temperature(int(1_000_000 * args.scale), args.classes)
    bench_ece(int(10_000_000 * args.scale), args.classes)
    print("\ngoal: calibkit under 1 s for each, and faster than every reference")


if __name__ == "__main__":
    main()
