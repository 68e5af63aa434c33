"""The calibkit command, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calibkit.cli", *args], capture_output=True, text=True, timeout=300)


def test_peek_lists_paris() -> None:
    r = run("peek", "The capital of France is", "-k", "5", "--no-cache")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("google/gemma-3-270m: top-5 next tokens")
    rows = [line for line in lines if line.strip()[:1].isdigit()]
    assert len(rows) == 5 and any("' Paris'" in row for row in rows)


def test_score_prints_accuracy_label_mass_and_rows(tmp_path) -> None:
    out = tmp_path / "scores.csv"
    r = run("score", "sentiment", "--limit", "12", "--head", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and "label mass" in r.stdout and "logprob[positive]" in r.stdout
    import pandas as pd

    frame = pd.read_csv(out)
    assert (frame["row"] == "example").sum() == 12
    assert {"text", "label", "logprob[negative]", "label_mass"} <= set(frame.columns)


def test_errors_are_one_line_and_name_the_fix() -> None:
    r = run("score", "no-such-set")
    assert r.returncode == 1 and "bundled ones are" in r.stderr and "Traceback" not in r.stderr
    assert run().returncode == 2


def test_eval_writes_the_report_folder(tmp_path) -> None:
    out = tmp_path / "report"
    r = run("eval", "sentiment", "--limit", "60", "--bootstrap", "50", "--calibrators", "contextual,temperature",
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    table = r.stdout.split("report:")[0]
    for name in ("uncalibrated", "contextual", "temperature", "accuracy", "ece"):
        assert name in table
    assert "[" in table and "]" in table  # intervals
    assert {"index.html", "metrics.csv", "metrics.md", "reliability.png"} <= {p.name for p in out.iterdir()}


def test_score_then_calibrate_uses_the_content_free_rows(tmp_path) -> None:
    scores = tmp_path / "scores.csv"
    assert run("score", "sentiment", "--limit", "40", "--out", str(scores)).returncode == 0
    import pandas as pd

    frame = pd.read_csv(scores, keep_default_na=False)
    assert (frame["row"] == "content-free").sum() == 3 and (frame["row"] == "example").sum() == 40
    out = tmp_path / "cal"
    r = run("calibrate", str(scores), "--calibrators", "contextual,batch", "--bootstrap", "50", "--out", str(out))
    assert r.returncode == 0, r.stderr
    metrics = pd.read_csv(out / "metrics.csv", index_col=0)
    assert list(metrics.index) == ["uncalibrated", "contextual", "batch"]
    bad = run("calibrate", str(scores), "--calibrators", "domain")
    assert bad.returncode == 1 and "give backend" in bad.stderr
