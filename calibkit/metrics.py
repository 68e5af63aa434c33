"""Accuracy, NLL, Brier score, the ECE family, smooth ECE and bootstrap intervals.

Conventions, the same for every function here:

- ``p`` is an n×K matrix of class scores whose kind is stated with ``input``:
  ``"probs"`` (the default: rows must sum to one, within 1e-3) or
  ``"logprobs"`` (log-scores or logits, softmax-normalised per row, so the
  core's unnormalised LabelScores can be passed as they are). A 1-D ``p`` with
  ``input="probs"`` is the probability of column 1 of a binary problem, as in
  scikit-learn.
- ``y`` holds column indices ``0..K-1``, or labels when ``classes`` gives the
  label of every column (e.g. a calibrator's ``classes_``).
- Top-label quantities use the arg-max column (the first one on ties).

Examples
--------
>>> import numpy as np
>>> from calibkit import metrics
>>> y = np.array([0, 1, 1, 0])
>>> p = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]])
>>> round(metrics.ece(y, p, bins=10), 4)
0.3
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import softmax

from .arrays import ROW_BLOCK, as_float_array, check_input_kind, resolve_classes
from .bins import bin_index, check_binning
from .smoothing import KernelSmoother

__all__ = [
    "to_probs",
    "accuracy",
    "nll",
    "brier",
    "BrierDecomposition",
    "brier_decomposition",
    "ece",
    "mce",
    "debiased_ece",
    "smooth_ece",
    "BootstrapResult",
    "bootstrap",
    "paired_bootstrap",
    "summary",
]

REDUCTIONS = ("top-label", "classwise")
NORMS = ("l1", "l2", "max")


def to_probs(p: Any, input: str = "logprobs") -> np.ndarray:
    """Return row-normalised probabilities (n×K) from scores of the stated kind.

    ``input="logprobs"``: softmax over each row (-inf is a zero). ``input="probs"``:
    checked to lie in [0, 1] with rows summing to one (a 1-D array is the
    probability of column 1 of a binary problem).

    >>> to_probs(np.log([[0.002, 0.006]]), input="logprobs").round(3).tolist()
    [[0.25, 0.75]]
    >>> to_probs([[0.5, float("nan")]], input="probs")
    Traceback (most recent call last):
    ...
    ValueError: p contains NaN; drop or impute those rows.
    """
    check_input_kind(input, "p")
    p = as_float_array(p, "p")
    if p.size == 0:
        raise ValueError(f"p is empty (shape {p.shape}); metrics need at least one example and one class.")
    if input == "logprobs":
        if p.ndim != 2:
            raise ValueError(f"p must be 2-D (n×K log-scores) with input='logprobs'; got shape {p.shape}.")
        if np.isnan(p).any() or np.isposinf(p).any():
            raise ValueError("p contains NaN or +inf; log-scores must be finite or -inf.")
        if np.isneginf(p).all(axis=1).any():
            raise ValueError("p has a row that is -inf for every class; every row needs some mass.")
        return softmax(p, axis=1)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise ValueError(f"p must be 1-D (binary) or 2-D (n×K); got shape {p.shape}.")
    lo, hi = p.min(), p.max()
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError("p contains NaN; drop or impute those rows.")
    if lo < 0 or hi > 1:
        raise ValueError(
            f"p has values outside [0, 1] (min {lo:.3g}, max {hi:.3g}) but input='probs'; "
            f"pass input='logprobs' for log-scores or logits."
        )
    sums = p @ np.ones(p.shape[1])
    worst = np.max(np.abs(sums - 1.0))
    if worst > 1e-3:
        raise ValueError(
            f"rows of p must sum to 1 with input='probs' (one sums to "
            f"{sums[np.argmax(np.abs(sums - 1.0))]:.4g}); unnormalised label probabilities "
            f"go in as input='logprobs' with their logs, which are renormalised."
        )
    return p


def check_labels_probs(y: Any, p: Any, input: str, classes: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels as column indices and p as probabilities, checked: what every metric starts from.

    >>> y, p = check_labels_probs(["b", "a"], [[0.3, 0.7], [0.6, 0.4]], "probs", classes=["a", "b"])
    >>> y.tolist(), p.shape
    ([1, 0], (2, 2))
    """
    p = to_probs(p, input)
    n, k = p.shape
    y_arr = np.asarray(y)
    if y_arr.ndim != 1 or len(y_arr) != n:
        raise ValueError(f"y must be 1-D with one label per row of p ({n}); got shape {y_arr.shape}.")
    if n == 0:
        raise ValueError("p and y are empty; metrics need at least one example.")
    if classes is not None:
        return resolve_classes(y_arr, k, classes)[1], p
    if y_arr.dtype.kind == "f":
        if np.isnan(y_arr).any():
            raise ValueError("y contains NaN; every row needs its true class (drop the unlabelled rows).")
        if np.all(y_arr == np.round(y_arr)):  # whole numbers stored as floats (1.0), as calibrators take them
            y_arr = y_arr.astype(np.int64)
    if y_arr.dtype.kind not in "iub" or y_arr.min() < 0 or y_arr.max() >= k:
        raise ValueError(
            f"y must hold column indices 0..{k - 1} of p, or pass classes= (the label of "
            f"each column of p, e.g. a calibrator's classes_)."
        )
    return y_arr.astype(np.intp, copy=False), p


