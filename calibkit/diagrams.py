"""Reliability diagrams: the data (:func:`reliability_data`) apart from the drawing.

Top-label diagrams (:func:`reliability_data`, :func:`plot_reliability`, one
panel per calibrator with :func:`plot_reliability_grid`) and, for multi-class
tasks, one-vs-rest diagrams per class (:func:`classwise_reliability_data`,
:func:`plot_classwise_reliability`).

The data is a plain dataclass (``.to_frame()`` gives a pandas DataFrame of the
bins) and needs numpy only; drawing needs matplotlib, the ``plot`` extra
(``pip install 'calibkit[plot]'``), imported only when a plot is made.

Examples
--------
>>> import numpy as np
>>> from calibkit.diagrams import reliability_data
>>> rng = np.random.default_rng(0)
>>> q = rng.uniform(0.5, 1.0, 1000)
>>> y = (rng.uniform(size=1000) > q).astype(int)   # calibrated: P(y = 0) = q
>>> data = reliability_data(y, np.stack([q, 1 - q], 1), bins=5)
>>> data.counts.sum(), round(data.ece, 2)
(np.int64(1000), 0.02)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from .metrics import binned_stats, check_labels_probs, top_label_hits
from .smoothing import smooth_ece_at, smooth_ece_bandwidth, smooth_residual

__all__ = [
    "ReliabilityData", "reliability_data", "classwise_reliability_data", "proportion_interval", "plot_reliability",
    "plot_reliability_grid", "plot_classwise_reliability", "plot_risk_coverage", "equal_curves", "row_styles",
    "wrap_title", "pyplot",
]

INTERVALS = ("wilson", "clopper-pearson")


@dataclass(frozen=True)
class ReliabilityData:
    """Everything a reliability diagram shows: top-label, or one class against the rest.

    Per bin (arrays of length B; accuracy, confidence and the interval are NaN
    for an empty bin): ``edges`` (B + 1), ``counts``, ``accuracy`` (share of
    correct arg-max predictions), ``confidence`` (mean top probability),
    ``low``/``high`` (the ``level`` interval of the accuracy, by ``interval``).
    The smooth curve: accuracy ``smooth_accuracy`` (clipped to [0, 1]) and
    density ``smooth_density`` at ``smooth_x``, the kernel smoothing behind
    smooth ECE with bandwidth ``sigma``. ``label`` is None for a top-label diagram; for a
    one-vs-rest diagram it is the class, the confidence is that class's
    probability and the accuracy the share of examples of that class.
    """

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    low: np.ndarray
    high: np.ndarray
    ece: float
    smooth_ece: float
    sigma: float
    n: int
    binning: str
    interval: str
    level: float
    smooth_x: np.ndarray = field(repr=False)
    smooth_accuracy: np.ndarray = field(repr=False)
    smooth_density: np.ndarray = field(repr=False)
    label: Hashable | None = None

    def to_frame(self):
        """The bins as a pandas DataFrame, one row per bin."""
        import pandas as pd

        return pd.DataFrame(
            {
                "lower": self.edges[:-1],
                "upper": self.edges[1:],
                "count": self.counts,
                "accuracy": self.accuracy,
                "confidence": self.confidence,
                "low": self.low,
                "high": self.high,
            }
        )


def proportion_interval(hits: np.ndarray, counts: np.ndarray, level: float = 0.95, method: str = "wilson"):
    """Vectorised binomial interval for ``hits`` successes out of ``counts``; NaN where counts is 0.

    Wilson's score interval or the exact Clopper–Pearson one. (scipy's
    ``binomtest(...).proportion_ci`` gives the same numbers one bin at a time.)
    """
    if method not in INTERVALS:
        raise ValueError(f"interval={method!r}; use 'wilson' or 'clopper-pearson'.")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}; give the coverage in (0, 1), e.g. 0.95.")
    hits, counts = np.asarray(hits, float), np.asarray(counts, float)
    empty = counts == 0
    n = np.where(empty, 1.0, counts)
    alpha = 1 - level
    if method == "wilson":
        z = stats.norm.ppf(1 - alpha / 2)
        phat = hits / n
        centre = (phat + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z / (1 + z**2 / n) * np.sqrt(phat * (1 - phat) / n + z**2 / (4 * n**2))
        low, high = centre - half, centre + half
    else:
        with np.errstate(invalid="ignore"):
            low = np.where(hits > 0, stats.beta.ppf(alpha / 2, hits, n - hits + 1), 0.0)
            high = np.where(hits < n, stats.beta.ppf(1 - alpha / 2, hits + 1, n - hits), 1.0)
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def reliability_data(
    y: Any,
    p: Any,
    *,
    bins: int = 15,
    binning: str = "width",
    input: str = "probs",
    classes: Any = None,
    interval: str = "wilson",
    level: float = 0.95,
    sigma: float | None = None,
) -> ReliabilityData:
    """Bin the top-label confidences and compute what the diagram shows.

    ``y``, ``p``, ``input``, ``classes``, ``bins`` and ``binning`` are as in
    :func:`calibkit.metrics.ece` (whose value is ``.ece``); ``interval`` is
    "wilson" or "clopper-pearson" at ``level``; ``sigma`` fixes the smoothing
    bandwidth (default: smooth ECE's own choice).
    """
    y, p = check_labels_probs(y, p, input, classes)
    conf, hit = top_label_hits(y, p)
    return _reliability(conf, hit, bins=bins, binning=binning, interval=interval, level=level, sigma=sigma)


def classwise_reliability_data(
    y: Any,
    p: Any,
    *,
    bins: int = 15,
    binning: str = "width",
    input: str = "probs",
    classes: Any = None,
    interval: str = "wilson",
    level: float = 0.95,
) -> dict[Hashable, ReliabilityData]:
    """One-vs-rest reliability data of each class: its probability against whether the example is of it.

    Keywords as in :func:`reliability_data`. Returns a dict from each class
    (``classes``, or the column indices) to its :class:`ReliabilityData`;
    their ``.ece`` values average to ``calibkit.metrics.ece(...,
    reduction="classwise")``. Each class gets its own smoothing bandwidth.

    >>> rng = np.random.default_rng(0)
    >>> p = rng.dirichlet([1, 1, 1], 600)
    >>> y = np.array([rng.choice(["a", "b", "c"], p=row) for row in p])   # calibrated for every class
    >>> data = classwise_reliability_data(y, p, bins=5, classes=["a", "b", "c"])
    >>> list(data), data["b"].label, all(d.ece < 0.1 for d in data.values())
    (['a', 'b', 'c'], 'b', True)
    """
    y, p = check_labels_probs(y, p, input, classes)
    labels = list(range(p.shape[1])) if classes is None else list(classes)
    return {
        label: _reliability(p[:, k], (y == k).astype(np.float64), bins=bins, binning=binning, interval=interval,
                            level=level, sigma=None, label=label)
        for k, label in enumerate(labels)
    }


def _reliability(
    conf: np.ndarray,
    hit: np.ndarray,
    *,
    bins: int,
    binning: str,
    interval: str,
    level: float,
    sigma: float | None,
    label: Hashable | None = None,
) -> ReliabilityData:
    count, sum_conf, sum_hit, edges = binned_stats(conf[:, None], hit[:, None], bins, binning)
    edges = edges[0]
    b = len(edges) - 1
    count, sum_conf, sum_hit = count[0, :b], sum_conf[0, :b], sum_hit[0, :b]
    safe = np.where(count > 0, count, 1.0)
    accuracy = np.where(count > 0, sum_hit / safe, np.nan)
    confidence = np.where(count > 0, sum_conf / safe, np.nan)
    low, high = proportion_interval(sum_hit, count, level, interval)
    s = smooth_ece_bandwidth(conf, hit) if sigma is None else float(sigma)
    t, resid, density = smooth_residual(conf, hit, s)
    return ReliabilityData(
        edges=edges,
        counts=count.astype(np.int64),
        accuracy=accuracy,
        confidence=confidence,
        low=low,
        high=high,
        ece=float(np.abs(sum_hit - sum_conf).sum() / len(conf)),
        smooth_ece=smooth_ece_at(conf, hit, s),
        sigma=s,
        n=len(conf),
        binning=binning,
        interval=interval,
        level=level,
        smooth_x=t,
        # the kernel estimate can leave [0, 1] near the ends and where data is sparse; an accuracy cannot
        smooth_accuracy=np.clip(t - resid, 0.0, 1.0),
        smooth_density=density,
        label=label,
    )


def pyplot() -> Any:
    """matplotlib.pyplot, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "drawing reliability diagrams needs matplotlib: pip install 'calibkit[plot]'"
        ) from exc
    return plt


