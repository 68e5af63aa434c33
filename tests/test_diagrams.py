import sys

import numpy as np
import pytest
from scipy.stats import binomtest

from calibkit import metrics, smoothing
from calibkit.diagrams import (
    ReliabilityData,
    classwise_reliability_data,
    plot_classwise_reliability,
    plot_reliability,
    plot_reliability_grid,
    proportion_interval,
    reliability_data,
)


def sample(n=3000, k=4, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 3
    y = (z / 2 + rng.gumbel(size=(n, k))).argmax(axis=1)
    return y, np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_reliability_data_matches_the_metrics(binning):
    y, p = sample()
    data = reliability_data(y, p, bins=10, binning=binning)
    assert isinstance(data, ReliabilityData)
    assert data.counts.sum() == len(y) == data.n
    assert data.ece == pytest.approx(metrics.ece(y, p, bins=10, binning=binning), abs=1e-12)
    assert data.smooth_ece == pytest.approx(metrics.smooth_ece(y, p), abs=1e-12)
    conf, correct = p.max(axis=1), p.argmax(axis=1) == y
    bins = np.clip(np.searchsorted(data.edges, conf, side="right") - 1, 0, len(data.counts) - 1)
    if binning == "width":
        for b in np.flatnonzero(data.counts):
            assert data.accuracy[b] == pytest.approx(correct[bins == b].mean())
            assert data.confidence[b] == pytest.approx(conf[bins == b].mean())
    frame = data.to_frame()
    assert list(frame.columns) == ["lower", "upper", "count", "accuracy", "confidence", "low", "high"]
    assert len(frame) == len(data.counts)


@pytest.mark.parametrize(("method", "scipy_name"), [("wilson", "wilson"), ("clopper-pearson", "exact")])
def test_intervals_match_scipy(method, scipy_name):
    hits, counts = np.array([0, 3, 10, 25, 0]), np.array([5, 10, 10, 40, 0])
    low, high = proportion_interval(hits, counts, 0.9, method)
    for h, c, lo, hi in zip(hits, counts, low, high):
        if c == 0:
            assert np.isnan(lo) and np.isnan(hi)
            continue
        ref = binomtest(int(h), int(c)).proportion_ci(0.9, method=scipy_name)
        assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-9)


def test_empty_bins_are_nan_and_bad_settings_are_named():
    data = reliability_data([0, 1], [[0.9, 0.1], [0.05, 0.95]], bins=10)
    assert np.isnan(data.accuracy[0]) and data.counts[9] == 2
    with pytest.raises(ValueError, match="interval"):
        reliability_data([0], [[0.9, 0.1]], interval="jeffreys")