def top_label_hits(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The top label's probability in each row, and 1.0 where it is the true label ``y`` (indices).

    >>> conf, hit = top_label_hits(np.array([1, 1]), np.array([[0.3, 0.7], [0.6, 0.4]]))
    >>> conf.tolist(), hit.tolist()
    ([0.7, 0.6], [1.0, 0.0])
    """
    pred = p.argmax(axis=1)
    conf = np.take_along_axis(p, pred[:, None], axis=1)[:, 0]
    return conf, (pred == y).astype(np.float64)


def _labels_as_indices(y: Any, n: int, k: int, classes: Any) -> np.ndarray:
    """``y`` as column indices, checked as :func:`check_labels_probs` does (ValueError if not)."""
    y_arr = np.asarray(y)
    if y_arr.ndim != 1 or len(y_arr) != n or n == 0:
        raise ValueError("y does not fit p")
    if classes is not None:
        return resolve_classes(y_arr, k, classes)[1]
    if y_arr.dtype.kind == "f" and not np.isnan(y_arr).any() and np.all(y_arr == np.round(y_arr)):
        y_arr = y_arr.astype(np.int64)
    if y_arr.dtype.kind not in "iub" or y_arr.min() < 0 or y_arr.max() >= k:
        raise ValueError("y holds no column indices")
    return y_arr.astype(np.intp, copy=False)


def _top_label_pass(y: Any, p: Any, input: str, classes: Any, bins: int | None) -> tuple[np.ndarray, ...] | None:
    """Checked top-label confidences and hits of probabilities, in one blocked pass, or None.

    Each block of rows is checked (as :func:`to_probs` does) and reduced to its top
    label's confidence and hit while it is in cache; float32 stays float32 until the
    confidences, which are float64. With ``bins``, each block is also put in
    ``bins`` equal-width bins (as :func:`assign_bins`) and only the per-bin count,
    summed confidence and summed hits come back, never an n-long array. None where
    this does not apply or a check fails: the plain path then says what is wrong.
    """
    arr = p if isinstance(p, np.ndarray) else None
    if (
        input != "probs"
        or arr is None
        or arr.ndim != 2
        or arr.size == 0
        or arr.dtype not in (np.float64, np.float32)
        or not arr.flags.c_contiguous
    ):
        return None
    n, k = arr.shape
    try:
        y_idx = _labels_as_indices(y, n, k, classes)
    except ValueError:
        return None
    if bins is None:
        conf, hit = np.empty(n), np.empty(n, dtype=bool)
    else:
        count2, sum_conf = np.zeros(2 * bins), np.zeros(bins)  # count2: [misses, hits] of each bin
    positions = np.arange(min(n, ROW_BLOCK))
    lo, hi, sum_lo, sum_hi = np.inf, -np.inf, np.inf, -np.inf
    try:
        for start in range(0, n, ROW_BLOCK):
            block = arr[start : start + ROW_BLOCK]
            rows = len(block)
            y_block = y_idx[start : start + rows]
            # Reductions over rows of K ~ 10 entries run one short loop per row; over the
            # columns of the transposed block they run along contiguous rows, several times faster.
            columns = block.T.copy()
            top = np.maximum.reduce(columns, axis=0)
            is_top = columns == top
            if np.count_nonzero(is_top) == rows:  # no ties for the top: its column is the arg-max
                hits = is_top.ravel().take(y_block * rows + positions[:rows])
            else:
                hits = block.argmax(axis=1) == y_block
            # np.minimum/np.maximum, unlike min/max, carry a NaN through to the check below.
            lo, hi = np.minimum(lo, columns.min()), np.maximum(hi, top.max())
            sums = np.add.reduce(columns, axis=0)
            sum_lo, sum_hi = np.minimum(sum_lo, sums.min()), np.maximum(sum_hi, sums.max())
            top = top.astype(np.float64, copy=False)
            if bins is None:
                conf[start : start + rows], hit[start : start + rows] = top, hits
            else:
                with np.errstate(invalid="ignore"):  # NaN: fails the check below
                    idx = (top * bins).astype(np.intp)
                np.minimum(idx, bins - 1, out=idx)  # 1.0 goes in the last bin
                key = idx + idx
                key += hits
                count2 += np.bincount(key, minlength=2 * bins)
                sum_conf += np.bincount(idx, weights=top, minlength=bins)
    except ValueError:  # bincount of a negative bin: a negative or NaN probability
        return None
    if not (lo >= 0 and hi <= 1 and max(sum_hi - 1.0, 1.0 - sum_lo) <= 1e-3):
        return None
    if bins is None:
        return conf, hit
    return count2[0::2] + count2[1::2], sum_conf, count2[1::2]


def checked_top_label_hits(y: Any, p: Any, input: str, classes: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_label_hits` of ``check_labels_probs(y, p, input, classes)``, in one pass where it can."""
    fast = _top_label_pass(y, p, input, classes, None)
    if fast is None:
        return top_label_hits(*check_labels_probs(y, p, input, classes))
    conf, hit = fast
    return conf, hit.astype(np.float64)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; use one of {', '.join(map(repr, allowed))}.")


def accuracy(y: Any, p: Any, *, input: str = "probs", classes: Any = None) -> float:
    """Share of rows whose arg-max column is the true class.

    >>> accuracy([0, 1], [[0.9, 0.1], [0.8, 0.2]])
    0.5
    """
    y, p = check_labels_probs(y, p, input, classes)
    return float(np.mean(p.argmax(axis=1) == y))


def nll(y: Any, p: Any, *, input: str = "probs", classes: Any = None, eps: float | None = None) -> float:
    """Mean negative log-likelihood of the true class (log loss, natural log).

    Probabilities are clipped to ``[eps, 1 - eps]`` as scikit-learn's
    ``log_loss`` does; ``eps=None`` is the float64 machine epsilon (its
    default), so a zero on the true class costs ``-log(2.2e-16) = 36.04``.
    ``eps=0`` gives the exact value, ``inf`` for a zero.

    >>> round(nll([0, 1], [[0.5, 0.5], [0.2, 0.8]]), 4)
    0.4581
    """
    eps = np.finfo(np.float64).eps if eps is None else float(eps)
    if not 0 <= eps < 0.5:
        raise ValueError(f"eps={eps!r}; give the clipping margin in [0, 0.5), or None for machine epsilon.")
    if input == "logprobs":
        # Stay in log space: softmax then log would lose tiny probabilities.
        y_idx, _ = check_labels_probs(y, p, input, classes)
        logp = np.asarray(p, dtype=np.float64)
        m = logp.max(axis=1)
        log_py = logp[np.arange(len(y_idx)), y_idx] - m - np.log(np.exp(logp - m[:, None]).sum(axis=1))
    else:
        y_idx, p = check_labels_probs(y, p, input, classes)
        with np.errstate(divide="ignore"):
            log_py = np.log(p[np.arange(len(y_idx)), y_idx])
    if eps > 0:
        log_py = np.clip(log_py, np.log(eps), np.log1p(-eps))
    return float(-np.mean(log_py))


def _scale_by_half(scale_by_half: bool | str, k: int) -> bool:
    if scale_by_half == "auto":
        return k < 3
    if not isinstance(scale_by_half, bool):
        raise ValueError(f"scale_by_half={scale_by_half!r}; use True, False or 'auto'.")
    return scale_by_half


def brier(
    y: Any, p: Any, *, input: str = "probs", classes: Any = None, scale_by_half: bool | str = "auto"
) -> float:
    """Brier score: mean over rows of the squared distance to the one-hot label.

    Defined as scikit-learn's ``brier_score_loss`` (>= 1.7): the sum over
    classes lies in [0, 2]; ``scale_by_half="auto"`` halves it for two
    classes (so it equals the mean squared error of P(class 1)) and keeps
    it for three or more.

    >>> round(brier([0, 1], [[0.9, 0.1], [0.2, 0.8]]), 4)
    0.025
    """
    y, p = check_labels_probs(y, p, input, classes)
    n, k = p.shape
    sq = np.einsum("ij,ij->i", p, p) - 2 * p[np.arange(n), y] + 1.0
    score = float(np.mean(sq))
    return score / 2 if _scale_by_half(scale_by_half, k) else score


@dataclass(frozen=True)
class BrierDecomposition:
    """Murphy's decomposition of the Brier score over binned forecasts.

    ``brier = reliability - resolution + uncertainty + within_bin``, where
    ``within_bin`` is zero when the forecasts are constant within each bin and
    small otherwise. Lower reliability is better calibrated; higher
    resolution is more informative; uncertainty depends on the labels only.
    """

    brier: float
    reliability: float
    resolution: float
    uncertainty: float

    @property
    def within_bin(self) -> float:
        return self.brier - (self.reliability - self.resolution + self.uncertainty)


def brier_decomposition(
    y: Any,
    p: Any,
    *,
    bins: int = 15,
    binning: str = "width",
    input: str = "probs",
    classes: Any = None,
    scale_by_half: bool | str = "auto",
) -> BrierDecomposition:
    """Reliability, resolution and uncertainty of the Brier score.

    Each class is decomposed one-vs-rest over ``bins`` bins of its predicted
    probability and the terms are summed over classes (and halved as in
    :func:`brier`), so ``brier`` here equals :func:`brier`.

    >>> d = brier_decomposition([0, 1, 1, 0], [[0.8, 0.2], [0.2, 0.8], [0.2, 0.8], [0.8, 0.2]])
    >>> round(d.reliability, 4), round(d.resolution, 4), round(d.uncertainty, 4)
    (0.04, 0.25, 0.25)
    """
    y, p = check_labels_probs(y, p, input, classes)
    n, k = p.shape
    onehot = _one_hot(y, k)
    count, sum_p, sum_o, _ = binned_stats(p, onehot, bins, binning)
    safe = np.maximum(count, 1)
    base = onehot.mean(axis=0)[:, None]
    rel = np.sum(count * (sum_p / safe - sum_o / safe) ** 2) / n
    res = np.sum(count * (sum_o / safe - base) ** 2) / n
    unc = float(np.sum(base * (1.0 - base)))
    score = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    half = 0.5 if _scale_by_half(scale_by_half, k) else 1.0
    return BrierDecomposition(score * half, float(rel) * half, float(res) * half, unc * half)


def binned_stats(
    conf: np.ndarray, hit: np.ndarray, bins: int, binning: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per-bin counts, summed confidence and summed hits of each column (groups × bins),
    and each column's bin edges.

    Each column (a class, or the single top-label column) gets its own bins, so
    equal-mass edges follow that column's distribution; a column with fewer
    distinct equal-mass bins leaves the tail of its row empty.

    >>> count, sum_conf, sum_hit, edges = binned_stats(np.array([[0.1], [0.9]]), np.array([[0.0], [1.0]]), 2, "width")
    >>> count.tolist(), sum_hit.tolist(), edges[0].tolist()
    ([[1.0, 1.0]], [[0.0, 1.0]], [0.0, 0.5, 1.0])
    """
    check_binning(bins, binning)
    groups = conf.shape[1]
    count, sum_conf, sum_hit = (np.zeros((groups, bins)) for _ in range(3))
    edges = []
    for j in range(groups):
        c = np.ascontiguousarray(conf[:, j])
        idx, n_bins, col_edges = bin_index(c, bins, binning)
        count[j, :n_bins] = np.bincount(idx, minlength=n_bins)
        sum_conf[j, :n_bins] = np.bincount(idx, weights=c, minlength=n_bins)
        sum_hit[j, :n_bins] = np.bincount(idx, weights=hit[:, j], minlength=n_bins)
        edges.append(col_edges)
    return count, sum_conf, sum_hit, edges


def _one_hot(y: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(y), k))
    out[np.arange(len(y)), y] = 1.0
    return out


def _conf_hit(y: np.ndarray, p: np.ndarray, reduction: str) -> tuple[np.ndarray, np.ndarray]:
    """n×G confidences and hits: G = 1 for top-label, G = K for classwise."""
    _check_choice("reduction", reduction, REDUCTIONS)
    if reduction == "top-label":
        conf, hit = top_label_hits(y, p)
        return conf[:, None], hit[:, None]
    return p, _one_hot(y, p.shape[1])


def ece(
    y: Any,
    p: Any,
    *,
    bins: int = 15,
    binning: str = "width",
    reduction: str = "top-label",
    norm: str = "l1",
    input: str = "probs",
    classes: Any = None,
) -> float:
    """Expected calibration error, with every choice explicit.

    Parameters
    ----------
    bins : int
        Number of bins (equal-mass bins may merge on ties, never split them).
    binning : {"width", "mass"}
        Equal-width bins ``[i/B, (i+1)/B)`` (last one closed), or equal-mass
        bins with edges at midpoints between order statistics.
    reduction : {"top-label", "classwise"}
        Top-label: confidence of the arg-max class against whether it is
        right (Guo et al. 2017). Classwise: each class's probability against
        whether the row is that class, one error per class, then averaged
        (mean for l1, root-mean-square for l2, max for max).
    norm : {"l1", "l2", "max"}
        ``sum_b w_b |acc_b - conf_b|``; ``sqrt(sum_b w_b (acc_b - conf_b)^2)``;
        ``max_b |acc_b - conf_b|`` over non-empty bins (the MCE).

    >>> round(ece([0, 1, 1], [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]], bins=10), 4)
    0.2667
    """
    _check_choice("norm", norm, NORMS)
    _check_choice("reduction", reduction, REDUCTIONS)
    check_binning(bins, binning)
    fast = None
    if reduction == "top-label":
        fast = _top_label_pass(y, p, input, classes, bins if binning == "width" else None)
    if fast is None:
        conf, hit = _conf_hit(*check_labels_probs(y, p, input, classes), reduction)
        count, sum_conf, sum_hit, _ = binned_stats(conf, hit, bins, binning)
    elif binning == "width":
        count, sum_conf, sum_hit = (a[None, :] for a in fast)
    else:
        conf, hit = fast
        count, sum_conf, sum_hit, _ = binned_stats(conf[:, None], hit[:, None], bins, binning)
    n = int(count[0].sum())  # every group bins all n rows
    gap = np.abs(sum_hit - sum_conf)  # = count * |acc - conf|
    if norm == "l1":
        per_group = gap.sum(axis=1) / n
        return float(per_group.mean())
    if norm == "l2":
        per_group_sq = np.sum(gap**2 / np.maximum(count, 1), axis=1) / n
        return float(np.sqrt(per_group_sq.mean()))
    per_bin = np.where(count > 0, gap / np.maximum(count, 1), 0.0)
    return float(per_bin.max())


def mce(y: Any, p: Any, **kwargs: Any) -> float:
    """Maximum calibration error: :func:`ece` with ``norm="max"``.

    >>> mce([0, 1, 1], [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]], bins=10)
    0.4
    """
    return ece(y, p, norm="max", **kwargs)


def debiased_ece(
    y: Any,
    p: Any,
    *,
    bins: int = 15,
    binning: str = "mass",
    reduction: str = "top-label",
    input: str = "probs",
    classes: Any = None,
) -> float:
    """Debiased L2 calibration error (Kumar, Liang & Ma 2019).

    The plug-in squared error per bin overstates calibration error by the
    sampling variance of the bin's accuracy; this subtracts
    ``acc_b (1 - acc_b) / (n_b - 1)`` per bin (bins with fewer than two
    examples count zero), clips the sum at zero and takes the square root.
    Defaults follow the ``uncertainty-calibration`` package: 15 equal-mass
    bins. ``reduction="classwise"`` is its "marginal" mode (root-mean-square
    over classes).

    >>> round(debiased_ece([0, 1, 1, 1], [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]], bins=1), 4)
    0.25
    """
    y, p = check_labels_probs(y, p, input, classes)
    count, sum_conf, sum_hit, _ = binned_stats(*_conf_hit(y, p, reduction), bins, binning)
    safe = np.maximum(count, 1)
    acc = sum_hit / safe
    term = (sum_conf / safe - acc) ** 2 - acc * (1 - acc) / np.maximum(count - 1, 1)
    term = np.where(count >= 2, term, 0.0)
    per_group = np.maximum(np.sum(count * term, axis=1) / p.shape[0], 0.0)
    return float(np.sqrt(per_group.mean()))


# --- smooth ECE (the kernel regression is calibkit.smoothing's) ---------------------------


def _smooth_ece_rows(conf: np.ndarray, hit: np.ndarray, sigma: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Smooth ECE and bandwidth of each row of rows × n ``conf`` and ``hit``."""
    smoother = KernelSmoother(conf, hit)
    if sigma is None:
        s, value = smoother.bandwidth()
        return value, s
    s = float(sigma)
    if not 0 < s < np.inf:
        raise ValueError(f"sigma={sigma!r}; the kernel bandwidth must be positive and finite (or None to pick it).")
    return smoother.ece(s), np.full(len(smoother.conf), s)


