"""Comparing configurations (template × verbalizer × model) and calibrators on the same held-out examples.

:func:`compare` takes the class scores of several configurations of the same examples,
splits the examples once (seeded, stratified as :func:`calibkit.evaluation.evaluate` does),
fits every calibrator of every configuration on the calibration part, and measures each
row (a configuration with a calibrator, or "uncalibrated") on the held-out part: each
metric with its bootstrap interval, its paired difference against a baseline row (the
same resamples of the same examples, :func:`calibkit.metrics.paired_bootstrap`), the
coverage and mean size of conformal prediction sets (:mod:`calibkit.conformal`: the
held-out part split once more, half to calibrate the sets, half to measure them) and
the area under the risk-coverage curve (:func:`calibkit.selective.aurc`).
:func:`calibkit.report.write_comparison_report` writes the report folder.

Example
-------
>>> import numpy as np, calibkit as ck
>>> from calibkit.comparison import compare
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, size=300)
>>> sharp = rng.normal(size=(300, 2)) + 1.5 * np.eye(2)[y]       # log-scores that know the label
>>> flat = rng.normal(size=(300, 2)) * 0.1                          # ... and scores that do not
>>> c = compare({"sharp": sharp, "flat": flat}, y, {"temperature": ck.TemperatureScaling()}, classes=[0, 1],
...             n_boot=50, metrics=["accuracy", "nll"], progress=False)
>>> list(c.table.index)
['sharp · uncalibrated', 'sharp · temperature', 'flat · uncalibrated', 'flat · temperature']
>>> c.baseline, bool(c.table.loc["flat · uncalibrated", "diff_accuracy_high"] < 0)
('sharp · uncalibrated', True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping, Sequence, Union

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from . import metrics as M
from .conformal import conformal_sets, coverage, mean_set_size
from .evaluation import METRICS, Evaluation, evaluate, metric_names, split
from .progress import describe, progress_bar
from .selective import aurc

__all__ = ["Comparison", "SEPARATOR", "baseline_row", "compare"]

#: Joins a row label's parts: ``"t1 · v1 · gemma-3-270m · temperature"``.
SEPARATOR = " · "

Config = Union[str, tuple]
Calibrators = Union[
    Mapping[str, BaseEstimator], Mapping[Config, Mapping[str, BaseEstimator]],
    Callable[[Config], Mapping[str, BaseEstimator]],
]


@dataclass
class Comparison:
    """What :func:`compare` measured.

    ``table`` has one row per configuration × calibrator (index: the row label, parts
    joined by :data:`SEPARATOR`), with the columns ``config``, one per factor
    (``factors``: e.g. template, verbalizer, model), ``calibrator``; per metric its value,
    ``_low`` and ``_high``; per metric ``diff_<metric>`` (this row less the baseline's,
    paired) with ``_low`` and ``_high``; ``coverage`` (with ``_low`` and ``_high``, a
    Clopper-Pearson interval) and ``set_size`` of the conformal sets at ``alpha`` (absent
    where ``alpha`` is None); and ``aurc``. ``probs`` holds each row's probabilities on
    the held-out examples (positions ``rows`` of the input; labels ``y`` as column
    indices); the conformal sets were calibrated on the held-out positions
    ``conformal_calibration`` and measured on ``conformal_test`` (indices into ``y``).
    ``evaluations`` holds each configuration's own evaluation (rows named by calibrator),
    as :func:`evaluate` made it. Without ``differences`` the ``diff_`` columns are absent.
    ``run_warnings`` is what the run warned besides the fits (a study sets it).
    """

    table: pd.DataFrame
    probs: dict[str, np.ndarray]
    y: np.ndarray
    classes: list[Hashable]
    rows: np.ndarray
    baseline: str
    metrics: list[str]
    factors: list[str] = field(default_factory=list)
    alpha: float | None = 0.1
    conformal_method: str = "lac"
    conformal_calibration: np.ndarray | None = None
    conformal_test: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    run_warnings: list[str] = field(default_factory=list)

    @property
    def flags(self) -> dict[str, list[str]]:
        """Row -> why it is not to be trusted (:func:`calibkit.conclusion.flags_of`): only flagged rows."""
        return {f"{config}{SEPARATOR}{name}": reasons for config, ev in self.evaluations.items()
                for name, reasons in ev.flags.items()}

    @property
    def fitted(self) -> dict[str, BaseEstimator]:
        """Row -> its fitted calibrator (the rows with one)."""
        return {f"{config}{SEPARATOR}{name}": est for config, ev in self.evaluations.items()
                for name, est in ev.fitted.items()}

    @property
    def all_warnings(self) -> list[str]:
        """Every warning of the run: the run's own, then each fit's, named by its row."""
        fits = [f"{config}{SEPARATOR}{name}: {w}" for config, ev in self.evaluations.items()
                for name, ws in ev.warnings.items() for w in ws]
        return list(dict.fromkeys([*self.run_warnings, *fits]))

    def evaluation(self) -> Evaluation:
        """The rows as one :class:`calibkit.evaluation.Evaluation` (its probabilities, confusion matrices)."""
        cols = [c for m in self.metrics for c in (m, f"{m}_low", f"{m}_high")]
        return Evaluation(table=self.table[cols], probs=self.probs, y=self.y, classes=self.classes, rows=self.rows,
                          info=self.info, metrics=self.metrics)

    def probabilities(self) -> pd.DataFrame:
        """Each held-out example's probabilities and predicted class under every row
        (``proba[<class>]@<row>``, ``pred@<row>``), as :meth:`Evaluation.probabilities`."""
        return self.evaluation().probabilities()

    def formatted(self) -> pd.DataFrame:
        """The table as text: each metric 'value [low, high]', its difference from the baseline
        ('Δ <metric>'), conformal coverage 'value [low, high]' and set size, and AURC."""
        t = self.table
        out = pd.DataFrame(index=t.index)

        def span(col: str) -> list[str]:
            return [f"{v:.4f} [{lo:.4f}, {hi:.4f}]" for v, lo, hi in zip(t[col], t[f"{col}_low"], t[f"{col}_high"])]

        for m in self.metrics:
            out[m] = span(m)
        for m in self.metrics if "diff_" + self.metrics[0] in t.columns else []:
            out[f"Δ {m}"] = [s if row != self.baseline else "baseline" for s, row in zip(span(f"diff_{m}"), t.index)]
        if self.alpha is not None:
            out["coverage"] = span("coverage")
            out["set size"] = [f"{v:.2f}" for v in t["set_size"]]
        out["aurc"] = [f"{v:.4f}" for v in t["aurc"]]
        return out


def compare(
    scores: Mapping[Config, Any],
    y: Any,
    calibrators: Calibrators,
    *,
    classes: Sequence[Hashable],
    factors: Sequence[str] | None = None,
    baseline: str | tuple | None = None,
    calibration_fraction: float = 0.5,
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
    metrics: Sequence[str] | None = None,
    alpha: float | None = 0.1,
    conformal_method: str = "lac",
    differences: bool = True,
    info: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> Comparison:
    """Compare configurations and calibrators on one held-out split of the same examples.

    ``scores`` maps each configuration to its n×K class log-probabilities (a LabelScores
    or an array) of the same n examples, labelled ``y`` (among ``classes``). A
    configuration is named by a string, or by a tuple of strings whose parts ``factors``
    names (e.g. ``("t1", "v1", "gemma-3-270m")`` with ``factors=["template", "verbalizer",
    "model"]``). ``calibrators`` is one mapping of name -> estimator for every
    configuration, a mapping of configuration -> such a mapping (contextual calibration's
    content-free scores depend on the configuration), or a callable of the configuration
    returning one. Each row is a configuration with "uncalibrated" or a calibrator.

    ``baseline`` is the row the others are compared with (paired differences, row less
    baseline): a row label, a configuration (its uncalibrated row), or ``(configuration,
    calibrator)``; None: the first configuration, uncalibrated. All bootstraps use ``seed``
    and ``n_boot``. ``alpha``: the conformal sets' miss rate (``conformal_method``: "lac",
    "aps" or "raps", MAPIE's: the ``conformal`` extra); None leaves the sets out.
    ``differences=False`` leaves out the paired differences (and their bootstraps).
    ``metrics``, ``info`` and ``progress`` are as in :func:`calibkit.evaluation.evaluate`.

    >>> rng = np.random.default_rng(1)
    >>> y = rng.integers(0, 3, size=240)
    >>> X = {("t1", "m"): rng.normal(size=(240, 3)) + 2 * np.eye(3)[y], ("t2", "m"): rng.normal(size=(240, 3))}
    >>> c = compare(X, y, {}, classes=[0, 1, 2], factors=["template", "model"], baseline=("t2", "m"),
    ...             n_boot=20, metrics=["accuracy"], alpha=0.2, progress=False)
    >>> c.table[["template", "calibrator", "diff_accuracy"]].round(2).values.tolist()
    [['t1', 'uncalibrated', 0.58], ['t2', 'uncalibrated', 0.0]]
    >>> bool(c.table["set_size"].iloc[0] < c.table["set_size"].iloc[1])
    True
    """
    chosen = metric_names(metrics)
    classes = list(classes)
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must map each configuration's name to its n×K class log-probabilities; got none")
    configs = list(scores)
    factors = _check_factors(configs, factors)
    labels = {c: _label(c) for c in configs}
    if len(set(labels.values())) < len(labels):
        raise ValueError(f"two configurations have the same name {sorted(labels.values())}; name each once")
    n = len(np.asarray(y, dtype=object))
    arrays = {c: _scores_array(c, labels[c], v, n, classes) for c, v in scores.items()}
    cals = _calibrators_of(configs, labels, calibrators)
    if alpha is not None and not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1): the conformal sets miss the truth at most that often (got {alpha})")
    row_of = {(c, name): f"{labels[c]}{SEPARATOR}{name}" for c in configs for name in ["uncalibrated", *cals[c]]}
    base = baseline_row(baseline, {c: list(cals[c]) for c in configs})

    evals = {c: evaluate(arrays[c], y, cals[c], classes=classes, calibration_fraction=calibration_fraction, seed=seed,
                         n_boot=n_boot, level=level, metrics=chosen, progress=progress) for c in configs}
    first = evals[configs[0]]
    y_eval, rows = first.y, first.rows
    probs = {row_of[(c, name)]: p for c, ev in evals.items() for name, p in ev.probs.items()}
    p_base = probs[base]
    if alpha is not None:
        conf_cal, conf_test = split(y_eval, 0.5, seed)
    else:
        conf_cal = conf_test = None

    records = []
    with progress_bar(len(probs) * len(chosen) * n_boot * differences, progress, desc="calibkit", unit="resample", leave=True,
                      dynamic_ncols=True) as bar:
        for c, ev in evals.items():
            for name, p in ev.probs.items():
                label = row_of[(c, name)]
                rec: dict[str, Any] = {"row": label, "config": labels[c]}
                rec.update(zip(factors, c) if factors else {})
                rec["calibrator"] = name
                for m in chosen:
                    rec[m], rec[f"{m}_low"], rec[f"{m}_high"] = (ev.table.loc[name, k] for k in
                                                                 (m, f"{m}_low", f"{m}_high"))
                for m in chosen if differences else []:
                    if label == base:  # the baseline less itself, on every resample
                        d = (0.0, 0.0, 0.0)
                    else:
                        describe(bar, f"paired bootstrap {m}: {label}")
                        fn, kw = METRICS[m]
                        r = M.paired_bootstrap(fn, y_eval, p, p_base, n_boot=n_boot, level=level, seed=seed, **kw)
                        d = (r.estimate, r.low, r.high)
                    rec[f"diff_{m}"], rec[f"diff_{m}_low"], rec[f"diff_{m}_high"] = d
                    bar.update(n_boot)
                if alpha is not None:
                    rec.update(_conformal(p, y_eval, conf_cal, conf_test, alpha, conformal_method, level, seed))
                rec["aurc"] = aurc(y_eval, p)
                records.append(rec)
    table = pd.DataFrame(records).set_index("row")
    facts = {
        "n": int(n), "n_calibration": int(first.info["n_calibration"]), "n_evaluation": int(len(rows)),
        "seed": seed, "bootstrap": n_boot, "level": level, "classes": [str(k) for k in classes], "metrics": chosen,
        "configurations": [labels[c] for c in configs], "calibrators": {labels[c]: list(cals[c]) for c in configs},
        "baseline": base, "alpha": alpha,
    }
    if alpha is not None:
        facts.update({"conformal method": conformal_method, "n_conformal_calibration": int(len(conf_cal)),
                      "n_conformal_test": int(len(conf_test))})
    facts["calibkit version"] = first.info["calibkit version"]
    return Comparison(table=table, probs=probs, y=y_eval, classes=classes, rows=rows, baseline=base, metrics=chosen,
                      factors=factors, alpha=alpha, conformal_method=conformal_method,
                      conformal_calibration=conf_cal, conformal_test=conf_test, info={**dict(info or {}), **facts},
                      evaluations={labels[c]: ev for c, ev in evals.items()})


def _label(config: Config) -> str:
    return config if isinstance(config, str) else SEPARATOR.join(config)


def _check_factors(configs: list, factors: Sequence[str] | None) -> list[str]:
    tuples = [c for c in configs if isinstance(c, tuple)]
    bad = [c for c in configs if not isinstance(c, (str, tuple)) or (isinstance(c, tuple)
                                                                     and not all(isinstance(p, str) for p in c))]
    if bad:
        raise ValueError(f"scores' keys name configurations: strings, or tuples of strings (got {bad[0]!r})")
    if not tuples:
        if factors:
            raise ValueError(f"factors={list(factors)} names the parts of tuple configurations; these are strings")
        return []
    if len(tuples) < len(configs) or len({len(c) for c in configs}) > 1:
        raise ValueError("scores' keys must all be strings or all tuples of one length "
                         f"(got {configs[:4]}{' ...' if len(configs) > 4 else ''})")
    if factors is None or len(factors) != len(configs[0]):
        raise ValueError(f"the configurations are tuples of {len(configs[0])}; pass factors= naming each part, "
                         "e.g. ['template', 'verbalizer', 'model']")
    reserved = {"config", "calibrator", "row"}
    if set(factors) & reserved or len(set(factors)) < len(factors):
        raise ValueError(f"factors={list(factors)} must be distinct and not {sorted(reserved)}")
    return list(factors)


def _scores_array(config: Config, label: str, value: Any, n: int, classes: list) -> np.ndarray:
    own = getattr(value, "classes", None)
    if own is not None and list(own) != classes:
        raise ValueError(f"scores[{label!r}] are of the classes {list(own)}, not {classes}; "
                         "every configuration must score the same classes, in the same order")
    arr = np.asarray(value, dtype=float)
    if arr.ndim != 2 or arr.shape != (n, len(classes)):
        raise ValueError(f"scores[{label!r}] has shape {arr.shape}; every configuration must score the same "
                         f"{n} examples (one per label in y) over the {len(classes)} classes {classes}")
    return arr


def _calibrators_of(configs: list, labels: dict, calibrators: Calibrators) -> dict[Config, Mapping[str, Any]]:
    if callable(calibrators) and not isinstance(calibrators, Mapping):
        out = {c: calibrators(c) for c in configs}
    elif not isinstance(calibrators, Mapping):
        raise ValueError("calibrators must be a mapping of name -> estimator, a mapping of configuration -> such "
                         f"a mapping, or a callable of the configuration (got {type(calibrators).__name__})")
    elif calibrators and all(isinstance(v, Mapping) for v in calibrators.values()):
        missing = [labels[c] for c in configs if c not in calibrators]
        extra = [k for k in calibrators if k not in labels]
        if missing or extra:
            raise ValueError("calibrators maps configurations to calibrators, and "
                             + (f"has none for {missing}" if missing else f"names unknown configurations {extra}")
                             + f"; the configurations are {list(labels.values())}")
        out = {c: calibrators[c] for c in configs}
    else:
        out = {c: calibrators for c in configs}
    for c, cals in out.items():
        if not isinstance(cals, Mapping):
            raise ValueError(f"the calibrators of {labels[c]!r} must be a mapping of name -> estimator "
                             f"(got {type(cals).__name__})")
        bad = [name for name in cals if not isinstance(name, str) or SEPARATOR.strip() in name]
        if bad:
            raise ValueError(f"calibrator name {bad[0]!r} must be a string without {SEPARATOR.strip()!r}")
        if "uncalibrated" in cals:
            raise ValueError("'uncalibrated' is the model's own scores, a row of every configuration; name your "
                             "calibrator otherwise")
    return out


def baseline_row(baseline: str | tuple | None, calibrators: Mapping[Config, Sequence[str]]) -> str:
    """The label of the row that ``baseline`` names, among the rows of ``calibrators`` (each
    configuration -> its calibrators' names; every configuration has "uncalibrated" too).

    ``baseline`` gives the parts of a row label in order, as a string joined by
    :data:`SEPARATOR` or a tuple; parts may be left out where the rest name one row, and
    without a calibrator it is the uncalibrated row. None: the first configuration, uncalibrated.

    >>> names = {("t1", "v1"): ["temperature"], ("t2", "v1"): ["temperature"]}
    >>> baseline_row("t2", names), baseline_row(("t1", "temperature"), names)
    ('t2 · v1 · uncalibrated', 't1 · v1 · temperature')
    """
    rows = {_label(c) + SEPARATOR + name: (*_parts(c), name)
            for c, cals in calibrators.items() for name in ["uncalibrated", *cals]}
    if baseline is None:
        return next(iter(rows))
    given = [g.strip() for piece in _parts(baseline) for g in piece.split(SEPARATOR.strip())]

    def within(parts: tuple) -> bool:
        it = iter(parts)
        return all(g in it for g in given) and (parts[-1] == "uncalibrated" or parts[-1] in given)

    found = [label for label, parts in rows.items() if within(parts)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f"baseline={baseline!r} names no row of this comparison; give a configuration (its "
                         f"uncalibrated row) or a row: {', '.join(map(repr, rows))}")
    raise ValueError(f"baseline={baseline!r} names several rows ({', '.join(map(repr, found))}); name one more "
                     "exactly")


def _parts(value: Any) -> tuple:
    if isinstance(value, tuple):
        return tuple(p for v in value for p in _parts(v))
    return (value,) if isinstance(value, str) else (str(value),)


def _conformal(p: np.ndarray, y: np.ndarray, cal: np.ndarray, test: np.ndarray, alpha: float, method: str,
               level: float, seed: int) -> dict[str, float]:
    sets = conformal_sets(p[cal], y[cal], p[test], alpha=alpha, method=method, random_state=seed)
    cov = coverage(y[test], sets, level=level)
    return {"coverage": cov.estimate, "coverage_low": cov.low, "coverage_high": cov.high,
            "set_size": mean_set_size(sets)}
