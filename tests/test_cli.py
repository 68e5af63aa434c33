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
    assert len(frame) == 12 and {"text", "label", "logprob[negative]", "label_mass"} <= set(frame.columns)


def test_errors_are_one_line_and_name_the_fix() -> None:
    r = run("score", "no-such-set")
    assert r.returncode == 1 and "bundled ones are" in r.stderr and "Traceback" not in r.stderr
    assert run().returncode == 2