def smooth_ece(
    y: Any,
    p: Any,
    *,
    sigma: float | None = None,
    input: str = "probs",
    classes: Any = None,
    return_sigma: bool = False,
) -> float | tuple[float, float]:
    """Smooth ECE (Błasiok & Nakkiran 2023), top-label, as relplot computes it.

    The residual ``conf - correct`` is smoothed with a reflected Gaussian
    kernel of bandwidth ``sigma`` over the confidence, and its absolute value
    averaged under the smoothed density. ``sigma=None`` picks the bandwidth
    where ``sigma = smECE_sigma`` (relplot's ``smECE``); a number fixes it
    (``smECE_sigma``). ``return_sigma=True`` returns ``(value, sigma)``.

    >>> rng = np.random.default_rng(0)
    >>> q = rng.uniform(0.5, 1.0, 2000)
    >>> y = rng.integers(0, 2, 2000)   # a coin flip, predicted with 75% mean confidence
    >>> 0.2 < smooth_ece(y, np.stack([q, 1 - q], 1)) < 0.3
    True
    """
    conf, hit = checked_top_label_hits(y, p, input, classes)
    value, s = _smooth_ece_rows(conf, hit, sigma)
    return (float(value[0]), float(s[0])) if return_sigma else float(value[0])


# --- bootstrap --------------------------------------------------------------

