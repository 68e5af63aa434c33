"""Evaluating calibrators on held-out examples, and the report folder that shows it.

:func:`evaluate` splits scored examples into a calibration part and a held-out part,
fits each calibrator on the first and measures it on the second, every chosen metric
with a seeded bootstrap interval. :func:`write_report` writes the table (CSV and
Markdown), the held-out probabilities and predictions, reliability diagrams (PNG;
one-vs-rest per class too when there are more than two classes), confusion matrices,
evaluation.json and an index.html that shows them together. :func:`write_comparison_report`
writes the report of a :class:`calibkit.comparison.Comparison` (several configurations and
calibrators on the same held-out examples, with paired differences against a baseline).

Example
-------
>>> import numpy as np, calibkit as ck
>>> from calibkit.report import evaluate
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(400, 2)) * 3; y = (X[:, 1] + rng.normal(size=400) > X[:, 0]).astype(int)
>>> ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=[0, 1], n_boot=50,
...               metrics=["accuracy", "ece"], progress=False)
>>> list(ev.table.index), list(ev.formatted().columns)
(['uncalibrated', 'temperature'], ['accuracy', 'ece'])
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import train_test_split

from . import metrics as M
from .progress import describe, progress_bar
from .version import __version__

if TYPE_CHECKING:
    from .comparison import Comparison

__all__ = ["Evaluation", "evaluate", "write_report", "write_comparison_report", "METRICS", "metric_names", "split"]

#: Metric name -> (function, keyword arguments): the columns of the report.
METRICS: dict[str, tuple[Any, dict[str, Any]]] = {
    "accuracy": (M.accuracy, {}),
    "nll": (M.nll, {}),
    "brier": (M.brier, {}),
    "ece": (M.ece, {"bins": 15, "binning": "width", "reduction": "top-label", "norm": "l1"}),
    "smooth_ece": (M.smooth_ece, {}),
}


@dataclass
class Evaluation:
    """What :func:`evaluate` measured.

    ``table`` has one row per calibrator ("uncalibrated" first) and, per metric
    computed (``metrics``), its value with the interval's ``_low`` and ``_high``.
    ``probs`` holds each calibrator's probabilities on the held-out examples
    (positions ``rows`` of the input, labels ``y`` as column indices); ``info`` the
    run's description and settings (evaluation.json).
    """

    table: pd.DataFrame
    probs: dict[str, np.ndarray]
    y: np.ndarray
    classes: list[Hashable]
    rows: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: list(METRICS))

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
        for name, cal in calibrators.items():
            describe(bar, f"fitting {name}")
            fitted = clone(cal).fit(logp[idx_cal], np.array(classes, dtype=object)[y_cal].tolist())
            probs[name] = np.asarray(fitted.predict_proba(logp[idx_eval]))
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
    return Evaluation(table=table, probs=probs, y=y_eval, classes=classes, rows=idx_eval, info=meta, metrics=chosen)


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
    """The chosen metric names, checked against METRICS, in the order given, without repeats."""
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


_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
table.about th, table.about td {{ text-align: left; vertical-align: top; }}
table.about table {{ margin: 0; }}
table.about pre {{ margin: 0; white-space: pre-wrap; }}
.confusion {{ display: inline-block; vertical-align: top; margin-right: 2em; }}
img {{ max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }}
.small {{ color: #666; font-size: 90%; }}
</style></head><body>
<h1>{title}</h1>
"""

_PAGE = _HEAD + """{about}
<h2>Metrics on the held-out examples</h2>
<p class="small">Each value with its {level:.0%} bootstrap interval ({boot} resamples, seed {seed}).
{notes}</p>
{table}
<p><a href="metrics.csv">metrics.csv</a> · <a href="metrics.md">metrics.md</a> ·
<a href="probabilities.csv">probabilities.csv</a> (with each calibrator's predicted class) ·
<a href="confusion_matrix.csv">confusion_matrix.csv</a> · <a href="evaluation.json">evaluation.json</a></p>
<h2>Reliability diagrams</h2>
<img src="reliability.png" alt="reliability diagrams of every calibrator side by side">
{singles}
{classwise}
<h2>Confusion matrices</h2>
<p class="small">Held-out examples by true class (rows) and predicted class, the arg-max (columns).</p>
{confusion}
</body></html>
"""

_NOTES = {
    "ece": "ECE: 15 equal-width bins, top-label, L1.",
    "smooth_ece": "Smooth ECE: Błasiok &amp; Nakkiran's, top-label, as relplot computes it.",
}