def plot_reliability(
    data: ReliabilityData | Any,
    p: Any = None,
    *,
    ax: Any = None,
    hist_ax: Any = None,
    title: str | None = None,
    smooth: bool = True,
    **kwargs: Any,
):
    """Draw a reliability diagram with the confidence histogram beneath it.

    ``data`` is a :class:`ReliabilityData`, or labels ``y`` with ``p`` (and
    any keyword of :func:`reliability_data`). With no ``ax`` a new figure
    holds both panels; with ``ax`` the histogram goes into ``hist_ax``, or
    into a strip split off below ``ax``. Returns the diagram's Axes (the
    histogram's is ``ax.hist_ax``). The smoothed curve is drawn only where
    the confidences have some density (it means nothing elsewhere).

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> ax = plot_reliability([0, 1, 1], [[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]], bins=5)
    >>> ax.get_ylabel(), ax.hist_ax.get_xlabel()
    ('accuracy', 'confidence (top label)')
    """
    plt = pyplot()
    if not isinstance(data, ReliabilityData):
        if p is None:
            raise ValueError("pass a ReliabilityData, or labels y and probabilities p.")
        data = reliability_data(data, p, **kwargs)
    if ax is None:
        fig = plt.figure(figsize=(4.6, 5.4), layout="constrained")
        ax, hist_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    elif hist_ax is None:
        from mpl_toolkits.axes_grid1 import make_axes_locatable

        hist_ax = make_axes_locatable(ax).append_axes("bottom", size="30%", pad=0.1, sharex=ax)

    top = data.label is None
    lower, width = data.edges[:-1], np.diff(data.edges)
    filled = data.counts > 0
    acc, low, high = data.accuracy[filled], data.low[filled], data.high[filled]
    ax.plot([0, 1], [0, 1], ls="--", color="0.55", lw=1, label="perfect calibration")
    ax.bar(lower[filled], acc, width=width[filled], align="edge", color="#9ecae1",
           edgecolor="#3182bd", lw=0.6, label="accuracy per bin" if top else "frequency per bin")
    # max(.., 0): rounding can put an interval end a hair past the bin's accuracy
    yerr = [np.maximum(acc - low, 0), np.maximum(high - acc, 0)]
    ax.errorbar(data.confidence[filled], acc, yerr=yerr, fmt="o", ms=3.5,
                color="#08519c", elinewidth=1, capsize=2,
                label=f"mean {'confidence' if top else 'probability'}, {data.level:.0%} {data.interval} CI")
    if smooth:
        dense = data.smooth_density >= 0.02 * data.smooth_density.max()
        ax.plot(data.smooth_x, np.where(dense, data.smooth_accuracy, np.nan), color="#e6550d", lw=1.8,
                label=f"smoothed (σ={data.sigma:.3g})")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy" if top else f"frequency of {data.label}")
    ax.tick_params(labelbottom=False)
    ax.text(0.03, 0.97, f"ECE {data.ece:.3f}\nsmECE {data.smooth_ece:.3f}\nn = {data.n}",
            transform=ax.transAxes, va="top", ha="left", fontsize=8.5,
            bbox={"boxstyle": "round", "fc": "white", "ec": "0.8"})
    ax.legend(loc="lower right", fontsize=7, framealpha=0.85)
    if title:
        ax.set_title(title)

    hist_ax.bar(lower, data.counts, width=width, align="edge", color="0.6", edgecolor="white", lw=0.5)
    hist_ax.set(xlim=(0, 1), xlabel="confidence (top label)" if top else f"P({data.label})", ylabel="count")
    ax.hist_ax = hist_ax
    return ax