_METRICS: dict[str, Callable[..., float]] = {}


def _metric(metric: str | Callable[..., float]) -> Callable[..., float]:
    if callable(metric):
        return metric
    if metric not in _METRICS:
        raise ValueError(f"metric={metric!r}; use a callable or one of {sorted(_METRICS)}.")
    return _METRICS[metric]


@dataclass(frozen=True)
class BootstrapResult:
    """A metric's value on all examples and a percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float
    samples: np.ndarray = field(repr=False)

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}] ({self.level:.0%} CI)"


def _resamples(n: int, n_boot: int, seed: int | None) -> np.ndarray:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r}; give a positive number of resamples (1000 is usual).")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _paired_rows(y: Any, **scores: Any) -> tuple[np.ndarray, ...]:
    """``y`` and each score array as arrays whose rows can be resampled together."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, one label per example; got shape {y.shape}.")
    out = [y]
    for name, value in scores.items():
        arr = as_float_array(value, name)
        if arr.ndim not in (1, 2) or len(arr) != len(y):
            raise ValueError(
                f"{name} must have one row per label in y ({len(y)}); got shape {arr.shape}."
            )
        out.append(arr)
    if len(y) == 0:
        raise ValueError("y and p are empty; a bootstrap needs at least one example.")
    return tuple(out)


