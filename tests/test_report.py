"""calibkit.report: the report folders of an evaluation and of a comparison."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from synthetic import at_chance, overconfident, two_templates

import calibkit as ck
from calibkit.evaluation import METRICS, evaluate
from calibkit.comparison import compare
from calibkit.report import ReportFolderError, slug, write_comparison_report, write_report


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
    assert list(pd.read_csv(out / "metrics.csv", index_col=0).columns) == [*ev.table.columns, "flag"]
    assert "| calibrator | nll | ece | flag |" in (out / "metrics.md").read_text().splitlines()
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


def _at_chance_evaluation():
    X, y = at_chance()
    with pytest.warns(UserWarning, match="reached the bound T = 100"):
        return evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=[0, 1, 2], n_boot=50, progress=False)


def test_the_page_and_the_markdown_lead_with_the_conclusion_and_mark_the_flagged_row(tmp_path) -> None:
    ev = _at_chance_evaluation()
    assert ev.table["ece"].idxmin() == "temperature"  # the flattened row has the best ECE ...
    out = write_report(ev, tmp_path / "r")
    page = (out / "index.html").read_text()
    # ... yet the page opens with the best row by NLL, which is not it
    assert page.index("<h2>Conclusion</h2>") < page.index("<table") < page.index("<h2>Metrics")
    conclusion = page[page.index("<h2>Conclusion</h2>"):page.index("<h2>Metrics")]
    assert "Best by NLL: uncalibrated" in conclusion
    assert "⚠ <strong>temperature</strong>: the fit warned: temperature reached the bound T = 100" in conclusion
    assert "<strong>temperature</strong>: temperature T = 100 (softens the scores)" in conclusion
    # the warning of the fit is in the report, and the row is marked in every table and figure title
    assert "Warnings raised during the run" in conclusion and "temperature: temperature reached the bound" in conclusion
    metrics_table = page[page.index("<h2>Metrics"):page.index("<h2>Reliability")]
    assert "⚠ the fit warned" in metrics_table
    assert "<h3>temperature ⚠</h3>" in page  # its confusion matrix
    md = (out / "metrics.md").read_text()
    assert md.startswith("## Conclusion\n") and "Best by NLL: uncalibrated" in md and "- ⚠ temperature: " in md
    assert "reached the bound" in pd.read_csv(out / "metrics.csv", index_col=0).loc["temperature", "flag"]
    info = json.loads((out / "evaluation.json").read_text())
    assert info["conclusion"][0].startswith("Best by NLL: uncalibrated")


def test_a_comparison_page_leads_with_its_conclusion_and_marks_the_flagged_row(tmp_path) -> None:
    X, y = at_chance()
    rng = np.random.default_rng(5)
    sharp = 2 * np.eye(3)[y] + rng.normal(size=(len(y), 3)) * 1.5
    with pytest.warns(UserWarning, match="reached the bound"):
        c = compare({"chance": X, "sharp": sharp}, y, {"temperature": ck.TemperatureScaling()}, classes=[0, 1, 2],
                    baseline="chance", n_boot=50, alpha=0.2, progress=False)
    out = write_comparison_report(c, tmp_path / "c")
    page = (out / "index.html").read_text()
    conclusion = page[page.index("<h2>Conclusion</h2>"):page.index("<h2>Metrics")]
    assert "Best by NLL: sharp · " in conclusion and "It is better than the baseline chance · uncalibrated" in conclusion
    for section in ("<h2>Metrics", "<h2>Paired differences", "<h2>Conformal", "<h2>Selective"):
        part = page[page.index(section):]
        part = part[:part.index("</table>")]
        assert "⚠ the fit warned" in part, section
    assert (out / "comparison.md").read_text().startswith("## Conclusion\n")
    assert "reached the bound" in pd.read_csv(out / "comparison.csv", index_col=0).loc["chance · temperature", "flag"]


def test_each_reliability_diagram_is_shown_once(tmp_path) -> None:
    X, y = overconfident(120)
    ev = evaluate(X, y, {"temperature": ck.TemperatureScaling()}, classes=["a", "b", "c"], n_boot=10,
                  metrics=["nll"])
    page = (write_report(ev, tmp_path / "r") / "index.html").read_text()
    shown = re.findall(r'<img src="([^"]+)"', page)
    # the grid shows every calibrator's diagram; each alone is a link to its file, not a second copy
    assert "reliability.png" in shown and not [s for s in shown if s.startswith("reliability_") and
                                               not s.startswith("reliability_classwise_")]
    assert '<a href="reliability_temperature.png">temperature</a>' in page


def test_a_report_folder_holds_one_run(tmp_path) -> None:
    ev = _at_chance_evaluation()
    c, _, _ = two_templates()
    folder = write_report(ev, tmp_path / "r")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    # a study into the folder of an earlier run (the case) is refused, and changes nothing
    with pytest.raises(ReportFolderError, match=r"holds another run's report .*overwrite=True"):
        write_comparison_report(c, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # overwrite replaces the earlier report whole: none of its files is left beside the new one
    write_report(c, folder, overwrite=True)
    names = {p.name for p in folder.iterdir()}
    assert "comparison.csv" in names and not names & {"metrics.csv", "metrics.md", "confusion_matrix.csv"}
    assert not [n for n in names if n.startswith("reliability_")]
    # a folder with anything else in it is never written into, overwrite or not
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(ReportFolderError, match="not a calibkit report's"):
        write_report(ev, mine, overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
