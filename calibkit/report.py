"""Evaluating calibrators on held-out examples, and the report folder that shows it.

:func:`evaluate` splits scored examples into a calibration part and a held-out part,
fits each calibrator on the first and measures it on the second, every metric with a
seeded bootstrap interval. :func:`write_report` writes the table (CSV and Markdown),
reliability diagrams (PNG) and an index.html that shows them together.

Example
-------
>>> import numpy as np, calibkit as ck
>>> from calibkit.report import evaluate
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(400, 2)) * 3; y = (X[:, 1] + rng.normal(size=400) > X[:, 0]).astype(int)
>>> ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=[0, 1], n_boot=50)
>>> list(ev.table.index)
['uncalibrated', 'temperature']
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import train_test_split

from . import metrics as M

__all__ = ["Evaluation", "evaluate", "write_report", "METRICS"]

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

    ``table`` has one row per calibrator ("uncalibrated" first) and, per metric, its
    value with the interval's ``_low`` and ``_high``. ``probs`` holds each
    calibrator's probabilities on the held-out examples (positions ``rows`` of the
    input, labels ``y`` as column indices).
    """

    table: pd.DataFrame
    probs: dict[str, np.ndarray]
    y: np.ndarray
    classes: list[Hashable]
    rows: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def probabilities(self) -> pd.DataFrame:
        """Each held-out example's probabilities under every calibrator, one row per example."""
        out = pd.DataFrame({"row": self.rows, "label": [self.classes[i] for i in self.y]})
        for name, p in self.probs.items():
            for k, c in enumerate(self.classes):
                out[f"proba[{c}]@{name}"] = p[:, k]
        return out

    def formatted(self) -> pd.DataFrame:
        """The table with each metric as 'value [low, high]'."""
        out = pd.DataFrame(index=self.table.index)
        for m in METRICS:
            t = self.table
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
) -> Evaluation:
    """Fit each calibrator on a calibration split of (X, y); measure all on the rest.

    X is the n×K matrix of class log-probabilities (a LabelScores or an array); y the
    labels, among ``classes``. The split is stratified by label where every class
    has at least two examples, and seeded. "uncalibrated" is the model's scores
    renormalised over the classes.
    """
    logp = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=object)
    if logp.ndim != 2 or logp.shape[0] != len(y):
        raise ValueError(f"X must be n×K class scores with one label per row (X {logp.shape}, y {len(y)})")
    if not 0 < calibration_fraction < 1:
        raise ValueError(f"calibration_fraction must lie between 0 and 1 (got {calibration_fraction})")
    classes = list(classes)
    unknown = sorted({repr(v) for v in y} - {repr(c) for c in classes})
    if unknown:
        raise ValueError(f"labels {', '.join(unknown[:5])} are not among the classes {classes}")
    labels = np.array([classes.index(v) for v in y])
    counts = np.bincount(labels, minlength=len(classes))
    stratify = labels if (counts[counts > 0] >= 2).all() else None
    idx_cal, idx_eval = train_test_split(
        np.arange(len(y)), train_size=calibration_fraction, random_state=seed, stratify=stratify
    )
    y_cal, y_eval = labels[idx_cal], labels[idx_eval]
    probs = {"uncalibrated": M.to_probs(logp[idx_eval], input="logprobs")}
    for name, cal in calibrators.items():
        if name == "uncalibrated":
            raise ValueError("'uncalibrated' is the model's own scores; name your calibrator otherwise")
        fitted = clone(cal).fit(logp[idx_cal], np.array(classes, dtype=object)[y_cal].tolist())
        probs[name] = np.asarray(fitted.predict_proba(logp[idx_eval]))
    rows = []
    for name, p in probs.items():
        row: dict[str, Any] = {"calibrator": name}
        for m, (fn, kw) in METRICS.items():
            r = M.bootstrap(fn, y_eval, p, n_boot=n_boot, level=level, seed=seed, **kw)
            row[m], row[f"{m}_low"], row[f"{m}_high"] = r.estimate, r.low, r.high
        rows.append(row)
    table = pd.DataFrame(rows).set_index("calibrator")
    meta = {
        "n": int(len(y)), "n_calibration": int(len(idx_cal)), "n_evaluation": int(len(idx_eval)),
        "seed": seed, "bootstrap": n_boot, "level": level, "classes": [str(c) for c in classes],
        **(info or {}),
    }
    return Evaluation(table=table, probs=probs, y=y_eval, classes=classes, rows=idx_eval, info=meta)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }}
.small {{ color: #666; font-size: 90%; }}
</style></head><body>
<h1>{title}</h1>
<p class="small">{about}</p>
<h2>Metrics on the held-out examples</h2>
<p class="small">Each value with its {level:.0%} bootstrap interval ({boot} resamples, seed {seed}).
ECE: 15 equal-width bins, top-label, L1. Lower is better for all but accuracy.</p>
{table}
<p><a href="metrics.csv">metrics.csv</a> · <a href="metrics.md">metrics.md</a> ·
<a href="probabilities.csv">probabilities.csv</a> · <a href="evaluation.json">evaluation.json</a></p>
<h2>Reliability diagrams</h2>
<img src="reliability.png" alt="reliability diagrams of every calibrator side by side">
{singles}
</body></html>
"""


def write_report(ev: Evaluation, folder: str | Path, *, title: str = "calibkit report") -> Path:
    """Write metrics.csv, metrics.md, probabilities.csv, evaluation.json, reliability PNGs
    and index.html; return the folder."""
    from .diagrams import plot_reliability, plot_reliability_grid, pyplot, reliability_data

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    ev.table.to_csv(out / "metrics.csv", float_format="%.6g")
    ev.probabilities().to_csv(out / "probabilities.csv", index=False, float_format="%.6g")
    shown = ev.formatted()
    (out / "metrics.md").write_text(_markdown(shown))
    (out / "evaluation.json").write_text(json.dumps(ev.info, indent=2, default=str) + "\n")
    plt = pyplot()
    fig = plot_reliability_grid(ev.y, ev.probs, ncols=min(len(ev.probs), 4))
    fig.savefig(out / "reliability.png", dpi=110)
    plt.close(fig)
    singles = []
    for name, p in ev.probs.items():
        fname = f"reliability_{slug(name, 'calibrator')}.png"
        fig = plt.figure(figsize=(4.5, 5.5), layout="constrained")
        ax, hist_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        plot_reliability(reliability_data(ev.y, p), ax=ax, hist_ax=hist_ax, title=name)
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        singles.append(f'<img src="{fname}" alt="reliability diagram: {html.escape(name)}" width="360">')
    about = ", ".join(f"{k}: {html.escape(str(v))}" for k, v in ev.info.items() if k not in ("level", "bootstrap", "seed"))
    (out / "index.html").write_text(
        _PAGE.format(
            title=html.escape(title), about=about, level=ev.info.get("level", 0.95),
            boot=ev.info.get("bootstrap"), seed=ev.info.get("seed"),
            table=shown.to_html(escape=True), singles="\n".join(singles),
        )
    )
    return out


def slug(name: str, fallback: str = "report") -> str:
    """A name safe in a file or folder name: letters, digits, '-', '_' and '.' kept, others '-'."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-") or fallback


def _markdown(frame: pd.DataFrame) -> str:
    # pandas' to_markdown needs the tabulate package just for this; a plain table is enough.
    cols = [frame.index.name or ""] + list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for idx, row in frame.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"