def plot_reliability_grid(
    y: Any,
    probs: Mapping[str, Any],
    *,
    ncols: int | None = None,
    **kwargs: Any,
):
    """Reliability diagrams of several calibrators side by side, one panel each.

    ``probs`` maps a name (e.g. "uncalibrated", "temperature") to that
    calibrator's n×K probabilities on the same examples ``y``; keywords go to
    :func:`reliability_data`. Returns the matplotlib Figure.
    """
    if not probs:
        raise ValueError("probs is empty; map each calibrator's name to its probabilities.")
    return _panel_grid({name: reliability_data(y, p, **kwargs) for name, p in probs.items()}, ncols)


def plot_classwise_reliability(
    data: Mapping[Hashable, ReliabilityData] | Any,
    p: Any = None,
    *,
    ncols: int | None = None,
    title: str | None = None,
    **kwargs: Any,
):
    """One-vs-rest reliability diagrams, one panel per class; returns the matplotlib Figure.

    ``data`` is what :func:`classwise_reliability_data` returns, or labels
    ``y`` with ``p`` (and any keyword of that function). ``title`` goes above
    all panels.

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> fig = plot_classwise_reliability(["a", "b", "c", "c"], np.full((4, 3), 1 / 3), classes=["a", "b", "c"])
    >>> [ax.get_title() for ax in fig.axes if ax.get_title()]
    ['a', 'b', 'c']
    """
    if not isinstance(data, Mapping):
        if p is None:
            raise ValueError("pass classwise_reliability_data(...), or labels y and probabilities p.")
        data = classwise_reliability_data(data, p, **kwargs)
    if not data:
        raise ValueError("data is empty; pass one ReliabilityData per class.")
    fig = _panel_grid({str(label): d for label, d in data.items()}, ncols)
    if title:
        fig.suptitle(title)
    return fig


