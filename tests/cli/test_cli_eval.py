"""calibkit.cli.eval: the main job, one configuration or a study, as a user runs it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from calibkit import cli

from cli_tools import SST2_DEV, TEMPLATE_A, TEMPLATE_B, one_line_error, run


def test_eval_writes_the_report_folder(tmp_path) -> None:
    out = tmp_path / "report"
    r = run("eval", "sentiment", "--limit", "60", "--bootstrap", "50",
            "--calibrators", "contextual,temperature,contextual+temperature+isotonic", "--out", str(out))
    assert r.returncode == 0, r.stderr
    table = r.stdout.split("report:")[0]
    for name in ("uncalibrated", "contextual", "temperature", "contextual+temperature+isotonic", "accuracy", "ece"):
        assert name in table
    assert "[" in table and "]" in table  # intervals
    assert {"index.html", "metrics.csv", "metrics.md", "reliability.png"} <= {p.name for p in out.iterdir()}
    for doing in ("loading the embedded model", "scoring the contextual calibration's content-free inputs",
                  "scoring 60 examples with google/gemma-3-270m", "fitting 3 calibrator(s)", "writing the report"):
        assert f"calibkit: {doing}" in r.stderr  # every wait says what it is doing
    import json

    info = json.loads((out / "evaluation.json").read_text())
    assert info["verbalizer"] == {"negative": [" negative"], "positive": [" positive"]}
    assert info["model settings"]["n_batch"] == 32 and info["calibkit version"]
    assert info["sample"] == "the first 60 of 300 rows"


@pytest.mark.skipif(not SST2_DEV.exists(), reason="needs ../shared/data/sst2/dev.txt")
def test_eval_on_sst2_shows_contextual_calibration_beside_the_uncalibrated(tmp_path, session_cache, monkeypatch) -> None:
    monkeypatch.setenv("CALIBKIT_CACHE_DIR", str(session_cache))  # the README's run of these 300 asks them again
    r = run("eval", str(SST2_DEV), "--limit", "300", "--calibrators", "contextual", "--bootstrap", "200",
            "--out", str(tmp_path / "sst2"))
    assert r.returncode == 0, r.stderr
    assert "300 examples (150 to calibrate, 150 held out)" in r.stdout
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith(("uncalibrated", "contextual"))}
    assert set(rows) == {"uncalibrated", "contextual"}
    for line in rows.values():  # accuracy, NLL, Brier, ECE, smooth ECE: each 'value [low, high]'
        assert line.count("[") == 5 and line.count("]") == 5
    import pandas as pd

    table = pd.read_csv(tmp_path / "sst2" / "metrics.csv", index_col=0)
    for m in ("accuracy", "ece"):
        assert (table[f"{m}_low"] <= table[m]).all() and (table[m] <= table[f"{m}_high"]).all()
    # on this model, contextual calibration is what makes zero-shot SST-2 work
    assert table.loc["contextual", "accuracy"] > table.loc["uncalibrated", "accuracy"]


def test_eval_with_two_templates_and_two_calibrators_compares_them_in_one_report(capsys, tmp_path) -> None:
    from calibkit import conformal, metrics
    from calibkit.evaluation import split

    out = tmp_path / "study"
    assert cli.main(["eval", "sentiment", "--limit", "80", "--stratify", "--template", TEMPLATE_A,
                     "--template", TEMPLATE_B, "--calibrators", "temperature,contextual", "--bootstrap", "100",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out.count("report: ") == 1 and f"report: {out / 'index.html'}" in printed.out
    assert printed.err.count("calibkit: scoring 80 examples") == 2  # each configuration scored once
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    rows = [f"{t} · v1 · gemma-3-270m · {c}" for t in ("t1", "t2") for c in ("uncalibrated", "temperature", "contextual")]
    assert list(table.index) == rows
    for row in rows:
        assert row in printed.out
    assert not (out / "metrics.csv").exists()  # one report, the comparison's
    # the report's numbers, recomputed from its probabilities and the labels with the library's functions
    probs = pd.read_csv(out / "probabilities.csv")
    classes = ["negative", "positive"]
    y = np.array([classes.index(v) for v in probs["label"]])
    p = {row: probs[[f"proba[{c}]@{row}" for c in classes]].to_numpy() for row in rows}
    base = p["t1 · v1 · gemma-3-270m · uncalibrated"]
    cal, test = split(y, 0.5, 0)
    for row in rows:
        t = table.loc[row]
        assert t["accuracy"] == pytest.approx(metrics.accuracy(y, p[row]), abs=1e-6)
        assert t["nll"] == pytest.approx(metrics.nll(y, p[row]), abs=1e-4)
        for m in ("accuracy", "nll"):
            d = metrics.paired_bootstrap(m, y, p[row], base, n_boot=100, seed=0)
            assert (t[f"diff_{m}"], t[f"diff_{m}_low"], t[f"diff_{m}_high"]) == \
                pytest.approx((d.estimate, d.low, d.high), abs=1e-4)
        cov = conformal.coverage(y[test], conformal.conformal_sets(p[row][cal], y[cal], p[row][test], alpha=0.1))
        assert (t["coverage"], t["coverage_low"], t["coverage_high"]) == pytest.approx((cov.estimate, cov.low, cov.high))
    page = (out / "index.html").read_text()
    assert "Baseline: <strong>t1 · v1 · gemma-3-270m · uncalibrated</strong>" in page
    assert "reliability.png" in page and "risk_coverage.png" in page and "alpha = 0.1" in page
    import json

    info = json.loads((out / "evaluation.json").read_text())
    assert info["templates"] == {"t1": "Review: {text}\nSentiment:", "t2": "{text}\nThe review is"}
    assert info["n_evaluation"] == 40 and info["bootstrap"] == 100


@pytest.mark.filterwarnings("ignore:temperature reached the bound")
def test_baseline_or_alpha_make_the_comparison_report_for_one_configuration(capsys, tmp_path, fake_models) -> None:
    out = tmp_path / "one"
    assert cli.main(["eval", "sentiment", "--limit", "60", "--stratify", "--calibrators", "temperature,batch",
                     "--metrics", "accuracy", "--bootstrap", "10", "--baseline", "temperature", "--out", str(out)]) == 0
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert list(table["calibrator"]) == ["uncalibrated", "temperature", "batch"]
    assert table.loc["t1 · v1 · fake-model · temperature", "diff_accuracy"] == 0
    assert "baseline t1 · v1 · fake-model · temperature" in capsys.readouterr().out


def test_a_study_into_the_folder_of_an_earlier_run_stops_before_scoring(capsys, tmp_path, fake_models) -> None:
    out = str(tmp_path / "reports")
    assert cli.main(["eval", "sentiment", "--limit", "40", "--bootstrap", "20", "--out", out]) == 0
    capsys.readouterr()
    asked = len(fake_models)
    line = one_line_error(capsys, ["eval", "sentiment", "--limit", "40", "--template", TEMPLATE_A, "--template",
                                   TEMPLATE_B, "--bootstrap", "20", "--out", out])
    assert line.startswith(f"calibkit eval: --out {out} holds another run's report (") and "--overwrite" in line
    assert len(fake_models) == asked  # nothing was scored
    assert not (tmp_path / "reports" / "comparison.csv").exists()


def test_a_users_csv_says_the_template_and_forms_chosen_before_scoring_and_warns_of_their_mass(tmp_path) -> None:
    data = tmp_path / "reviews.csv"
    rows = [("A wonderful film.", "five_stars"), ("A boring mess.", "one_star"), ("Loved it.", "five_stars"),
            ("Awful.", "one_star"), ("Great fun.", "five_stars"), ("Dull and long.", "one_star")] * 4
    data.write_text("review,stars_label\n" + "".join(f"{t},{s}\n" for t, s in rows))
    r = run("eval", str(data), "--text-column", "review", "--label-column", "stars_label", "--calibrators",
            "temperature", "--bootstrap", "20", "--out", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr
    err = r.stderr
    said_template = err.index(
        "calibkit: template 'Review: {review}\\nAnswer:': calibkit's default for this data, as none was given "
        "(--template to give another)")
    said_forms = err.index("calibkit: label forms 'five_stars': ' five_stars'; 'one_star': ' one_star': calibkit's "
                           "default for this data, as none was given (--verbalizer to give others; calibkit forms "
                           "searches for better ones)")
    assert said_template < said_forms < err.index("calibkit: scoring 24 examples")
    warned = [line for line in err.splitlines() if line.startswith("calibkit eval: warning: ")]
    assert len(warned) == 1 and "median label mass" in warned[0] and "calibkit forms" in warned[0], err
    page = (tmp_path / "report" / "index.html").read_text()
    assert "median label mass" in page[page.index("Warnings raised during the run"):page.index("<h2>Metrics")]


def test_a_baseline_naming_a_template_among_two_verbalizers_is_it_with_the_first(capsys, tmp_path, fake_models) -> None:
    v2 = '{"negative": " bad", "positive": " good"}'
    v1 = '{"negative": " negative", "positive": " positive"}'
    assert cli.main(["eval", "sentiment", "--limit", "40", "--template", TEMPLATE_A, "--template", TEMPLATE_B,
                     "--verbalizer", v1, "--verbalizer", v2, "--calibrators", "temperature", "--bootstrap", "20",
                     "--baseline", "t2", "--out", str(tmp_path / "r")]) == 0
    assert "baseline t2 · v1 · fake-model · uncalibrated" in capsys.readouterr().out