def test_plot_writes_a_real_png(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    y, p = sample(1000)
    ax = plot_reliability(y, p, title="uncalibrated")
    path = tmp_path / "reliability.png"
    ax.figure.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ax.hist_ax.get_xlabel() == "confidence (top label)"
    heights = [patch.get_height() for patch in ax.hist_ax.patches]
    assert sum(heights) == 1000  # the histogram beneath shows every example
    import matplotlib.pyplot as plt

    plt.close("all")


def test_grid_has_one_panel_per_calibrator(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, p = sample(800)
    flat = np.full_like(p, 0.25)
    fig = plot_reliability_grid(y, {"model": p, "uniform": flat, "sharper": p**2 / (p**2).sum(1, keepdims=True)},
                                ncols=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles == ["model", "uniform", "sharper"]
    fig.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 10_000
    plt.close("all")


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"calibkit\[plot\]"):
        plot_reliability([0, 1], [[0.9, 0.1], [0.2, 0.8]])
    # the data needs no matplotlib
    assert reliability_data([0, 1], [[0.9, 0.1], [0.2, 0.8]]).n == 2


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_classwise_data_is_each_class_against_the_rest(binning):
    y, p = sample(2000, k=3, seed=1)
    names = np.array(["x", "y", "z"], dtype=object)
    data = classwise_reliability_data(names[y], p, bins=10, binning=binning, classes=list(names))
    assert list(data) == ["x", "y", "z"]
    per_class = [data[c].ece for c in names]
    assert np.mean(per_class) == pytest.approx(
        metrics.ece(y, p, bins=10, binning=binning, reduction="classwise"), abs=1e-12)
    for k, c in enumerate(names):
        d = data[c]
        assert d.label == c and d.n == 2000 and d.counts.sum() == 2000
        assert d.smooth_ece == pytest.approx(smoothing.smooth_ece_at(p[:, k], (y == k).astype(float), d.sigma))
        bins = np.clip(np.searchsorted(d.edges, p[:, k], side="right") - 1, 0, len(d.counts) - 1)
        if binning == "width":
            for b in np.flatnonzero(d.counts):
                assert d.accuracy[b] == pytest.approx((y[bins == b] == k).mean())
                assert d.confidence[b] == pytest.approx(p[bins == b, k].mean())
    assert reliability_data(y, p).label is None


def test_classwise_smooth_ece_agrees_with_relplot():
    relplot = pytest.importorskip("relplot")
    y, p = sample(1500, k=4, seed=2)
    data = classwise_reliability_data(y, p)
    for k in range(4):
        assert data[k].smooth_ece == pytest.approx(relplot.smECE(p[:, k], (y == k).astype(float)), abs=1e-6)


def test_classwise_plot_has_a_panel_per_class(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, p = sample(900, k=5)
    fig = plot_classwise_reliability(classwise_reliability_data(y, p), ncols=3, title="model")
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown if ax.get_title()] == ["0", "1", "2", "3", "4"]
    assert "P(3)" in [ax.get_xlabel() for ax in shown] and "frequency of 3" in [ax.get_ylabel() for ax in shown]
    assert fig.get_suptitle() == "model"
    fig.savefig(tmp_path / "classwise.png")
    assert (tmp_path / "classwise.png").stat().st_size > 10_000
    # y with p works too; each histogram shows every example
    fig = plot_classwise_reliability(y, p)
    hists = [ax for ax in fig.axes if ax.get_visible() and ax.get_ylabel() == "count"]
    assert len(hists) == 5 and all(sum(r.get_height() for r in ax.patches) == 900 for ax in hists)
    with pytest.raises(ValueError, match="classwise_reliability_data"):
        plot_classwise_reliability([0, 1])
    plt.close("all")


# -- plots past ten rows (issue 22, item 7): a study's 16 rows, templates × models × calibrators --------------
CALIBRATORS = ["uncalibrated", "temperature", "contextual", "contextual+temperature"]
ROWS = [f"t{t} · v1 · {m} · {c}" for t in (1, 2) for m in ("gemma-3-270m", "SmolLM2-360M-Instruct")
        for c in CALIBRATORS]


def sixteen_rows(n=600):
    """Sixteen rows of probabilities on the same labels, each sharper or flatter than the last."""
    y, p = sample(n, k=3, seed=4)
    rng = np.random.default_rng(5)
    probs = {}
    for i, name in enumerate(ROWS):
        z = np.log(p) * (0.4 + 0.1 * i) + rng.normal(scale=0.3, size=p.shape)
        probs[name] = np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))
    return y, probs


def risk_coverage_plot(probs, y, ax=None):
    from calibkit.diagrams import plot_risk_coverage
    from calibkit.selective import risk_coverage

    curves = {name: risk_coverage(y, p) for name, p in probs.items()}
    return plot_risk_coverage(curves, ax=ax), curves


@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_risk_coverage_gives_sixteen_rows_sixteen_colour_and_style_pairs(plt):
    from matplotlib.colors import to_hex

    y, probs = sixteen_rows()
    ax, _ = risk_coverage_plot(probs, y)
    lines = ax.get_lines()
    assert len(lines) == 16
    assert len({(to_hex(line.get_color()), line.get_linestyle()) for line in lines}) == 16
    assert len({to_hex(line.get_color()) for line in lines}) == 16  # no colour comes round again


@pytest.mark.parametrize("layout", ["constrained", None])
def test_risk_coverage_legend_stands_outside_the_axes_and_the_figure_grows(plt, layout):
    y, probs = sixteen_rows()
    fig = plt.figure(figsize=(8, 5), layout=layout)  # as the comparison report makes it
    ax, _ = risk_coverage_plot(probs, y, ax=fig.subplots())
    fig.canvas.draw()
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert not legend.overlaps(axes)
    assert legend.x0 > axes.x1
    assert fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(legend.x1, legend.y1)
    assert fig.get_size_inches()[0] > 8
    assert axes.width > 0.5 * 8 * fig.dpi  # the curves keep most of the room they had


