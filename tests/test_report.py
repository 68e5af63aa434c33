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