def _interval(estimate: float, samples: np.ndarray, level: float) -> BootstrapResult:
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}; give the interval's coverage in (0, 1), e.g. 0.95.")
    alpha = (1 - level) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return BootstrapResult(float(estimate), float(low), float(high), level, samples)


def bootstrap(
    metric: str | Callable[..., float],
    y: Any,
    p: Any,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    callback: Callable[[int], Any] | None = None,
    **kwargs: Any,
) -> BootstrapResult:
    """Percentile bootstrap interval for any metric ``metric(y, p, **kwargs)``.

    Rows are resampled with replacement ``n_boot`` times from a seeded
    generator, so the same seed gives the same interval. ``callback``, if
    given, is called with the number of resamples measured since its last
    call (a tqdm bar's ``update`` fits). Smooth ECE measures many resamples
    at once, with the same values as one by one.

    >>> r = bootstrap("accuracy", [0, 1, 1, 0], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]], n_boot=200)
    >>> r.estimate, r.low <= r.estimate <= r.high
    (0.75, True)
    """
    fn = _metric(metric)
    y, p = _paired_rows(y, p=p)
    estimate = fn(y, p, **kwargs)  # first, so that bad input fails before any resampling
    resamples = _resamples(len(y), n_boot, seed)
    many = _RESAMPLED.get(fn)
    if many is not None and set(kwargs) <= {"sigma", "input", "classes"}:
        parts = []
        for part in many(y, p, resamples, **kwargs):
            parts.append(part)
            if callback is not None:
                callback(len(part))
        samples = np.concatenate(parts)
    else:
        values = []
        for i in resamples:
            values.append(fn(y[i], p[i], **kwargs))
            if callback is not None:
                callback(1)
        samples = np.array(values)
    return _interval(estimate, samples, level)


