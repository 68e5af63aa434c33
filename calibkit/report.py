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
## Conclusion

A report folder holds one run: writing into a folder that holds another report raises
:class:`ReportFolderError` unless ``overwrite=True``, and a folder holding files that are
not a report's is never written into. Every page and Markdown file leads with its
conclusion (:mod:`calibkit.conclusion`): the best row by NLL (Brier beside it) with its
interval, whether it beats the baseline, and what each calibrator did; a flagged row (its
fit warned, or its predictions are nearly constant) is marked in every table and figure,
with the reason, and every warning of the run is listed.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .conclusion import FLAG, Conclusion, conclude, marked
from .progress import describe, progress_bar

if TYPE_CHECKING:
    from .comparison import Comparison
    from .evaluation import Evaluation

__all__ = ["REPORT_FILES", "ReportFolderError", "check_folder", "slug", "write_comparison_report", "write_report"]

#: The files a report writes (besides ``reliability_<calibrator>.png`` and
#: ``reliability_classwise_<calibrator>.png``): a folder holding only these holds a report.
REPORT_FILES = ("index.html", "metrics.csv", "metrics.md", "probabilities.csv", "confusion_matrix.csv",
                "evaluation.json", "comparison.csv", "comparison.md", "risk_coverage.png", "reliability.png")


class ReportFolderError(ValueError):
    """The folder holds another run's report (``overwrite=True`` replaces it) or files that
    are not a report's (never written into). ``folder``, ``names`` (what it holds) and
    ``foreign`` (whether any of them is not a report's) say which."""

    def __init__(self, message: str, folder: Path, names: list[str], foreign: bool) -> None:
        super().__init__(message)
        self.folder, self.names, self.foreign = folder, names, foreign


def _is_report_file(name: str) -> bool:
    return name in REPORT_FILES or (name.startswith("reliability_") and name.endswith(".png"))


def check_folder(folder: str | Path, *, overwrite: bool = False) -> Path:
    """The folder, if a report can be written into it: absent, empty, or holding an earlier
    report (only with ``overwrite``); else :class:`ReportFolderError`. Nothing is changed.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "metrics.csv").write_text("")
    ...     try:
    ...         check_folder(tmp)
    ...     except ReportFolderError as e:
    ...         print(str(e).split("; ")[0].replace(tmp, "DIR"))
    ...     print(check_folder(tmp, overwrite=True) == Path(tmp))
    DIR holds another run's report (metrics.csv)
    True
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file; give a folder for the report")
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    foreign = [n for n in names if not _is_report_file(n)]
    if foreign:
        raise ReportFolderError(
            f"{out} holds files that are not a calibkit report's ({', '.join(foreign[:4])}); a report folder holds "
            "one run and nothing else: give another folder", out, names, True)
    if names and not overwrite:
        raise ReportFolderError(
            f"{out} holds another run's report ({shown}); a report folder holds one run: give another folder, or "
            "overwrite=True to replace that report", out, names, False)
    return out


def _claim(folder: str | Path, overwrite: bool) -> Path:
    """The folder, emptied of an earlier report (``overwrite``) and ready for this one."""
    out = check_folder(folder, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():  # check_folder let only an earlier report's files through
        f.unlink()
    return out

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
.conclusion {{ background: #f4f8ff; border-left: 4px solid #36c; padding: 0.6em 1em; }}
.flag {{ color: #a40; }}
</style></head><body>
<h1>{title}</h1>
{conclusion}
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
<p class="small">Each alone, for a paper: {singles}</p>
{classwise}
<h2>Confusion matrices</h2>
<p class="small">Held-out examples by true class (rows) and predicted class, the arg-max (columns).</p>
{confusion}
</body></html>
"""