def _metric_notes(metrics: Sequence[str]) -> str:
    """What the page says under its metrics table: how each binned metric was computed, which way is better."""
    return " ".join([_NOTES[m] for m in metrics if m in _NOTES]
                    + ["Lower is better for all but accuracy." if "accuracy" in metrics else "Lower is better."])


def _about(info: Mapping[str, Any]) -> dict[str, Any]:
    """The run's settings for the page's top table (level, bootstrap and seed are said by the metrics)."""
    return {k: v for k, v in info.items() if k not in ("level", "bootstrap", "seed")}


def write_report(
    ev: Evaluation, folder: str | Path, *, title: str = "calibkit report", progress: bool | None = None
) -> Path:
    """Write the report folder and return it.

    metrics.csv and metrics.md (the metrics computed), probabilities.csv (with
    ``pred@<calibrator>`` columns), confusion_matrix.csv, evaluation.json (``ev.info``:
    the run's settings, calibkit's version, the split), reliability diagrams (PNG: all
    calibrators side by side, each alone and, with more than two classes, one-vs-rest
    per class: ``reliability_classwise_<calibrator>.png``) and index.html, which shows
    them together. ``progress`` is as in :func:`evaluate`, over the figures.

    >>> import tempfile
    >>> rng = np.random.default_rng(2)
    >>> X = rng.normal(size=(120, 3)); y = np.array(["a", "b", "c"])[X.argmax(axis=1)]
    >>> ev = evaluate(X, y, {}, classes=["a", "b", "c"], n_boot=10, metrics=["accuracy"])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     pngs = sorted(p.name for p in write_report(ev, tmp).glob("*.png"))
    >>> pngs
    ['reliability.png', 'reliability_classwise_uncalibrated.png', 'reliability_uncalibrated.png']
    """
    from .diagrams import (
        classwise_reliability_data,
        plot_classwise_reliability,
        plot_reliability,
        plot_reliability_grid,
        pyplot,
        reliability_data,
    )

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    ev.table.to_csv(out / "metrics.csv", float_format="%.6g")
    ev.probabilities().to_csv(out / "probabilities.csv", index=False, float_format="%.6g")
    ev.confusion_matrices().to_csv(out / "confusion_matrix.csv", index=False)
    shown = ev.formatted()
    (out / "metrics.md").write_text(_markdown(shown))
    (out / "evaluation.json").write_text(json.dumps(_jsonable(ev.info), indent=2, allow_nan=False) + "\n")

    plt = pyplot()
    stems = _file_stems(list(ev.probs))
    classwise = len(ev.classes) > 2
    labels = np.array(ev.classes, dtype=object)[ev.y]
    singles, per_class = [], []
    with progress_bar(1 + len(ev.probs) * (2 if classwise else 1), progress, desc="calibkit", unit="figure",
                      leave=True, dynamic_ncols=True) as bar:
        describe(bar, "drawing reliability.png")
        fig = plot_reliability_grid(ev.y, ev.probs, ncols=min(len(ev.probs), 4))
        fig.savefig(out / "reliability.png", dpi=110)
        plt.close(fig)
        bar.update()
        for name, p in ev.probs.items():
            fname = f"reliability_{stems[name]}.png"
            describe(bar, f"drawing {fname}")
            fig = plt.figure(figsize=(4.5, 5.5), layout="constrained")
            ax, hist_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
            plot_reliability(reliability_data(ev.y, p), ax=ax, hist_ax=hist_ax, title=name)
            fig.savefig(out / fname, dpi=110)
            plt.close(fig)
            bar.update()
            singles.append(f'<img src="{fname}" alt="reliability diagram: {html.escape(name)}" width="360">')
            if classwise:
                fname = f"reliability_classwise_{stems[name]}.png"
                describe(bar, f"drawing {fname}")
                data = classwise_reliability_data(labels, p, classes=ev.classes)
                fig = plot_classwise_reliability(data, ncols=min(len(ev.classes), 4),
                                                 title=f"{name}: each class against the rest")
                fig.savefig(out / fname, dpi=110)
                plt.close(fig)
                bar.update()
                per_class.append(f'<h3>{html.escape(name)}</h3>\n'
                                 f'<img src="{fname}" alt="one-vs-rest reliability diagrams: {html.escape(name)}">')
    classwise_html = ""
    if classwise:
        classwise_html = (
            "<h2>Reliability per class (one-vs-rest)</h2>\n<p class=\"small\">For each class, its predicted "
            "probability against the share of examples that are of it.</p>\n" + "\n".join(per_class)
        )
    confusion = "\n".join(
        f'<div class="confusion"><h3>{html.escape(name)}</h3>\n{ev.confusion_matrix(name).to_html(escape=True)}</div>'
        for name in ev.probs
    )
    about = _about(ev.info)
    (out / "index.html").write_text(
        _PAGE.format(
            title=html.escape(title), about=_about_table(about), level=ev.info.get("level", 0.95),
            boot=html.escape(str(ev.info.get("bootstrap"))), seed=html.escape(str(ev.info.get("seed"))),
            notes=_metric_notes(ev.metrics),
            table=shown.to_html(escape=True), singles="\n".join(singles), classwise=classwise_html,
            confusion=confusion,
        )
    )
    return out