def paired_bootstrap(
    metric: str | Callable[..., float],
    y: Any,
    p_a: Any,
    p_b: Any,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    **kwargs: Any,
) -> BootstrapResult:
    """Bootstrap interval of ``metric(y, p_a) - metric(y, p_b)`` on the same examples.

    Both are evaluated on the same resampled rows each time, so the interval
    reflects the difference between A and B, not the noise of each. An
    interval that excludes zero says A and B differ at that level.

    >>> y = [0, 1, 1, 0]
    >>> a = [[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.9, 0.1]]
    >>> b = [[0.6, 0.4], [0.5, 0.5], [0.5, 0.5], [0.6, 0.4]]
    >>> paired_bootstrap("nll", y, a, b, n_boot=200).high < 0
    True
    """
    fn = _metric(metric)
    p_a, p_b = as_float_array(p_a, "p_a"), as_float_array(p_b, "p_b")
    if p_a.shape != p_b.shape:
        raise ValueError(f"p_a {p_a.shape} and p_b {p_b.shape} must score the same examples and classes.")
    y, p_a, p_b = _paired_rows(y, p_a=p_a, p_b=p_b)
    samples = np.array(
        [fn(y[i], p_a[i], **kwargs) - fn(y[i], p_b[i], **kwargs) for i in _resamples(len(y), n_boot, seed)]
    )
    return _interval(fn(y, p_a, **kwargs) - fn(y, p_b, **kwargs), samples, level)


