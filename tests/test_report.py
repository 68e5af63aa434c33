"""calibkit.report: the report folders of an evaluation and of a comparison."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from synthetic import overconfident, two_templates

import calibkit as ck
from calibkit.evaluation import METRICS, evaluate
from calibkit.report import slug, write_comparison_report, write_report


def test_write_report_folder(tmp_path) -> None:
    X, y = overconfident(200)
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
    # probabilities.csv is the evaluation's probabilities and predictions, as they are
    shown = ev.probabilities()
    assert list(probs.columns) == list(shown.columns) and (probs["label"] == shown["label"]).all()
    for name in ("uncalibrated", "temperature", "isotonic"):
        assert (probs[f"pred@{name}"] == shown[f"pred@{name}"]).all()
        np.testing.assert_allclose(probs[f"proba[b]@{name}"], shown[f"proba[b]@{name}"], rtol=1e-5)


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
    from calibkit.version import __version__

    X, y = overconfident(120)
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


def test_classwise_diagrams_only_for_more_than_two_classes(tmp_path) -> None:
    X, y = overconfident(150)
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


def test_confusion_matrices_are_written_and_shown(tmp_path) -> None:
    X, y = overconfident(90)
    ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=["a", "b", "c"], n_boot=10,
                  metrics=["accuracy"])
    out = write_report(ev, tmp_path / "r")
    pd.testing.assert_frame_equal(pd.read_csv(out / "confusion_matrix.csv"), ev.confusion_matrices())
    assert "<h2>Confusion matrices</h2>" in (out / "index.html").read_text()


def test_metrics_subset_shows_only_those(tmp_path) -> None:
    X, y = overconfident(120)
    ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=["a", "b", "c"], n_boot=10,
                  metrics=["nll", "ece"])
    out = write_report(ev, tmp_path / "r")
    assert list(pd.read_csv(out / "metrics.csv", index_col=0).columns) == list(ev.table.columns)
    assert (out / "metrics.md").read_text().splitlines()[0] == "| calibrator | nll | ece |"
    page = (out / "index.html").read_text()
    assert "<th>ece</th>" in page and "<th>accuracy</th>" not in page and "Smooth ECE" not in page


def test_slug_keeps_file_names_safe() -> None:
    assert slug("t1 · v1/temperature") == "t1---v1-temperature"
    assert slug("///") == "report" and slug("", "calibrator") == "calibrator"


def test_the_comparison_report_holds_the_table_and_says_which_is_the_baseline(tmp_path) -> None:
    import matplotlib

    pytest.importorskip("mapie")
    matplotlib.use("Agg")
    c, _, _ = two_templates()
    out = write_comparison_report(c, tmp_path / "r", title="two templates", progress=False)
    assert {"comparison.csv", "comparison.md", "probabilities.csv", "evaluation.json", "index.html",
            "risk_coverage.png", "reliability.png"} <= {p.name for p in out.iterdir()}
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    pd.testing.assert_frame_equal(table[["accuracy", "diff_nll_low", "coverage", "aurc"]],
                                  c.table[["accuracy", "diff_nll_low", "coverage", "aurc"]], rtol=1e-5)
    probs = pd.read_csv(out / "probabilities.csv")
    assert list(probs["row"]) == list(c.rows)
    np.testing.assert_allclose(probs["proba[pos]@t1 · v1 · m · batch"], c.probs["t1 · v1 · m · batch"][:, 1],
                               rtol=1e-5)
    page = (out / "index.html").read_text()
    assert "Baseline: <strong>t2 · v1 · m · uncalibrated</strong>" in page
    assert "excludes 0" in page and "alpha = 0.2" in page and "risk_coverage.png" in page
    assert json.loads((out / "evaluation.json").read_text())["alpha"] == 0.2
