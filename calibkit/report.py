"""The report folder: what :mod:`calibkit.evaluation` and :mod:`calibkit.comparison` measured, rendered.

:func:`write_report` writes an :class:`calibkit.evaluation.Evaluation`'s table (CSV and
Markdown), the held-out probabilities and predictions, reliability diagrams (PNG; one-vs-rest
per class too when there are more than two classes), confusion matrices, evaluation.json
and an index.html that shows them together. :func:`write_comparison_report` writes the
report of a :class:`calibkit.comparison.Comparison` (several configurations and calibrators
on the same held-out examples, with paired differences against a baseline). This module
renders only: the numbers are those of the Evaluation or Comparison it is given (the
figures' curves come from :mod:`calibkit.diagrams` and :mod:`calibkit.selective`).

Example
-------
>>> import tempfile, numpy as np, calibkit as ck
>>> from calibkit.evaluation import evaluate
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(400, 2)) * 3; y = (X[:, 1] + rng.normal(size=400) > X[:, 0]).astype(int)
>>> ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=[0, 1], n_boot=10,
...               metrics=["accuracy", "ece"], progress=False)
>>> with tempfile.TemporaryDirectory() as tmp:
...     print((write_report(ev, tmp) / "metrics.md").read_text().splitlines()[0])
| calibrator | accuracy | ece |
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .progress import describe, progress_bar

if TYPE_CHECKING:
    from .comparison import Comparison
    from .evaluation import Evaluation

__all__ = ["slug", "write_comparison_report", "write_report"]

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
    ev: Evaluation | Comparison, folder: str | Path, *, title: str = "calibkit report", progress: bool | None = None
) -> Path:
    """Write the report folder and return it; a :class:`~calibkit.comparison.Comparison`'s
    (a study's) is :func:`write_comparison_report`'s.

    metrics.csv and metrics.md (the metrics computed), probabilities.csv (with
    ``pred@<calibrator>`` columns), confusion_matrix.csv, evaluation.json (``ev.info``:
    the run's settings, calibkit's version, the split), reliability diagrams (PNG: all
    calibrators side by side, each alone and, with more than two classes, one-vs-rest
    per class: ``reliability_classwise_<calibrator>.png``) and index.html, which shows
    them together. ``progress`` is as in :func:`calibkit.evaluation.evaluate`, over the figures.

    >>> import tempfile
    >>> from calibkit.evaluation import evaluate
    >>> rng = np.random.default_rng(2)
    >>> X = rng.normal(size=(120, 3)); y = np.array(["a", "b", "c"])[X.argmax(axis=1)]
    >>> ev = evaluate(X, y, {}, classes=["a", "b", "c"], n_boot=10, metrics=["accuracy"])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     pngs = sorted(p.name for p in write_report(ev, tmp).glob("*.png"))
    >>> pngs
    ['reliability.png', 'reliability_classwise_uncalibrated.png', 'reliability_uncalibrated.png']
    """
    from .comparison import Comparison

    if isinstance(ev, Comparison):
        return write_comparison_report(ev, folder, title=title, progress=progress)
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