def _conclusion_html(c: Conclusion) -> str:
    """The page's first section: the conclusion, the flagged rows, what each calibrator did, the warnings."""
    head = "".join(f"<p><strong>{html.escape(line)}</strong></p>" if i == 0 else f"<p>{html.escape(line)}</p>"
                   for i, line in enumerate(c.headline()))
    flags = "".join(f'<li class="flag">{FLAG} <strong>{html.escape(row)}</strong>: {html.escape("; ".join(r))}. '
                    "Not ranked.</li>" for row, r in c.flagged.items())
    did = "".join(f"<li><strong>{html.escape(n)}</strong>: {html.escape(d)}</li>" for n, d in c.did.items())
    warned = "".join(f"<li>{html.escape(w)}</li>" for w in c.warnings) or "<li>none</li>"
    return (f'<div class="conclusion"><h2>Conclusion</h2>\n{head}\n'
            + (f"<ul>{flags}</ul>\n" if flags else "")
            + (f"<p>What each calibrator did:</p><ul>{did}</ul>\n" if did else "")
            + f"<p>Warnings raised during the run:</p><ul>{warned}</ul></div>")


def _conclusion_markdown(c: Conclusion) -> str:
    parts = ["## Conclusion", "", *c.headline(), ""]
    parts += [f"- {FLAG} {row}: {'; '.join(r)}. Not ranked." for row, r in c.flagged.items()]
    if c.did:
        parts += ["", "What each calibrator did:", ""] + [f"- {n}: {d}" for n, d in c.did.items()]
    parts += ["", "Warnings raised during the run:", ""] + ([f"- {w}" for w in c.warnings] or ["- none"])
    return "\n".join(parts) + "\n\n"


