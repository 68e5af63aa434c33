"""calibkit.comparison: the table's numbers are the library's functions on the same held-out rows."""

from __future__ import annotations

import numpy as np
import pytest

import calibkit as ck
from calibkit import conformal, metrics, selective
from calibkit.comparison import baseline_row, compare
from calibkit.evaluation import METRICS, split
from synthetic import two_templates

pytest.importorskip("mapie")


@pytest.fixture(scope="module")
def study():
    return two_templates()


def test_one_row_per_configuration_and_calibrator(study) -> None:
    c, _, _ = study
    assert list(c.table.index) == [f"{t} · v1 · m · {k}" for t in ("t1", "t2")
                                   for k in ("uncalibrated", "temperature", "batch")]
    assert list(c.table["template"]) == ["t1"] * 3 + ["t2"] * 3
    assert list(c.table["calibrator"][:3]) == ["uncalibrated", "temperature", "batch"]
    assert c.baseline == "t2 · v1 · m · uncalibrated"
    assert c.info["n_evaluation"] == len(c.y) == 120 and c.info["baseline"] == c.baseline


def test_the_numbers_are_the_librarys_on_the_same_held_out_rows(study) -> None:
    c, scores, y = study
    labels = (y == "pos").astype(int)
    # one split for every configuration: the held-out rows and labels are the input's
    assert np.array_equal(c.y, labels[c.rows])
    uncal = metrics.to_probs(scores[("t1", "v1", "m")][c.rows], input="logprobs")
    np.testing.assert_allclose(c.probs["t1 · v1 · m · uncalibrated"], uncal)
    base = c.probs[c.baseline]
    for row, p in c.probs.items():
        t = c.table.loc[row]
        assert t["accuracy"] == pytest.approx(metrics.accuracy(c.y, p))
        assert t["nll"] == pytest.approx(metrics.nll(c.y, p))
        fn, kw = METRICS["ece"]
        b = metrics.bootstrap(fn, c.y, p, n_boot=60, seed=3, **kw)
        assert (t["ece"], t["ece_low"], t["ece_high"]) == pytest.approx((b.estimate, b.low, b.high))
        for m in ("accuracy", "nll"):
            d = metrics.paired_bootstrap(m, c.y, p, base, n_boot=60, seed=3)
            got = (t[f"diff_{m}"], t[f"diff_{m}_low"], t[f"diff_{m}_high"])
            assert got == pytest.approx((d.estimate, d.low, d.high) if row != c.baseline else (0, 0, 0))
        sets = conformal.conformal_sets(p[c.conformal_calibration], c.y[c.conformal_calibration],
                                        p[c.conformal_test], alpha=0.2)
        cov = conformal.coverage(c.y[c.conformal_test], sets)
        assert (t["coverage"], t["coverage_low"], t["coverage_high"]) == pytest.approx((cov.estimate, cov.low, cov.high))
        assert t["set_size"] == pytest.approx(conformal.mean_set_size(sets))
        assert t["aurc"] == pytest.approx(selective.aurc(c.y, p))
    # the conformal parts split the held-out rows, seeded
    cal, test = split(c.y, 0.5, 3)
    assert np.array_equal(cal, c.conformal_calibration) and np.array_equal(test, c.conformal_test)
    # the better template is better, and the paired interval says so
    assert c.table.loc["t1 · v1 · m · uncalibrated", "diff_accuracy_low"] > 0


def test_each_configuration_can_have_its_own_calibrators() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=100)
    X = {"a": rng.normal(size=(100, 2)), "b": rng.normal(size=(100, 2))}
    per = {"a": {"temperature": ck.TemperatureScaling()}, "b": {"vector": ck.VectorScaling()}}
    c = compare(X, y, per, classes=[0, 1], n_boot=5, metrics=["accuracy"], alpha=None, progress=False)
    assert list(c.table.index) == ["a · uncalibrated", "a · temperature", "b · uncalibrated", "b · vector"]
    assert "coverage" not in c.table.columns and "coverage" not in c.formatted().columns
    made = []
    c = compare(X, y, lambda cfg: made.append(cfg) or {"t": ck.TemperatureScaling()}, classes=[0, 1], n_boot=5,
                metrics=["accuracy"], alpha=None, progress=False)
    assert made == ["a", "b"] and len(c.table) == 4


def test_the_baseline_can_be_named_by_its_parts() -> None:
    names = {("t1", "v1", "m"): ["temperature"], ("t2", "v1", "m"): ["temperature"]}
    assert baseline_row(None, names) == "t1 · v1 · m · uncalibrated"
    assert baseline_row("t2", names) == "t2 · v1 · m · uncalibrated"
    assert baseline_row("t2 · temperature", names) == "t2 · v1 · m · temperature"
    assert baseline_row(("t1", "v1", "m"), names) == "t1 · v1 · m · uncalibrated"
    assert baseline_row((("t1", "v1", "m"), "temperature"), names) == "t1 · v1 · m · temperature"
    with pytest.raises(ValueError, match="names several rows"):
        baseline_row("v1", names)
    with pytest.raises(ValueError, match=r"baseline='t3' names no row.*'t1 · v1 · m · uncalibrated'"):
        baseline_row("t3", names)


@pytest.mark.parametrize("kwargs, words", [
    ({"baseline": "nope"}, ["baseline='nope' names no row", "'a · uncalibrated'"]),
    ({"scores": {"a": np.zeros((50, 2)), "b": np.zeros((40, 2))}}, ["scores['b']", "(40, 2)", "same 50 examples"]),
    ({"scores": {"a": np.zeros((50, 2)), "b": np.zeros((50, 3))}}, ["scores['b']", "2 classes"]),
    ({"scores": {}}, ["scores must map"]),
    ({"scores": {("t1", "m"): np.zeros((50, 2))}}, ["factors="]),
    ({"scores": {"a": np.zeros((50, 2)), ("t1", "m"): np.zeros((50, 2))}}, ["all be strings or all tuples"]),
    ({"calibrators": {"b": {"t": ck.TemperatureScaling()}}}, ["has none for ['a']"]),
    ({"calibrators": {"uncalibrated": ck.TemperatureScaling()}}, ["'uncalibrated' is the model's own scores"]),
    ({"alpha": 1.5}, ["alpha must be in (0, 1)"]),
    ({"metrics": ["auroc"]}, ["metrics= has unknown name(s) 'auroc'"]),
])
def test_bad_input_is_a_clear_error(kwargs, words) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=50)
    args = {"scores": {"a": rng.normal(size=(50, 2)), "b": rng.normal(size=(50, 2))}, "calibrators": {},
            **kwargs}
    with pytest.raises(ValueError) as e:
        compare(args.pop("scores"), y, args.pop("calibrators"), classes=[0, 1], n_boot=5, progress=False, **args)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_label_scores_of_other_classes_are_refused() -> None:
    s = ck.LabelScores.from_logprobs(np.log(np.full((10, 2), 0.5)), ["b", "a"])
    with pytest.raises(ValueError, match=r"classes \['b', 'a'\], not \['a', 'b'\]"):
        compare({"x": s}, ["a", "b"] * 5, {}, classes=["a", "b"], n_boot=5, progress=False)