def test_risk_coverage_y_axis_holds_every_curve_whole(plt):
    # right and wrong by turns from the surest down: every risk is at most 0.5
    conf = np.linspace(0.95, 0.55, 100)
    p = np.stack([conf, 1 - conf], 1)
    p[1::2] = p[1::2, ::-1]
    y = np.zeros(100, int)
    ax, curves = risk_coverage_plot({name: p for name in ROWS[:3]}, y)
    assert max(c.risk.max() for c in curves.values()) == 0.5
    first_low, high = ax.get_ylim()
    assert 0.5 <= high <= 0.6 * 1.02  # no empty room above
    # rows added to the same axes whose surest answers are wrong: risk 1 at the start; the old axis stayed at 0.5
    worse = {name: p[:, ::-1] for name in ROWS[3:6]}
    ax, more = risk_coverage_plot(worse, y, ax=ax)
    assert max(c.risk.max() for c in more.values()) == 1
    low, high = ax.get_ylim()
    assert high >= 1
    assert first_low < 0 and low < 0  # stretches at risk 0 clear the frame
    assert len(ax.get_lines()) == 6 and len(ax.get_legend().get_texts()) == 6
    assert len({(str(line.get_color()), line.get_linestyle()) for line in ax.get_lines()}) == 6


def test_risk_coverage_says_which_curves_are_equal_and_shows_both(plt):
    from matplotlib.colors import to_hex

    y, probs = sixteen_rows()
    probs[ROWS[1]] = probs[ROWS[0]]  # temperature changed nothing: the same probabilities
    probs[ROWS[7]] = probs[ROWS[4]].copy()  # equal, not the same array
    ax, _ = risk_coverage_plot(probs, y)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[1] == f"{ROWS[1]}\n(same curve as {ROWS[0]})"
    assert texts[7] == f"{ROWS[7]}\n(same curve as {ROWS[4]})"
    assert [t for t in texts if "same curve" in t] == [texts[1], texts[7]]
    lines = ax.get_lines()
    for a, b in [(0, 1), (4, 7)]:
        assert np.array_equal(lines[a].get_ydata(), lines[b].get_ydata())
        assert (to_hex(lines[a].get_color()), lines[a].get_linestyle()) != (
            to_hex(lines[b].get_color()), lines[b].get_linestyle())
        assert lines[b].get_marker() not in ("None", "", None)  # markers show it over the line it equals
    assert lines[0].get_marker() in ("None", "", None)


def test_grid_titles_of_sixteen_long_row_names_do_not_collide(plt):
    y, probs = sixteen_rows(300)
    fig = plot_reliability_grid(y, probs, ncols=4)
    fig.canvas.draw()
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title().replace("\n", " ") for ax in shown] == ROWS  # wrapped after a ' · ', nothing lost
    boxes = [ax.title.get_window_extent() for ax in shown]
    assert not [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes) if i < j and a.overlaps(b)]
    assert all(fig.bbox.contains(a.x0, a.y0) and fig.bbox.contains(a.x1, a.y1) for a in boxes)
    others = [ax.get_window_extent() for ax in fig.axes if ax.get_visible()]
    for ax, box in zip(shown, boxes):
        assert not any(box.overlaps(o) for o in others)  # nor over a panel or a histogram


@pytest.mark.parametrize("case", ["sure and right", "rare class"])
def test_smoothed_curve_stays_in_zero_one(plt, case):
    rng = np.random.default_rng(6)
    if case == "sure and right":  # top-label: the kernel estimate runs past 1 at confidence 1
        conf = rng.uniform(0.9, 1.0, 500)
        data = reliability_data(np.zeros(500, int), np.stack([conf, 1 - conf], 1))
    else:  # one-vs-rest for a class almost never predicted nor true: it runs below 0 at probability 0
        y, p = sample(800, k=3, seed=7)
        p = np.c_[p, rng.uniform(0, 0.04, 800)]
        p /= p.sum(1, keepdims=True)
        data = classwise_reliability_data(y, p)[3]
    ax = plot_reliability(data)
    smooth = [line for line in ax.get_lines() if line.get_label().startswith("smoothed")]
    assert len(smooth) == 1
    shown = np.asarray(smooth[0].get_ydata(), float)
    shown = shown[np.isfinite(shown)]
    assert len(shown) > 10 and shown.min() >= 0 and shown.max() <= 1
    assert data.smooth_accuracy.min() >= 0 and data.smooth_accuracy.max() <= 1
