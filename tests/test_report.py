"""Evaluating calibrators on held-out data and writing the report folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import calibkit as ck
from calibkit.report import METRICS, evaluate, write_report


def _synthetic(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * 2.5
    p = np.exp(logits / 2.5) / np.exp(logits / 2.5).sum(axis=1, keepdims=True)  # true T = 2.5
    y = np.array([rng.choice(3, p=row) for row in p])
    return logits, np.array(["a", "b", "c"], dtype=object)[y]


def test_evaluate_measures_every_calibrator_on_the_held_out_part() -> None:
    X, y = _synthetic()
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


def test_bad_input_names_the_fix() -> None:
    X, y = _synthetic(50)
    with pytest.raises(ValueError, match="not among the classes"):
        evaluate(X, y, {}, classes=["a", "b"])
    with pytest.raises(ValueError, match="calibration_fraction"):
        evaluate(X, y, {}, classes=["a", "b", "c"], calibration_fraction=1.5)
    with pytest.raises(ValueError, match="name your calibrator otherwise"):
        evaluate(X, y, {"uncalibrated": ck.TemperatureScaling()}, classes=["a", "b", "c"])


def test_write_report_folder(tmp_path) -> None:
    X, y = _synthetic(200)
    ev = evaluate(X, y, {"temperature": ck.TemperatureScaling(), "isotonic": ck.IsotonicCalibration()},
                  classes=["a", "b", "c"], n_boot=50)
    out = write_report(ev, tmp_path / "r", title="synthetic")
    names = {p.name for p in out.iterdir()}
    assert {"index.html", "metrics.csv", "metrics.md", "probabilities.csv", "evaluation.json", "reliability.png",
            "reliability_temperature.png", "reliability_isotonic.png", "reliability_uncalibrated.png"} <= names
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    page = (out / "index.html").read_text()
    assert "synthetic" in page and 'src="reliability.png"' in page and "temperature" in page
    table = pd.read_csv(out / "metrics.csv", index_col=0)
    assert list(table.index) == ["uncalibrated", "temperature", "isotonic"]
    probs = pd.read_csv(out / "probabilities.csv")
    assert len(probs) == 100 and "proba[a]@temperature" in probs.columns
    assert "| temperature |" in (out / "metrics.md").read_text()


# --- what the report shows besides the metrics ----------------------------------------------

INFO = {
    "data": "synthetic",
    "model": "toy-model",
    "method": "auto",
    "template": "Review: {text}\nSentiment:",
    "verbalizer": {"a": [" alpha", " first"], "b": [" beta"], "c": [" gamma"]},
    "model settings": {"backend": "llamacpp", "flash_attn": False, "n_ctx": 2048, "scale": float("nan")},
}


def _binary(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 2)) * 2
    y = (logits / 2 + rng.gumbel(size=(n, 2))).argmax(axis=1)
    return logits, np.array(["neg", "pos"], dtype=object)[y]


def test_report_records_verbalizer_version_and_settings(tmp_path) -> None:
    import json

    from calibkit.version import __version__

    X, y = _synthetic(120)
    ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=["a", "b", "c"], n_boot=20, info=INFO)
    out = write_report(ev, tmp_path / "r")
    saved = json.loads((out / "evaluation.json").read_text())  # strict: NaN would not parse back as JSON
    assert saved["verbalizer"] == INFO["verbalizer"]
    assert saved["model settings"] == {"backend": "llamacpp", "flash_attn": False, "n_ctx": 2048, "scale": "nan"}
    assert saved["calibkit version"] == __version__ and saved["template"] == INFO["template"]
    assert saved["metrics"] == list(METRICS) and saved["n_evaluation"] == 60
    page = (out / "index.html").read_text()
    about = page[page.index('<table class="about">'):page.index("</table>\n<h2>")]
    assert "<th>calibkit version</th><td>" + __version__ in about
    # forms are quoted, so their leading spaces show; nested settings as rows of their own
    assert "<th>a</th><td><code>&quot; alpha&quot;</code>, <code>&quot; first&quot;</code></td>" in about
    assert "<th>flash_attn</th><td>False</td>" in about and "<th>n_ctx</th><td>2048</td>" in about
    assert "<pre>Review: {text}\nSentiment:</pre>" in about


def test_report_info_cannot_override_what_was_measured() -> None:
    X, y = _synthetic(60)
    ev = evaluate(X, y, {}, classes=["a", "b", "c"], n_boot=10, info={"data": "d", "n": 3})
    assert ev.info["n"] == 60 and ev.info["data"] == "d" and list(ev.info)[0] == "data"


def test_predictions_are_the_argmax_of_the_probabilities(tmp_path) -> None:
    X, y = _synthetic(200)
    ev = evaluate(X, y, {"temperature": ck.TemperatureScaling(), "isotonic": ck.IsotonicCalibration()},
                  classes=["a", "b", "c"], n_boot=10, metrics=["accuracy"])
    probs = pd.read_csv(write_report(ev, tmp_path / "r") / "probabilities.csv")
    for name in ("uncalibrated", "temperature", "isotonic"):
        cols = [f"proba[{c}]@{name}" for c in "abc"]
        expected = np.array(list("abc"))[probs[cols].to_numpy().argmax(axis=1)]
        assert (probs[f"pred@{name}"].to_numpy() == expected).all()
        assert list(probs.columns).index(f"pred@{name}") == list(probs.columns).index(cols[-1]) + 1
        # the table's accuracy is the share of predictions that are right
        assert ev.table.loc[name, "accuracy"] == pytest.approx((probs[f"pred@{name}"] == probs["label"]).mean())


def test_classwise_diagrams_only_for_more_than_two_classes(tmp_path) -> None:
    X, y = _synthetic(150)
    cals = {"temperature": ck.TemperatureScaling()}
    three = write_report(evaluate(X, y, cals, classes=["a", "b", "c"], n_boot=10, metrics=["nll"]), tmp_path / "k3")
    for name in ("uncalibrated", "temperature"):
        png = three / f"reliability_classwise_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert f'src="reliability_classwise_{name}.png"' in (three / "index.html").read_text()
    Xb, yb = _binary()
    two = write_report(evaluate(Xb, yb, cals, classes=["neg", "pos"], n_boot=10, metrics=["nll"]), tmp_path / "k2")
    assert (two / "reliability_temperature.png").exists()
    assert not list(two.glob("*classwise*")) and "classwise" not in (two / "index.html").read_text()


def test_confusion_matrix_counts(tmp_path) -> None:
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
    out = write_report(ev, tmp_path / "r")
    saved = pd.read_csv(out / "confusion_matrix.csv")
    assert list(saved.columns) == ["calibrator", "label", "predicted a", "predicted b", "predicted c"]
    assert (saved[["predicted a", "predicted b", "predicted c"]].to_numpy() == expected.to_numpy()).all()
    assert "<h2>Confusion matrices</h2>" in (out / "index.html").read_text()
    with pytest.raises(ValueError, match="this evaluation has"):
        ev.confusion_matrix("platt")


def test_metrics_subset_computes_and_shows_only_those(tmp_path, monkeypatch) -> None:
    from calibkit import report

    bootstrapped = []
    real = report.M.bootstrap
    monkeypatch.setattr(report.M, "bootstrap", lambda fn, *a, **kw: bootstrapped.append(fn) or real(fn, *a, **kw))
    X, y = _synthetic(120)
    ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=["a", "b", "c"], n_boot=10,
                  metrics=["nll", "ece", "nll"])
    assert list(ev.table.columns) == ["nll", "nll_low", "nll_high", "ece", "ece_low", "ece_high"]
    assert list(ev.formatted().columns) == ["nll", "ece"] and ev.metrics == ["nll", "ece"]
    assert set(bootstrapped) == {METRICS["nll"][0], METRICS["ece"][0]} and len(bootstrapped) == 4
    out = write_report(ev, tmp_path / "r")
    assert list(pd.read_csv(out / "metrics.csv", index_col=0).columns) == list(ev.table.columns)
    assert (out / "metrics.md").read_text().splitlines()[0] == "| calibrator | nll | ece |"
    page = (out / "index.html").read_text()
    assert "<th>ece</th>" in page and "<th>accuracy</th>" not in page and "Smooth ECE" not in page


def test_bad_metrics_names_the_choices() -> None:
    X, y = _synthetic(60)
    with pytest.raises(ValueError, match=r"metrics= has unknown name\(s\) 'ECE', 'mce'; choose from: accuracy, nll"):
        evaluate(X, y, {}, classes=["a", "b", "c"], metrics=["ECE", "nll", "mce"])
    with pytest.raises(ValueError, match=r"metrics= is empty; name at least one of: accuracy, nll, brier"):
        evaluate(X, y, {}, classes=["a", "b", "c"], metrics=[])
    assert list(evaluate(X, y, {}, classes=["a", "b", "c"], n_boot=5, metrics="brier").formatted().columns) == ["brier"]


def test_progress_bar_on_request_only(capsys) -> None:
    X, y = _synthetic(60)
    args = (X, y, {"temperature": ck.TemperatureScaling()})
    evaluate(*args, classes=["a", "b", "c"], n_boot=20, metrics=["ece"], progress=True)
    err = capsys.readouterr().err
    assert "bootstrap ece @ temperature" in err and "40/40" in err
    evaluate(*args, classes=["a", "b", "c"], n_boot=20, metrics=["ece"], progress=False)
    evaluate(*args, classes=["a", "b", "c"], n_boot=20, metrics=["ece"])  # None: quick work shows nothing
    assert capsys.readouterr().err == ""