def _smooth_ece_resampled(
    y: Any, p: Any, resamples: np.ndarray, *, sigma: float | None = None, input: str = "probs", classes: Any = None
) -> Iterator[np.ndarray]:
    """:func:`smooth_ece` of each row of ``resamples`` (row indices), a block of rows at a time."""
    conf, hit = checked_top_label_hits(y, p, input, classes)
    block = max(1, min(250, 2_000_000 // len(conf)))  # bounds the memory: block × n per array
    for start in range(0, len(resamples), block):
        rows = resamples[start : start + block]
        yield _smooth_ece_rows(conf[rows], hit[rows], sigma)[0]


def summary(y: Any, p: Any, *, input: str = "probs", classes: Any = None) -> dict[str, float]:
    """All metrics with their default settings, as a dict (for reports and the CLI).

    >>> sorted(summary([0, 1], [[0.9, 0.1], [0.2, 0.8]]))
    ['accuracy', 'brier', 'debiased_ece', 'ece', 'mce', 'nll', 'smooth_ece']
    """
    probs = to_probs(p, input) if input == "logprobs" else p
    return {name: fn(y, probs, classes=classes) for name, fn in sorted(_METRICS.items())}


_METRICS.update(
    accuracy=accuracy,
    nll=nll,
    brier=brier,
    ece=ece,
    mce=mce,
    debiased_ece=debiased_ece,
    smooth_ece=smooth_ece,
)

#: Metrics that measure many bootstrap resamples at once: metric -> (y, p, resamples, **kwargs) -> blocks of values.
_RESAMPLED: dict[Callable[..., float], Callable[..., Iterator[np.ndarray]]] = {smooth_ece: _smooth_ece_resampled}