_COMPARISON_PAGE = _HEAD + """{about}
<h2>Metrics on the held-out examples</h2>
<p class="small">{n_eval} held-out examples, the same for every row. Each value with its {level:.0%} bootstrap
interval ({boot} resamples, seed {seed}). {notes}</p>
{metrics}
<p><a href="comparison.csv">comparison.csv</a> (every number) · <a href="comparison.md">comparison.md</a> ·
<a href="probabilities.csv">probabilities.csv</a> (with each row's predicted class) ·
<a href="evaluation.json">evaluation.json</a></p>
<h2>Paired differences against the baseline</h2>
<p>Baseline: <strong>{baseline}</strong>. Each row's metric less the baseline's, on the same held-out examples,
with a {level:.0%} paired bootstrap interval (the same resamples for both; {boot} resamples, seed {seed}).
An interval that excludes 0 means the two differ at that level.</p>
{differences}
{conformal}
<h2>Selective prediction: risk-coverage curves</h2>
<p class="small">Answer the surest examples first (by top-label probability): the error rate among those
answered, against the share answered. AURC, the area under the curve: lower is better.</p>
<img src="risk_coverage.png" alt="risk-coverage curves of every row">
{aurc}
<h2>Reliability diagrams</h2>
<img src="reliability.png" alt="reliability diagrams of every row">
</body></html>
"""

_CONFORMAL = """<h2>Conformal prediction sets</h2>
<p>Split-conformal sets at alpha = {alpha:g} ({method}, by MAPIE), which should hold the true class for at least
{target:.0%} of examples: calibrated on {n_cal} of the held-out examples and measured on the other {n_test}
(the same for every row). Coverage with its {level:.0%} Clopper-Pearson interval; set size, the mean number of
classes in a set (smaller is more informative at the same coverage).</p>
{table}
"""


