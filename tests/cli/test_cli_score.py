"""calibkit.cli.score: a data set scored, summarised and written."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from calibkit import cli
from calibkit.label_scores import read_scores

from cli_tools import FakeBackend, fake_score, one_line_error, open_with, run


def test_score_prints_accuracy_label_mass_and_rows(tmp_path) -> None:
    out = tmp_path / "scores.csv"
    r = run("score", "sentiment", "--limit", "12", "--head", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and "label mass" in r.stdout and "logprob[positive]" in r.stdout
    import pandas as pd

    frame = pd.read_csv(out)
    assert (frame["row"] == "example").sum() == 12
    assert {"text", "label", "logprob[negative]", "label_mass"} <= set(frame.columns)


def test_a_csv_file_with_named_columns(tmp_path) -> None:
    data = tmp_path / "reviews.csv"
    data.write_text("review,stars\nA wonderful film.,good\nA boring mess.,bad\nLoved it.,good\nAwful.,bad\n")
    r = run("score", str(data), "--text-column", "review", "--label-column", "stars",
            "--template", "Review: {review}\\nSentiment:", "--verbalizer", '{"bad": " negative", "good": " positive"}')
    assert r.returncode == 0, r.stderr
    assert "4 examples" in r.stdout
    bad = run("score", str(data), "--text-column", "nope")
    assert bad.returncode == 1 and "nope" in bad.stderr and "Traceback" not in bad.stderr
    assert "--text-column" in bad.stderr and "text_column" not in bad.stderr


@pytest.mark.parametrize("command", ["score", "eval"])
def test_k_reaches_score_and_is_checked_against_the_endpoint_cap(monkeypatch, capsys, reviews, tmp_path, command):
    import calibkit.scoring

    calls: list[dict] = []
    import calibkit.study

    monkeypatch.setattr(calibkit.scoring, "score", fake_score(calls))
    monkeypatch.setattr(calibkit.study, "score", fake_score(calls))
    open_with(monkeypatch, lambda *a, **kw: FakeBackend())
    base = [command, str(reviews), "--text-column", "review", "--label-column", "stars", "--method", "topk"]
    extra = (["--calibrators", "temperature", "--bootstrap", "10", "--out", str(tmp_path / "r"), "--overwrite"]
             if command == "eval" else [])  # one run after another into one folder
    assert cli.main(base + extra + ["-k", "5"]) == 0
    assert calls and calls[-1]["k"] == 5 and calls[-1]["method"] == "topk"
    calls.clear()
    assert cli.main(base + extra) == 0
    assert calls[-1]["k"] is None  # the endpoint's cap
    capsys.readouterr()
    line = one_line_error(capsys, base + extra + ["-k", "50"])
    assert "-k must be at most 20" in line


def test_score_with_backend_hf_gives_the_transformers_scores(capsys, tmp_path, hf_model) -> None:
    import calibkit as ck
    from calibkit.datasets import load_dataset

    out = tmp_path / "scores.csv"
    assert cli.main(["score", "sentiment", "--limit", "12", "--backend", "hf", "--no-cache", "--out", str(out)]) == 0
    assert "model google/gemma-3-270m" in capsys.readouterr().out
    ds = load_dataset("sentiment")
    ref = ck.score(ds.frame[ds.template.fields].head(12), ds.template, ds.verbalizer, hf_model, progress=False)
    got = read_scores(out).scores
    np.testing.assert_allclose(got.logprobs, ref.logprobs, atol=1e-6)


def test_score_with_two_ray_workers_equals_one_process(tmp_path) -> None:
    pytest.importorskip("ray")
    import calibkit as ck
    from calibkit.datasets import load_dataset

    out = tmp_path / "scores.csv"
    r = run("score", "sentiment", "--limit", "24", "--workers", "2", "--out", str(out), "--head", "2")
    assert r.returncode == 0, r.stderr
    assert "starting 2 Ray actors on this machine" in r.stderr
    ds = load_dataset("sentiment")
    ref = ck.score(ds.frame[ds.template.fields].head(24), ds.template, ds.verbalizer,
                   ck.LocalModel(n_threads=1, cache=False), progress=False)
    np.testing.assert_array_equal(read_scores(out).scores.logprobs, ref.logprobs)