def plot_risk_coverage(curves: Mapping[str, Any], *, ax: Any = None, title: str | None = None):
    """Risk-coverage curves, one step line per entry; returns the Axes.

    ``curves`` maps a name to what :func:`calibkit.selective.risk_coverage` returns (the
    data; this only draws it): the error rate among the accepted examples against the
    share accepted, the surest first. Lower is better; the area under each is its AURC.

    Made to stay readable with many rows: each curve has its own colour and line
    style (:func:`row_styles`); the legend stands right of the axes and the figure
    grows by its size (the axes keep theirs); a curve equal to an earlier one (e.g.
    a calibrator that keeps the ranking of the confidences) is drawn with markers,
    so it does not hide under the other, and its legend entry names that one. The
    y-axis runs from 0 to the highest risk of any curve on the axes (the first,
    noisy steps at small coverage included), rounded up to a tenth: no curve is
    cut, 1 is shown when a curve comes near it, and the curves keep the height
    to be told apart when all risks are low. Drawn again on the same ``ax``, the
    new curves take the next styles and the range and legend cover all of them.

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from calibkit.selective import risk_coverage
    >>> ax = plot_risk_coverage({"a": risk_coverage([0, 1, 1], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])})
    >>> ax.get_xlabel(), [t.get_text() for t in ax.get_legend().get_texts()]
    ('coverage (share of examples answered)', ['a'])
    >>> c = risk_coverage([0, 1], [[0.9, 0.1], [0.4, 0.6]])
    >>> ax = plot_risk_coverage({"x": c, "y": c})
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['x', 'y\\n(same curve as x)']
    """
    if not curves:
        raise ValueError("curves is empty; map each name to selective.risk_coverage(y, p).")
    plt = pyplot()
    if ax is None:
        fig = plt.figure(figsize=(6.4, 4.4), layout="constrained")
        ax = fig.subplots()
    same = equal_curves(curves)
    repeats = 0
    drawn = len(ax.get_lines())
    for (name, c), style in zip(curves.items(), row_styles(drawn + len(curves))[drawn:]):
        label, marks = name, {}
        if name in same:
            label = f"{name}\n(same curve as {same[name]})"
            # markers at staggered places along the line show it above the equal one it covers
            marks = {"marker": _REPEAT_MARKERS[repeats % len(_REPEAT_MARKERS)], "ms": 4.5, "mfc": "none",
                     "markevery": (0.02 + 0.023 * (repeats % 4), 0.1)}
            repeats += 1
        # a step curve: the risk at coverage c holds from the previous point's coverage up to c
        ax.step(np.r_[0.0, c.coverage], np.r_[c.risk[:1], c.risk], where="pre", lw=1.4, label=label,
                **style, **marks)
    top = min(1.0, max(0.1, np.ceil(ax.dataLim.ymax * 10 - 1e-9) / 10))
    # a little past 0 and the top, so stretches at risk 0 or at the top do not hide under the frame
    ax.set(xlim=(0, 1), ylim=(-0.02 * top, 1.02 * top), xlabel="coverage (share of examples answered)",
           ylabel="risk (error rate among the answered)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    _legend_outside(ax)
    return ax


def equal_curves(curves: Mapping[str, Any]) -> dict[str, str]:
    """Each name whose risk-coverage curve equals an earlier one's, mapped to the first name with it.

    Equal means the same coverages and risks, as two rows with the same
    probabilities give (or, on two classes, any calibrator that keeps the order
    of the confidences); such curves would draw on top of each other.

    >>> from calibkit.selective import risk_coverage
    >>> y, p = [0, 1, 1], np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> equal_curves({"a": risk_coverage(y, p), "b": risk_coverage(y, p[:, ::-1]), "c": risk_coverage(y, p)})
    {'c': 'a'}
    """
    firsts: list[tuple[str, Any]] = []
    same: dict[str, str] = {}
    for name, c in curves.items():
        for first, f in firsts:
            if np.array_equal(f.coverage, c.coverage) and np.array_equal(f.risk, c.risk):
                same[name] = first
                break
        else:
            firsts.append((name, c))
    return same


LINE_STYLES = ("-", "--", "-.", ":")
_REPEAT_MARKERS = ("o", "s", "^", "D", "v", "P")


def row_styles(n: int) -> list[dict[str, Any]]:
    """A colour and a line style for each of ``n`` curves; no two of the first 80 share both.

    Colours from matplotlib's 20-colour qualitative map tab20, its ten dark
    shades first (tab10's colours, for the first ten), then the light ones;
    line styles (:data:`LINE_STYLES`) in turn, so neighbouring rows differ in
    both, and the 21st curve's style differs from the first's.

    >>> styles = row_styles(16)
    >>> len({(s["color"], s["linestyle"]) for s in styles}), len({s["color"] for s in styles})
    (16, 16)
    >>> [s["linestyle"] for s in styles[:5]]
    ['-', '--', '-.', ':', '-']
    """
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    colours = tab20[0::2] + tab20[1::2]
    return [{"color": colours[i % 20], "linestyle": LINE_STYLES[(i + i // 20) % len(LINE_STYLES)]}
            for i in range(n)]


def _legend_outside(ax: Any, pad: float = 0.15) -> Any:
    """Put ``ax``'s legend right of it, in as many columns as its height needs, and grow the figure by its size.

    The axes keep their size in inches: under a layout engine the engine
    places them again; without one, every axes of the figure is moved so that
    it keeps its place and size. Called again for the same axes, the figure
    grows only by what the new legend needs beyond the room made before.
    """
    fig = ax.figure
    n = len(ax.get_legend_handles_labels()[1])
    fig.draw_without_rendering()  # lays the figure out, so the axes' size is the one it is drawn at
    renderer = fig.canvas.get_renderer()
    axes_height = ax.get_window_extent(renderer).height
    ncols = 1
    while True:
        legend = ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                           framealpha=0.85, ncols=ncols)
        box = legend.get_window_extent(renderer)
        if box.height <= axes_height or ncols >= n:
            break
        ncols += 1
    width, height = fig.get_size_inches()
    made_w, made_h = getattr(ax, "_calibkit_legend_room", (0.0, 0.0))
    need_w, need_h = box.width / fig.dpi + pad, max(0.0, (box.height - axes_height) / fig.dpi)
    ax._calibkit_legend_room = (max(made_w, need_w), max(made_h, need_h))
    extra_w, extra_h = max(0.0, need_w - made_w), max(0.0, need_h - made_h)
    if fig.get_layout_engine() is None:
        # figure-fraction positions: rescale them so every axes keeps its inches, room opening right and below
        sx, sy = width / (width + extra_w), height / (height + extra_h)
        for a in fig.axes:
            x0, y0, w, h = a.get_position().bounds
            a.set_position([x0 * sx, 1 - (1 - y0) * sy, w * sx, h * sy])
    fig.set_size_inches(width + extra_w, height + extra_h)
    return legend


def wrap_title(name: str, width: int = 40) -> str:
    """``name`` over lines of at most ``width`` characters, broken after a ' · ' where it can be.

    A study's row names join template, verbalizer, model and calibrator with
    ' · '; a part longer than a line is broken by :func:`textwrap.wrap`.

    >>> print(wrap_title("t1 · v1 · gemma-3-270m · contextual+temperature", 24))
    t1 · v1 · gemma-3-270m ·
    contextual+temperature
    >>> wrap_title("uncalibrated")
    'uncalibrated'
    """
    import textwrap

    lines: list[str] = []
    for part in name.split(" · "):
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " · " + part
            continue
        if lines:
            lines[-1] += " ·"
        lines.extend(textwrap.wrap(part, width) or [part])
    return "\n".join(lines)


def _panel_grid(panels: Mapping[str, ReliabilityData], ncols: int | None):
    """A figure with one reliability diagram (and histogram beneath) per entry, ``ncols`` a row."""
    plt = pyplot()
    ncols = min(ncols or len(panels), len(panels))
    nrows = -(-len(panels) // ncols)
    fig = plt.figure(figsize=(3.9 * ncols, 4.9 * nrows), layout="constrained")
    axes = fig.subplots(2 * nrows, ncols, squeeze=False, sharex=True, sharey="row",
                        height_ratios=[3, 1] * nrows)
    cells = [(axes[2 * r, c], axes[2 * r + 1, c]) for r in range(nrows) for c in range(ncols)]
    for (ax, hist_ax), (name, data) in zip(cells, panels.items()):
        plot_reliability(data, ax=ax, hist_ax=hist_ax)
        # wrapped and smaller than a lone diagram's, so long row names stay over their own panel
        ax.set_title(wrap_title(name), fontsize=9)
    for ax, hist_ax in cells[len(panels):]:
        ax.set_visible(False)
        hist_ax.set_visible(False)
    return fig
