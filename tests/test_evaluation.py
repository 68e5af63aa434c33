"""calibkit.evaluation: the split, the fits on the calibration part and the metric table of the held-out part."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic import overconfident

import calibkit as ck
from calibkit import metrics
from calibkit.evaluation import METRICS, evaluate, metric_names, split
from calibkit.names import METRIC_NAMES


def test_metrics_are_the_shared_names_in_their_order() -> None:
    assert tuple(METRICS) == METRIC_NAMES
    for name, (fn, _) in METRICS.items():
        assert fn is getattr(metrics, name)
    assert METRICS["ece"][1] == {"bins": 15, "binning": "width", "reduction": "top-label", "norm": "l1"}
    assert metric_names(None) == list(METRIC_NAMES)


def test_evaluate_measures_every_calibrator_on_the_held_out_part() -> None:
    X, y = overconfident()
    ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=["a", "b", "c"], n_boot=100, seed=1)
    assert list(ev.table.index) == ["uncalibrated", "temperature"]
    assert ev.info["n_calibration"] == 300 and ev.info["n_evaluation"] == 300 and len(ev.y) == 300
    for m in METRICS:
        assert (ev.table[f"{m}_low"] <= ev.table[m]).all() and (ev.table[m] <= ev.table[f"{m}_high"]).all()
    # overconfident logits: temperature scaling must improve NLL and ECE on held-out data
    assert ev.table.loc["temperature", "nll"] < ev.table.loc["uncalibrated", "nll"]
    assert ev.table.loc["temperature", "ece"] < ev.table.loc["uncalibrated", "ece"]
    # the table's numbers are the metrics of the stored probabilities
    p = ev.probs["temperature"]
    assert ev.table.loc["temperature", "accuracy"] == pytest.approx(ck.metrics.accuracy(ev.y, p))
    assert ev.table.loc["temperature", "ece"] == pytest.approx(ck.metrics.ece(ev.y, p, bins=15))
    again = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=["a", "b", "c"], n_boot=100, seed=1)
    pd.testing.assert_frame_equal(ev.table, again.table)  # seeded


def test_split_is_seeded_and_stratified_where_it_can_be() -> None:
    labels = np.array([0] * 40 + [1] * 20)
    a, b = split(labels, 0.5, seed=4)
    assert sorted(np.r_[a, b].tolist()) == list(range(60)) and np.bincount(labels[a]).tolist() == [20, 10]
    assert [x.tolist() for x in split(labels, 0.5, seed=4)] == [a.tolist(), b.tolist()]
    # a class with one example cannot be stratified: the split is plain
    assert len(split(np.array([0, 0, 0, 1]), 0.5, seed=0)[0]) == 2


def test_bad_input_names_the_fix() -> None:
    X, y = overconfident(50)
    with pytest.raises(ValueError, match="not among the classes"):
        evaluate(X, y, {}, classes=["a", "b"])
    with pytest.raises(ValueError, match="calibration_fraction"):
        evaluate(X, y, {}, classes=["a", "b", "c"], calibration_fraction=1.5)
    with pytest.raises(ValueError, match="name your calibrator otherwise"):
        evaluate(X, y, {"uncalibrated": ck.TemperatureScaling()}, classes=["a", "b", "c"])


def test_info_cannot_override_what_was_measured() -> None:
    X, y = overconfident(60)
    ev = evaluate(X, y, {}, classes=["a", "b", "c"], n_boot=10, info={"data": "d", "n": 3})
    assert ev.info["n"] == 60 and ev.info["data"] == "d" and list(ev.info)[0] == "data"


def test_predictions_are_the_argmax_of_the_probabilities() -> None:
    X, y = overconfident(200)
    ev = evaluate(X, y, {"temperature": ck.TemperatureScaling(), "isotonic": ck.IsotonicCalibration()},
                  classes=["a", "b", "c"], n_boot=10, metrics=["accuracy"])
    probs = ev.probabilities()
    for name in ("uncalibrated", "temperature", "isotonic"):
        cols = [f"proba[{c}]@{name}" for c in "abc"]
        expected = np.array(list("abc"))[probs[cols].to_numpy().argmax(axis=1)]
        assert (probs[f"pred@{name}"].to_numpy() == expected).all()
        assert list(probs.columns).index(f"pred@{name}") == list(probs.columns).index(cols[-1]) + 1
        # the table's accuracy is the share of predictions that are right
        assert ev.table.loc[name, "accuracy"] == pytest.approx((probs[f"pred@{name}"] == probs["label"]).mean())


def test_confusion_matrix_counts() -> None:
    # three classes with hand-made scores: the uncalibrated predictions are known row by row
    truth = ["a", "a", "b", "b", "c", "c"] * 10
    guess = ["a", "b", "b", "b", "a", "c"] * 10
    X = np.log(np.where(np.array(guess)[:, None] == np.array(["a", "b", "c"]), 0.8, 0.1))
    ev = evaluate(X, truth, {}, classes=["a", "b", "c"], n_boot=10, metrics=["accuracy"])
    held = pd.DataFrame({"true": [truth[i] for i in ev.rows], "pred": [guess[i] for i in ev.rows]})
    expected = pd.crosstab(held["true"], held["pred"]).reindex(index=list("abc"), columns=list("abc"), fill_value=0)
    cm = ev.confusion_matrix("uncalibrated")
    assert (cm.to_numpy() == expected.to_numpy()).all() and cm.to_numpy().sum() == len(ev.rows)
    assert list(cm.index) == list("abc") and list(cm.columns) == list("abc")
    assert cm.loc["c", "a"] == (held.eq({"true": "c", "pred": "a"}).all(axis=1)).sum() > 0
    every = ev.confusion_matrices()
    assert list(every.columns) == ["calibrator", "label", "predicted a", "predicted b", "predicted c"]
    assert (every[["predicted a", "predicted b", "predicted c"]].to_numpy() == expected.to_numpy()).all()
    with pytest.raises(ValueError, match="this evaluation has"):
        ev.confusion_matrix("platt")


def test_metrics_subset_computes_only_those(monkeypatch) -> None:
    from calibkit import evaluation

    bootstrapped = []
    real = evaluation.M.bootstrap
    monkeypatch.setattr(evaluation.M, "bootstrap", lambda fn, *a, **kw: bootstrapped.append(fn) or real(fn, *a, **kw))
    X, y = overconfident(120)
    ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=["a", "b", "c"], n_boot=10,
                  metrics=["nll", "ece", "nll"])
    assert list(ev.table.columns) == ["nll", "nll_low", "nll_high", "ece", "ece_low", "ece_high"]
    assert list(ev.formatted().columns) == ["nll", "ece"] and ev.metrics == ["nll", "ece"]
    assert set(bootstrapped) == {METRICS["nll"][0], METRICS["ece"][0]} and len(bootstrapped) == 4


def test_bad_metrics_names_the_choices() -> None:
    X, y = overconfident(60)
    with pytest.raises(ValueError, match=r"metrics= has unknown name\(s\) 'ECE', 'mce'; choose from: accuracy, nll"):
        evaluate(X, y, {}, classes=["a", "b", "c"], metrics=["ECE", "nll", "mce"])
    with pytest.raises(ValueError, match=r"metrics= is empty; name at least one of: accuracy, nll, brier"):
        evaluate(X, y, {}, classes=["a", "b", "c"], metrics=[])
    assert list(evaluate(X, y, {}, classes=["a", "b", "c"], n_boot=5, metrics="brier").formatted().columns) == ["brier"]


def test_progress_bar_on_request_only(capsys) -> None:
    X, y = overconfident(60)
    args = (X, y, {"temperature": ck.TemperatureScaling()})
    evaluate(*args, classes=["a", "b", "c"], n_boot=20, metrics=["ece"], progress=True)
    err = capsys.readouterr().err
    assert "bootstrap ece @ temperature" in err and "40/40" in err
    evaluate(*args, classes=["a", "b", "c"], n_boot=20, metrics=["ece"], progress=False)
    evaluate(*args, classes=["a", "b", "c"], n_boot=20, metrics=["ece"])  # None: quick work shows nothing
    assert capsys.readouterr().err == ""
