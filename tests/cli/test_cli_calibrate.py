"""calibkit.cli.calibrate: a scores file to calibrated probabilities and a report, with no model."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from calibkit import cli
from calibkit.label_scores import LabelScores, read_scores, write_scores

from cli_tools import FakeBackend, fake_score, one_line_error, open_with, run


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
    assert bad.returncode == 1 and "--calibrators domain" in bad.stderr and "calibkit eval" in bad.stderr


def test_score_out_then_calibrate_keeps_typed_classes(monkeypatch, capsys, tmp_path) -> None:
    import calibkit.scoring

    data = tmp_path / "stars.csv"
    data.write_text("text,stars\n" + "".join(f"review {i},{1 + i % 2}\n" for i in range(20)))
    monkeypatch.setattr(calibkit.scoring, "score", fake_score([]))
    open_with(monkeypatch, lambda *a, **kw: FakeBackend())
    out = tmp_path / "scores.csv"
    assert cli.main(["score", str(data), "--label-column", "stars", "--verbalizer", '{"1": " bad", "2": " good"}',
                     "--out", str(out)]) == 0
    f = read_scores(out)
    assert f.label_column == "stars" and f.scores.classes == ["1", "2"] and f.labels[:2] == ["1", "2"]
    assert f.content_free is not None and len(f.content_free) == 3


def test_calibrate_reads_typed_classes_and_labels(capsys, tmp_path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=60)
    lp = np.log(rng.dirichlet(np.ones(3), size=60) * 0.5 + 0.5 * np.eye(3)[y])
    path = tmp_path / "s.csv"
    write_scores(path, LabelScores.from_logprobs(lp, [0, 1, 2]), pd.DataFrame({"text": ["t"] * 60, "label": y}),
                 content_free=LabelScores.from_logprobs(np.log(np.full((3, 3), 0.3)), [0, 1, 2]))
    out = tmp_path / "report"
    assert cli.main(["calibrate", str(path), "--calibrators", "contextual,temperature", "--bootstrap", "10",
                     "--out", str(out)]) == 0
    metrics = pd.read_csv(out / "metrics.csv", index_col=0)
    assert list(metrics.index) == ["uncalibrated", "contextual", "temperature"]
    assert metrics.loc["uncalibrated", "accuracy"] > 0.8  # labels matched as integers, not strings
    capsys.readouterr()
    assert "--calibrators domain" in one_line_error(capsys, ["calibrate", str(path), "--calibrators", "domain"])
    assert "--calibrators nope" in one_line_error(capsys, ["calibrate", str(path), "--calibrators", "nope"])
    line = one_line_error(capsys, ["calibrate", str(path), "--label-column", "stars"])
    assert "--label-column" in line and "label_column" not in line


def test_metrics_choose_the_report_columns_and_bootstraps(capsys, tmp_path) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=80)
    path = tmp_path / "s.csv"
    write_scores(path, LabelScores.from_logprobs(np.log(rng.dirichlet([1, 1], size=80)), ["a", "b"]),
                 pd.DataFrame({"label": np.array(["a", "b"])[y]}))
    out = tmp_path / "report"
    assert cli.main(["calibrate", str(path), "--calibrators", "temperature", "--metrics", "ece,accuracy",
                     "--bootstrap", "20", "--out", str(out)]) == 0
    assert "bootstrapping ece, accuracy (--bootstrap 20" in capsys.readouterr().err
    columns = pd.read_csv(out / "metrics.csv", index_col=0).columns
    assert sorted(columns) == ["accuracy", "accuracy_high", "accuracy_low", "ece", "ece_high", "ece_low", "flag"]


def test_calibrate_says_how_to_make_a_scores_file(capsys, tmp_path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("text,label\na,b\n")
    line = one_line_error(capsys, ["calibrate", str(data)])
    assert "data.csv" in line and "calibkit score --out" in line
    assert "calibkit score --out" in one_line_error(capsys, ["calibrate", str(tmp_path / "none.csv")])
    no_cf = tmp_path / "no_cf.csv"
    write_scores(no_cf, LabelScores.from_logprobs(np.log([[0.3, 0.7]] * 4), ["a", "b"]),
                 pd.DataFrame({"label": ["a", "b", "b", "a"]}))
    assert "content-free" in one_line_error(capsys, ["calibrate", str(no_cf), "--calibrators", "contextual"])


def _synthetic_scores_file(tmp_path) -> str:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=80)
    s = LabelScores.from_logprobs(np.log(np.full((80, 2), 0.2) + 0.6 * np.eye(2)[y]) + rng.normal(size=(80, 2)),
                                  ["neg", "pos"])
    path = tmp_path / "s.csv"
    write_scores(path, s, pd.DataFrame({"text": [f"t{i}" for i in range(80)], "label": np.array(["neg", "pos"])[y]}))
    return str(path)


def test_each_run_writes_a_fresh_folder_and_one_into_another_runs_out_is_refused(capsys, tmp_path, monkeypatch) -> None:
    scores = _synthetic_scores_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    flags = ["--calibrators", "temperature", "--bootstrap", "20"]
    # without --out: a folder per run under reports/<name>/, and latest points at the newest
    shown = []
    for _ in range(2):
        assert cli.main(["calibrate", scores, *flags]) == 0
        shown.append(capsys.readouterr().out.split("report: ")[1].strip())
    first, second = (tmp_path / s for s in shown)
    assert first.parent != second.parent and first.parent.parent == second.parent.parent == tmp_path / "reports" / "s"
    assert first.is_file() and second.is_file()
    assert (tmp_path / "reports" / "s" / "latest").resolve() == second.parent.resolve()
    # --out names one run's folder: a second run into it stops with one line naming --overwrite
    assert cli.main(["calibrate", scores, *flags, "--out", "mine"]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in (tmp_path / "mine").iterdir()}
    assert one_line_error(capsys, ["calibrate", scores, *flags, "--out", "mine"]) == (
        "calibkit calibrate: --out mine holds another run's report (confusion_matrix.csv, evaluation.json, "
        "index.html, metrics.csv, ...); a report folder holds one run: pass --overwrite to replace it, or give "
        "another --out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "mine").iterdir()} == before
    assert cli.main(["calibrate", scores, *flags, "--out", "mine", "--overwrite"]) == 0
    # a folder holding anything else is never written into
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    assert "holds files that are not a calibkit report's (todo.txt)" in one_line_error(
        capsys, ["calibrate", scores, *flags, "--out", "notes", "--overwrite"])
