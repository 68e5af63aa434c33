"""The calibkit command, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import SHARED_DATA


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


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_score_then_calibrate_uses_the_content_free_rows(tmp_path, suffix) -> None:
    scores = tmp_path / f"scores{suffix}"
    assert run("score", "sentiment", "--limit", "40", "--out", str(scores)).returncode == 0
    import pandas as pd

    frame = pd.read_parquet(scores) if suffix == ".parquet" else pd.read_csv(scores, keep_default_na=False)
    assert (frame["row"] == "content-free").sum() == 3 and (frame["row"] == "example").sum() == 40
    out = tmp_path / "cal"
    r = run("calibrate", str(scores), "--calibrators", "contextual,batch", "--bootstrap", "50", "--out", str(out))
    assert r.returncode == 0, r.stderr
    metrics = pd.read_csv(out / "metrics.csv", index_col=0)
    assert list(metrics.index) == ["uncalibrated", "contextual", "batch"]
    bad = run("calibrate", str(scores), "--calibrators", "domain")
    assert bad.returncode == 1 and "give backend" in bad.stderr


SST2_DEV = SHARED_DATA / "sst2" / "dev.txt"


@pytest.mark.skipif(not SST2_DEV.exists(), reason="needs ../shared/data/sst2/dev.txt")
def test_eval_on_sst2_shows_contextual_calibration_beside_the_uncalibrated(tmp_path) -> None:
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


def test_a_csv_file_with_named_columns(tmp_path) -> None:
    data = tmp_path / "reviews.csv"
    data.write_text("review,stars\nA wonderful film.,good\nA boring mess.,bad\nLoved it.,good\nAwful.,bad\n")
    r = run("score", str(data), "--text-column", "review", "--label-column", "stars",
            "--template", "Review: {review}\\nSentiment:", "--verbalizer", '{"bad": " negative", "good": " positive"}')
    assert r.returncode == 0, r.stderr
    assert "4 examples" in r.stdout
    bad = run("score", str(data), "--text-column", "nope")
    assert bad.returncode == 1 and "nope" in bad.stderr and "Traceback" not in bad.stderr
