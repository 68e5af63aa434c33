"""Evaluating calibrators on held-out examples: the split, the fits and the metric table.

:func:`evaluate` splits scored examples into a calibration part and a held-out part,
fits each calibrator on the first and measures it on the second, every chosen metric
with a seeded bootstrap interval. This module computes only: :mod:`calibkit.report`
writes what it measured as a report folder, and :mod:`calibkit.comparison` builds on it
to compare several configurations on the same held-out examples.

Example
-------
>>> import numpy as np, calibkit as ck
>>> from calibkit.evaluation import evaluate
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(400, 2)) * 3; y = (X[:, 1] + rng.normal(size=400) > X[:, 0]).astype(int)
>>> ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=[0, 1], n_boot=50,
...               metrics=["accuracy", "ece"], progress=False)
>>> list(ev.table.index), list(ev.formatted().columns)
(['uncalibrated', 'temperature'], ['accuracy', 'ece'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import train_test_split

from . import metrics as M
from .conclusion import flags_of
from .names import METRIC_NAMES
from .progress import describe, kept_warnings, progress_bar
from .version import __version__

__all__ = ["Evaluation", "METRICS", "evaluate", "metric_names", "split"]

#: The binning choices of the report's ECE column, said in full (they are also ece's defaults).
_SETTINGS: dict[str, dict[str, Any]] = {"ece": {"bins": 15, "binning": "width", "reduction": "top-label", "norm": "l1"}}

#: Metric name -> (function, keyword arguments): the columns of the report. The names are
#: :data:`calibkit.names.METRIC_NAMES`, in its order; each is the function of
#: :mod:`calibkit.metrics` of that name.
METRICS: dict[str, tuple[Any, dict[str, Any]]] = {
    name: (getattr(M, name), _SETTINGS.get(name, {})) for name in METRIC_NAMES
}


@dataclass
class Evaluation:
    """What :func:`evaluate` measured.

    ``table`` has one row per calibrator ("uncalibrated" first) and, per metric
    computed (``metrics``), its value with the interval's ``_low`` and ``_high``.
    ``probs`` holds each calibrator's probabilities on the held-out examples
    (positions ``rows`` of the input, labels ``y`` as column indices); ``info`` the
    run's description and settings (evaluation.json). ``fitted`` holds each fitted
    calibrator, ``warnings`` what each one's fit warned, ``run_warnings`` what the run
    warned besides (scoring: a study sets it); :attr:`flags` the rows not to be trusted.
    """

    table: pd.DataFrame
    probs: dict[str, np.ndarray]
    y: np.ndarray
    classes: list[Hashable]
    rows: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    fitted: dict[str, BaseEstimator] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    run_warnings: list[str] = field(default_factory=list)

    @property
    def flags(self) -> dict[str, list[str]]:
        """Row -> why it is not to be trusted (:func:`calibkit.conclusion.flags_of`): only flagged rows."""
        found = {name: flags_of(p, self.warnings.get(name, ())) for name, p in self.probs.items()}
        return {name: reasons for name, reasons in found.items() if reasons}

    @property
    def all_warnings(self) -> list[str]:
        """Every warning of the run: the run's own, then each fit's, named by its calibrator."""
        fits = [f"{name}: {w}" for name, ws in self.warnings.items() for w in ws]
        return list(dict.fromkeys([*self.run_warnings, *fits]))

    def probabilities(self) -> pd.DataFrame:
        """Each held-out example's probabilities and predicted class under every calibrator,
        one row per example: ``proba[<class>]@<calibrator>`` columns, then ``pred@<calibrator>``
        (the arg-max class, the first on ties)."""
        out = pd.DataFrame({"row": self.rows, "label": [self.classes[i] for i in self.y]})
        for name, p in self.probs.items():
            for k, c in enumerate(self.classes):
                out[f"proba[{c}]@{name}"] = p[:, k]
            out[f"pred@{name}"] = [self.classes[i] for i in p.argmax(axis=1)]
        return out

    def confusion_matrix(self, calibrator: str = "uncalibrated") -> pd.DataFrame:
        """Counts of held-out examples by true class (rows) and ``calibrator``'s predicted class (columns)."""
        if calibrator not in self.probs:
            raise ValueError(f"calibrator={calibrator!r}; this evaluation has {list(self.probs)}")
        k = len(self.classes)
        counts = confusion_matrix(self.y, self.probs[calibrator].argmax(axis=1), labels=np.arange(k))
        names = [str(c) for c in self.classes]
        return pd.DataFrame(counts, index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted"))

    def confusion_matrices(self) -> pd.DataFrame:
        """Every calibrator's confusion matrix in one table (confusion_matrix.csv): columns
        ``calibrator``, ``label`` (the true class) and ``predicted <class>`` per class."""
        parts = []
        for name in self.probs:
            cm = self.confusion_matrix(name)
            part = pd.DataFrame({"calibrator": name, "label": cm.index})
            for c in cm.columns:
                part[f"predicted {c}"] = cm[c].to_numpy()
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def formatted(self) -> pd.DataFrame:
        """The table with each computed metric as 'value [low, high]'."""
        out = pd.DataFrame(index=self.table.index)
        t = self.table
        for m in self.metrics:
            out[m] = [f"{v:.4f} [{lo:.4f}, {hi:.4f}]" for v, lo, hi in zip(t[m], t[f"{m}_low"], t[f"{m}_high"])]
        return out


def evaluate(
    X: Any,
    y: Any,
    calibrators: Mapping[str, BaseEstimator],
    *,
    classes: Sequence[Hashable],
    calibration_fraction: float = 0.5,
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
    info: Mapping[str, Any] | None = None,
    metrics: Sequence[str] | None = None,
    progress: bool | None = None,
) -> Evaluation:
    """Fit each calibrator on a calibration split of (X, y); measure all on the rest.

    X is the n×K matrix of class log-probabilities (a LabelScores or an array); y the
    labels, among ``classes``. The split is stratified by label where every class
    has at least two examples, and seeded. "uncalibrated" is the model's scores
    renormalised over the classes.

    ``metrics`` names the metrics to compute, each with its bootstrap (names from
    :data:`METRICS`; None: all of them). ``info`` is shown in the report as given
    (nested dicts and lists too: the verbalizer, the model's settings); the
    calibkit version, the split's sizes, seed, bootstrap and metrics are added.
    ``progress``: a progress bar on stderr over fitting and bootstrapping; None
    shows it only once the work has taken more than two seconds, False never.

    >>> import calibkit as ck
    >>> rng = np.random.default_rng(1)
    >>> X = rng.normal(size=(200, 3)); y = (X + rng.gumbel(size=X.shape)).argmax(axis=1)
    >>> ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=[0, 1, 2], n_boot=20,
    ...               metrics=["nll"], info={"verbalizer": {0: [" a"], 1: [" b"], 2: [" c"]}})
    >>> list(ev.table.columns), ev.info["verbalizer"][1], "calibkit version" in ev.info
    (['nll', 'nll_low', 'nll_high'], [' b'], True)
    """
    chosen = metric_names(metrics)
    logp = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=object)
    if logp.ndim != 2 or logp.shape[0] != len(y):
        raise ValueError(f"X must be n×K class scores with one label per row (X {logp.shape}, y {len(y)})")
    if not 0 < calibration_fraction < 1:
        raise ValueError(f"calibration_fraction must lie between 0 and 1 (got {calibration_fraction})")
    if "uncalibrated" in calibrators:
        raise ValueError("'uncalibrated' is the model's own scores; name your calibrator otherwise")
    classes = list(classes)
    unknown = sorted({repr(v) for v in y} - {repr(c) for c in classes})
    if unknown:
        raise ValueError(f"labels {', '.join(unknown[:5])} are not among the classes {classes}")
    labels = np.array([classes.index(v) for v in y])
    idx_cal, idx_eval = split(labels, calibration_fraction, seed)
    y_cal, y_eval = labels[idx_cal], labels[idx_eval]
    probs = {"uncalibrated": M.to_probs(logp[idx_eval], input="logprobs")}
    with progress_bar((len(calibrators) + 1) * len(chosen) * n_boot, progress, desc="calibkit", unit="resample",
                      leave=True, dynamic_ncols=True) as bar:
        fitted, fit_warnings = {}, {}
        for name, cal in calibrators.items():
            describe(bar, f"fitting {name}")
            with kept_warnings() as fit_warnings[name]:  # for the report, and still said to the caller
                fitted[name] = clone(cal).fit(logp[idx_cal], np.array(classes, dtype=object)[y_cal].tolist())
                probs[name] = np.asarray(fitted[name].predict_proba(logp[idx_eval]))
        rows = []
        for name, p in probs.items():
            row: dict[str, Any] = {"calibrator": name}
            for m in chosen:
                fn, kw = METRICS[m]
                describe(bar, f"bootstrap {m} @ {name}")
                r = M.bootstrap(fn, y_eval, p, n_boot=n_boot, level=level, seed=seed, callback=bar.update, **kw)
                row[m], row[f"{m}_low"], row[f"{m}_high"] = r.estimate, r.low, r.high
            rows.append(row)
    table = pd.DataFrame(rows).set_index("calibrator")
    facts = {
        "n": int(len(y)), "n_calibration": int(len(idx_cal)), "n_evaluation": int(len(idx_eval)),
        "seed": seed, "bootstrap": n_boot, "level": level, "classes": [str(c) for c in classes],
        "metrics": chosen, "calibkit version": __version__,
    }
    # what the caller says about the run comes first; the facts measured here are not overridden
    meta = {**dict(info or {}), **facts}
    return Evaluation(table=table, probs=probs, y=y_eval, classes=classes, rows=idx_eval, info=meta, metrics=chosen,
                      fitted=fitted, warnings={n: w for n, w in fit_warnings.items() if w})


def split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a seeded split of ``labels`` (column indices) into a ``fraction`` part and the rest,
    stratified by label where every class present has at least two rows.

    >>> a, b = split(np.array([0, 0, 1, 1, 0, 1]), 0.5, seed=0)
    >>> sorted(np.r_[a, b].tolist()), len(a)
    ([0, 1, 2, 3, 4, 5], 3)
    """
    counts = np.bincount(labels)
    stratify = labels if (counts[counts > 0] >= 2).all() else None
    first, rest = train_test_split(np.arange(len(labels)), train_size=fraction, random_state=seed, stratify=stratify)
    return first, rest


def metric_names(metrics: Sequence[str] | None) -> list[str]:
    """The chosen metric names, checked against METRICS, in the order given, without repeats.

    >>> metric_names(["ece", "nll", "ece"]), metric_names(None) == list(METRICS)
    (['ece', 'nll'], True)
    """
    if metrics is None:
        return list(METRICS)
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    choices = ", ".join(METRICS)
    if not names:
        raise ValueError(f"metrics= is empty; name at least one of: {choices} (or pass None for all)")
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ValueError(f"metrics= has unknown name(s) {', '.join(map(repr, unknown))}; choose from: {choices}")
    return list(dict.fromkeys(names))