def write_comparison_report(
    cmp: Comparison, folder: str | Path, *, title: str = "calibkit comparison", progress: bool | None = None
) -> Path:
    """Write a :class:`calibkit.comparison.Comparison`'s report folder and return it.

    comparison.csv (every number of ``cmp.table``), comparison.md (``cmp.formatted()``),
    probabilities.csv, evaluation.json (``cmp.info``), risk_coverage.png (every row's
    risk-coverage curve), reliability.png (every row's reliability diagram) and
    index.html: the metrics with their intervals, the paired differences against the
    baseline, the conformal sets' coverage and size, and the two figures.

    >>> import tempfile
    >>> from calibkit.comparison import compare
    >>> rng = np.random.default_rng(3)
    >>> y = rng.integers(0, 2, size=160)
    >>> c = compare({"a": rng.normal(size=(160, 2)), "b": rng.normal(size=(160, 2))}, y, {}, classes=[0, 1],
    ...             n_boot=10, metrics=["accuracy"], progress=False)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     names = sorted(p.name for p in write_comparison_report(c, tmp).iterdir())
    >>> names  # doctest: +NORMALIZE_WHITESPACE
    ['comparison.csv', 'comparison.md', 'evaluation.json', 'index.html', 'probabilities.csv',
     'reliability.png', 'risk_coverage.png']
    """
    from .diagrams import plot_reliability_grid, plot_risk_coverage, pyplot
    from .selective import risk_coverage

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    cmp.table.to_csv(out / "comparison.csv", float_format="%.6g")
    cmp.probabilities().to_csv(out / "probabilities.csv", index=False, float_format="%.6g")
    shown = cmp.formatted()
    (out / "comparison.md").write_text(_markdown(shown))
    (out / "evaluation.json").write_text(json.dumps(_jsonable(cmp.info), indent=2, allow_nan=False) + "\n")

    plt = pyplot()
    with progress_bar(2, progress, desc="calibkit", unit="figure", leave=True, dynamic_ncols=True) as bar:
        describe(bar, "drawing risk_coverage.png")
        curves = {f"{row} (AURC {a:.3f})": risk_coverage(cmp.y, cmp.probs[row])
                  for row, a in zip(cmp.table.index, cmp.table["aurc"])}
        fig = plt.figure(figsize=(8, 5), layout="constrained")
        plot_risk_coverage(curves, ax=fig.subplots())
        fig.savefig(out / "risk_coverage.png", dpi=110)
        plt.close(fig)
        bar.update()
        describe(bar, "drawing reliability.png")
        per_config = cmp.table.groupby("config", sort=False).size()
        ncols = int(per_config.iloc[0]) if per_config.nunique() == 1 and per_config.iloc[0] <= 5 else 4
        fig = plot_reliability_grid(cmp.y, cmp.probs, ncols=min(ncols, len(cmp.probs)))
        fig.savefig(out / "reliability.png", dpi=110)
        plt.close(fig)
        bar.update()

    def part(columns: list[str]) -> str:
        return shown[columns].to_html(escape=True)

    conformal = ""
    if cmp.alpha is not None:
        conformal = _CONFORMAL.format(
            alpha=cmp.alpha, method=html.escape(cmp.conformal_method.upper()), target=1 - cmp.alpha,
            n_cal=len(cmp.conformal_calibration), n_test=len(cmp.conformal_test),
            level=cmp.info.get("level", 0.95), table=part(["coverage", "set size"]),
        )
    about = _about(cmp.info)
    (out / "index.html").write_text(
        _COMPARISON_PAGE.format(
            title=html.escape(title), about=_about_table(about), n_eval=len(cmp.y), level=cmp.info.get("level", 0.95),
            boot=html.escape(str(cmp.info.get("bootstrap"))), seed=html.escape(str(cmp.info.get("seed"))),
            notes=_metric_notes(cmp.metrics),
            metrics=part(cmp.metrics), baseline=html.escape(cmp.baseline),
            differences=part([f"Δ {m}" for m in cmp.metrics]), conformal=conformal, aurc=part(["aurc"]),
        )
    )
    return out


def slug(name: str, fallback: str = "report") -> str:
    """A name safe in a file or folder name: letters, digits, '-', '_' and '.' kept, others '-'."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-") or fallback


def _file_stems(names: list[str]) -> dict[str, str]:
    """A distinct file-name stem per calibrator name ('a b' and 'a-b' both slug to 'a-b')."""
    stems: dict[str, str] = {}
    for name in names:
        base = stem = slug(name, "calibrator")
        k = 2
        while stem in stems.values():
            stem, k = f"{base}-{k}", k + 1
        stems[name] = stem
    return stems


def _jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold made plain: mappings with string keys, sequences
    as lists, numpy numbers as Python numbers, NaN and infinities as strings, the rest as str."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return [_jsonable(v) for v in (sorted(value, key=str) if isinstance(value, (set, frozenset)) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def _html_value(value: Any, *, quoted: bool = False) -> str:
    """A value of the run's info as HTML: mappings as small definition tables, sequences
    comma-separated; strings in them quoted, so leading spaces (" positive") show."""
    if isinstance(value, Mapping):
        if not value:
            return "<em>none</em>"
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_html_value(v)}</td></tr>" for k, v in value.items())
        return f"<table>{rows}</table>"
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return ", ".join(_html_value(v, quoted=True) for v in value) or "<em>none</em>"
    if isinstance(value, str):
        if quoted or value != value.strip():
            return f"<code>{html.escape(json.dumps(value, ensure_ascii=False))}</code>"
        if "\n" in value:
            return f"<pre>{html.escape(value)}</pre>"
    return html.escape(str(value))


def _about_table(info: Mapping[str, Any]) -> str:
    rows = "\n".join(f"<tr><th>{html.escape(str(k))}</th><td>{_html_value(v)}</td></tr>" for k, v in info.items())
    return f'<table class="about">\n{rows}\n</table>'


def _markdown(frame: pd.DataFrame) -> str:
    # pandas' to_markdown needs the tabulate package just for this; a plain table is enough.
    cols = [frame.index.name or ""] + list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for idx, row in frame.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"