def _flagged(frame: pd.DataFrame, flags: Mapping[str, list[str]], *, short: bool) -> pd.DataFrame:
    """``frame`` with a ``flag`` column: each flagged row's reasons (``short``: their first words), else ''."""
    out = frame.copy()
    out["flag"] = [(f"{FLAG} " + "; ".join(r.split(":")[0] for r in flags[i]) if short else "; ".join(flags[i]))
                   if i in flags else "" for i in out.index]
    return out


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
    ev: Evaluation | Comparison, folder: str | Path, *, title: str = "calibkit report", progress: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the report folder and return it; a :class:`~calibkit.comparison.Comparison`'s
    (a study's) is :func:`write_comparison_report`'s. A folder holding another report is
    replaced only with ``overwrite`` (:func:`check_folder`).

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
        return write_comparison_report(ev, folder, title=title, progress=progress, overwrite=overwrite)
    from .diagrams import (
        classwise_reliability_data,
        plot_classwise_reliability,
        plot_reliability,
        plot_reliability_grid,
        pyplot,
        reliability_data,
    )

    out = _claim(folder, overwrite)
    flags, said = ev.flags, conclude(ev)
    _flagged(ev.table, flags, short=False).to_csv(out / "metrics.csv", float_format="%.6g")
    ev.probabilities().to_csv(out / "probabilities.csv", index=False, float_format="%.6g")
    ev.confusion_matrices().to_csv(out / "confusion_matrix.csv", index=False)
    shown = _flagged(ev.formatted(), flags, short=True)
    (out / "metrics.md").write_text(_conclusion_markdown(said) + _markdown(shown))
    (out / "evaluation.json").write_text(json.dumps(_jsonable({**ev.info, "conclusion": said.lines(),
                                                               "warnings": said.warnings}),
                                                    indent=2, allow_nan=False) + "\n")

    plt = pyplot()
    stems = _file_stems(list(ev.probs))
    classwise = len(ev.classes) > 2
    labels = np.array(ev.classes, dtype=object)[ev.y]
    singles, per_class = [], []
    with progress_bar(1 + len(ev.probs) * (2 if classwise else 1), progress, desc="calibkit", unit="figure",
                      leave=True, dynamic_ncols=True) as bar:
        describe(bar, "drawing reliability.png")
        fig = plot_reliability_grid(ev.y, {marked(n, flags): p for n, p in ev.probs.items()},
                                    ncols=min(len(ev.probs), 4))
        fig.savefig(out / "reliability.png", dpi=110)
        plt.close(fig)
        bar.update()
        for name, p in ev.probs.items():
            fname = f"reliability_{stems[name]}.png"
            describe(bar, f"drawing {fname}")
            fig = plt.figure(figsize=(4.5, 5.5), layout="constrained")
            ax, hist_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
            plot_reliability(reliability_data(ev.y, p), ax=ax, hist_ax=hist_ax, title=marked(name, flags))
            fig.savefig(out / fname, dpi=110)
            plt.close(fig)
            bar.update()
            singles.append(f'<a href="{fname}">{html.escape(name)}</a>')
            if classwise:
                fname = f"reliability_classwise_{stems[name]}.png"
                describe(bar, f"drawing {fname}")
                data = classwise_reliability_data(labels, p, classes=ev.classes)
                fig = plot_classwise_reliability(data, ncols=min(len(ev.classes), 4),
                                                 title=f"{marked(name, flags)}: each class against the rest")
                fig.savefig(out / fname, dpi=110)
                plt.close(fig)
                bar.update()
                per_class.append(f'<h3>{html.escape(marked(name, flags))}</h3>\n'
                                 f'<img src="{fname}" alt="one-vs-rest reliability diagrams: {html.escape(name)}">')
    classwise_html = ""
    if classwise:
        classwise_html = (
            "<h2>Reliability per class (one-vs-rest)</h2>\n<p class=\"small\">For each class, its predicted "
            "probability against the share of examples that are of it.</p>\n" + "\n".join(per_class)
        )
    confusion = "\n".join(
        f'<div class="confusion"><h3>{html.escape(marked(name, flags))}</h3>\n'
        f'{ev.confusion_matrix(name).to_html(escape=True)}</div>'
        for name in ev.probs
    )
    about = _about(ev.info)
    (out / "index.html").write_text(
        _PAGE.format(
            title=html.escape(title), conclusion=_conclusion_html(said), about=_about_table(about),
            level=ev.info.get("level", 0.95),
            boot=html.escape(str(ev.info.get("bootstrap"))), seed=html.escape(str(ev.info.get("seed"))),
            notes=_metric_notes(ev.metrics),
            table=shown.to_html(escape=True), singles=" · ".join(singles), classwise=classwise_html,
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
    cmp: Comparison, folder: str | Path, *, title: str = "calibkit comparison", progress: bool | None = None,
    overwrite: bool = False,
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

    out = _claim(folder, overwrite)
    flags, said = cmp.flags, conclude(cmp)
    _flagged(cmp.table, flags, short=False).to_csv(out / "comparison.csv", float_format="%.6g")
    cmp.probabilities().to_csv(out / "probabilities.csv", index=False, float_format="%.6g")
    shown = _flagged(cmp.formatted(), flags, short=True)
    (out / "comparison.md").write_text(_conclusion_markdown(said) + _markdown(shown))
    (out / "evaluation.json").write_text(json.dumps(_jsonable({**cmp.info, "conclusion": said.lines(),
                                                               "warnings": said.warnings}),
                                                    indent=2, allow_nan=False) + "\n")

    plt = pyplot()
    with progress_bar(2, progress, desc="calibkit", unit="figure", leave=True, dynamic_ncols=True) as bar:
        describe(bar, "drawing risk_coverage.png")
        curves = {f"{marked(row, flags)} (AURC {a:.3f})": risk_coverage(cmp.y, cmp.probs[row])
                  for row, a in zip(cmp.table.index, cmp.table["aurc"])}
        fig = plt.figure(figsize=(6.5, 5), layout="constrained")  # the legend, outside, widens it
        plot_risk_coverage(curves, ax=fig.subplots())
        fig.savefig(out / "risk_coverage.png", dpi=110)
        plt.close(fig)
        bar.update()
        describe(bar, "drawing reliability.png")
        per_config = cmp.table.groupby("config", sort=False).size()
        ncols = int(per_config.iloc[0]) if per_config.nunique() == 1 and per_config.iloc[0] <= 5 else 4
        fig = plot_reliability_grid(cmp.y, {marked(n, flags): p for n, p in cmp.probs.items()},
                                    ncols=min(ncols, len(cmp.probs)))
        fig.savefig(out / "reliability.png", dpi=110)
        plt.close(fig)
        bar.update()

    def part(columns: list[str]) -> str:
        return shown[[*columns, "flag"]].to_html(escape=True)

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
            title=html.escape(title), conclusion=_conclusion_html(said), about=_about_table(about), n_eval=len(cmp.y),
            level=cmp.info.get("level", 0.95),
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
