"""The calibkit command, run as a user runs it."""

from __future__ import annotations

import re
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
    assert "--text-column" in bad.stderr and "text_column" not in bad.stderr



# -- without the model: the command line's own rules ---------------------------------------
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from calibkit import cli  # noqa: E402
from calibkit.datasets.formats import FORMATS  # noqa: E402
from calibkit.label_scores import LabelScores, read_scores, write_scores  # noqa: E402


def one_line_error(capsys, argv: list[str]) -> str:
    """Run calibkit in-process; assert a one-line user error with exit 1; return the line."""
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("calibkit: ")]  # status lines
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"calibkit {argv[0]}: ")
    return lines[0]


@pytest.fixture
def reviews(tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text("review,stars\nA wonderful film.,good\nA boring mess.,bad\nLoved it.,good\nAwful.,bad\n")
    return data


def test_an_unknown_data_set_is_one_line(capsys) -> None:
    line = one_line_error(capsys, ["score", "no-such-set"])
    assert "bundled ones are" in line and "'sentiment'" in line


def test_a_bug_keeps_its_traceback(monkeypatch) -> None:
    for exc in (TypeError("a bug"), KeyError("a bug"), AttributeError("a bug")):
        def broken(args, exc=exc):
            raise exc

        monkeypatch.setattr(cli, "_cmd_score", broken)
        with pytest.raises(type(exc)):
            cli.main(["score"])


def test_an_import_error_is_a_bug_unless_it_says_what_to_install(monkeypatch, capsys) -> None:
    def missing_extra(args):
        raise ImportError("the embedded model needs llama-cpp-python: pip install 'calibkit[local]'")

    monkeypatch.setattr(cli, "_cmd_score", missing_extra)
    assert "pip install 'calibkit[local]'" in one_line_error(capsys, ["score"])

    def broken(args):
        raise ImportError("cannot import name 'X' from 'calibkit.scoring'")

    monkeypatch.setattr(cli, "_cmd_score", broken)
    with pytest.raises(ImportError):
        cli.main(["score"])


@pytest.mark.parametrize("argv, flag", [
    (["score", "sentiment", "--format", "cb"], "--format"),
    (["score", "sentiment", "--text-column", "x"], "--text-column"),
    (["eval", "topic", "--label-column", "y"], "--label-column"),
])
def test_options_on_a_bundled_set_name_the_flag(capsys, argv, flag) -> None:
    line = one_line_error(capsys, argv)
    assert flag in line and "bundled" in line and "=" not in line


@pytest.mark.parametrize("argv, words", [
    (["score", "{data}", "--text-column", "nope"], ["--text-column", "'nope'"]),
    (["score", "{data}", "--text-column", "review", "--label-column", "nope"], ["--label-column", "'nope'"]),
    (["score", "{data}"], ["--text-column"]),
    (["score", "{data}", "--text-column", "review", "--label-column", "stars", "--limit", "0"], ["--limit"]),
    (["score", "{data}", "--text-column", "review", "--label-column", "stars", "-k", "0"], ["-k must be"]),
    (["eval", "{data}", "--text-column", "review", "--label-column", "stars", "-k", "-3"], ["-k must be"]),
    (["score", "{data}", "--text-column", "review", "--label-column", "stars", "--verbalizer", "{{"],
     ["--verbalizer"]),
    (["score", "{data}", "--text-column", "review", "--label-column", "stars", "--verbalizer", '[" a"]'],
     ["--verbalizer"]),
    (["score", "{data}", "--text-column", "review", "--label-column", "stars", "--verbalizer", '{"good": 5, "bad": 6}'],
     ["--verbalizer"]),
    (["score", "{data}", "--text-column", "review", "--label-column", "stars", "--template", "Review: {}"],
     ["--template"]),
    (["score", "{data}", "--text-column", "review", "--label-column", "stars", "--template", "Review: {text}"],
     ["template needs", "['text']"]),
    (["eval", "{data}", "--text-column", "review", "--label-column", "stars", "--calibration-fraction", "1.5"],
     ["--calibration-fraction"]),
    (["eval", "{data}", "--text-column", "review", "--label-column", "stars", "--bootstrap", "0"], ["--bootstrap"]),
    (["score", "{data}", "--text-column", "review", "--label-column", "stars", "--out", "s.xlsx"],
     ["--out", ".csv or .parquet"]),
])
def test_errors_speak_in_flags_not_python_names(capsys, reviews, argv, words) -> None:
    line = one_line_error(capsys, [a.replace("{data}", str(reviews)) for a in argv])
    for w in words:
        assert w in line, line
    assert not re.search(r"\b(text_column|label_column|format|template|verbalizer|limit|k|n_boot)=", line), line


def test_a_file_of_unknown_format_asks_for_format_in_flags(capsys, tmp_path) -> None:
    odd = tmp_path / "data.txt"
    odd.write_text("something calibkit cannot place\n")
    line = one_line_error(capsys, ["score", str(odd)])
    assert "--format" in line and "format=" not in line


def test_format_lists_and_checks_every_format(capsys) -> None:
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["score"].format_help().split())
    for fmt in FORMATS:
        assert fmt in help_text
    assert {"rte", "cb"} <= set(FORMATS)
    assert cli.build_parser().parse_args(["eval", "x.jsonl", "--format", "cb"]).format == "cb"
    with pytest.raises(SystemExit) as e:
        cli.main(["score", "x.jsonl", "--format", "xml"])
    assert e.value.code == 2 and "--format" in capsys.readouterr().err


def test_template_escapes_and_non_ascii(reviews) -> None:
    args = cli.build_parser().parse_args(["score", str(reviews), "--label-column", "stars",
                                          "--template", "Critique : {review}\\nAvis é:"])
    ds = cli._load(args)
    assert ds.template.template == "Critique : {review}\nAvis é:" and ds.fields == ["review"]
    assert cli.unescape("tab\\there, a backslash \\\\n, \\d and ü") == "tab\there, a backslash \\n, \\d and ü"


class _FakeBackend:
    model_name = "fake"
    logprobs_cap = 20
    identity = {"backend": "fake"}


def _fake_score(calls):
    def score(examples, template, verbalizer, backend, method="auto", *, k=None, check=True, **kw):
        calls.append({"k": k, "method": method, "n": len(examples)})
        n, K = len(examples), len(verbalizer.classes)
        lp = np.log(np.full((n, K), 0.5 / K))
        lp[np.arange(n), np.arange(n) % K] = np.log(0.4)
        return LabelScores.from_logprobs(lp, list(verbalizer.classes),
                                         provenance={"requests": n, "cache_hits": 0, "method": method})
    return score


@pytest.mark.parametrize("command", ["score", "eval"])
def test_k_reaches_score_and_is_checked_against_the_endpoint_cap(monkeypatch, capsys, reviews, tmp_path, command):
    import calibkit.scoring

    calls: list[dict] = []
    monkeypatch.setattr(calibkit.scoring, "score", _fake_score(calls))
    monkeypatch.setattr(cli, "_backend", lambda args: _FakeBackend())
    base = [command, str(reviews), "--text-column", "review", "--label-column", "stars", "--method", "topk"]
    extra = ["--calibrators", "temperature", "--bootstrap", "10", "--out", str(tmp_path / "r")] if command == "eval" else []
    assert cli.main(base + extra + ["-k", "5"]) == 0
    assert calls and calls[-1]["k"] == 5 and calls[-1]["method"] == "topk"
    calls.clear()
    assert cli.main(base + extra) == 0
    assert calls[-1]["k"] is None  # the endpoint's cap
    capsys.readouterr()
    line = one_line_error(capsys, base + extra + ["-k", "50"])
    assert "-k must be at most 20" in line


def test_score_out_then_calibrate_keeps_typed_classes(monkeypatch, capsys, tmp_path) -> None:
    import calibkit.scoring

    data = tmp_path / "stars.csv"
    data.write_text("text,stars\n" + "".join(f"review {i},{1 + i % 2}\n" for i in range(20)))
    monkeypatch.setattr(calibkit.scoring, "score", _fake_score([]))
    monkeypatch.setattr(cli, "_backend", lambda args: _FakeBackend())
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
    assert sorted(columns) == ["accuracy", "accuracy_high", "accuracy_low", "ece", "ece_high", "ece_low"]


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


def test_version(capsys) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"calibkit {version('calibkit')}"


def test_revoking_an_unknown_key_is_one_line(capsys, tmp_path) -> None:
    keys = tmp_path / "keys.json"
    assert cli.main(["keys", "create", "--keys-file", str(keys)]) == 0
    capsys.readouterr()
    assert "no key with id 'nope'" in one_line_error(capsys, ["keys", "revoke", "nope", "--keys-file", str(keys)])


def test_a_refused_top_k_names_k(monkeypatch, capsys) -> None:
    from calibkit.api import InvalidRequestError

    def refused(args):
        raise InvalidRequestError("logprobs must be an integer between 0 and 20 (got 50)", param="logprobs")

    monkeypatch.setattr(cli, "_cmd_peek", refused)
    assert one_line_error(capsys, ["peek", "x", "-k", "50"]).startswith("calibkit peek: -k 50: logprobs must be")


# -- flags checked before the model is asked anything ------------------------------------
@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command gets as far as building its model."""
    def touched(args):
        raise AssertionError("the model was built before every flag was checked")

    monkeypatch.setattr(cli, "_backend", touched)


@pytest.mark.parametrize("argv, words", [
    (["eval", "{data}", "--bootstrap", "0"], ["--bootstrap"]),
    (["eval", "{data}", "--calibration-fraction", "1.5"], ["--calibration-fraction"]),
    (["eval", "{data}", "--metrics", "ece,auroc"], ["--metrics", "'auroc'", "smooth_ece"]),
    (["eval", "{data}", "--metrics", ","], ["--metrics"]),
    (["eval", "{data}", "--calibrators", "temperature,nope"], ["--calibrators", "'nope'"]),
    (["eval", "{data}", "--calibrators", "temperature,isotonic+temperature"],
     ["--calibrators 'isotonic+temperature'", "cannot come before"]),
    (["eval", "{data}", "--text-column", "nope"], ["--text-column", "'nope'"]),
    (["eval", "{data}", "--timeout", "5"], ["--timeout", "--api-base"]),
    (["score", "{data}", "--max-in-flight", "2"], ["--max-in-flight", "--api-base"]),
    (["eval", "{data}", "--api-base", "http://127.0.0.1:9/v1", "--timeout", "0"], ["--timeout", "positive"]),
    (["score", "{data}", "--api-base", "http://127.0.0.1:9/v1", "--max-in-flight", "0"], ["--max-in-flight"]),
    (["score", "{data}", "--shuffle"], ["--shuffle", "--limit"]),
    (["score", "{data}", "--limit", "4", "--shuffle", "--stratify"], ["--shuffle", "--stratify"]),
    (["score", "{data}", "--limit", "11", "--stratify"], ["--limit can be at most 10"]),
    (["eval", "{data}", "--api-base", "http://127.0.0.1:9/v1", "--timeout", "inf"], ["--timeout", "positive"]),
    (["eval", "{data}", "--limit", "3"], ["'bad'", "--shuffle or --stratify"]),
    (["peek", "Hello", "-k", "0"], ["-k must be at least 1"]),
])
def test_every_flag_is_checked_before_the_model_is_touched(capsys, no_model, sorted_reviews, argv, words) -> None:
    argv = [a.replace("{data}", str(sorted_reviews)) for a in argv]
    if argv[0] != "peek" and "--text-column" not in argv:
        argv += ["--text-column", "review"]
    line = one_line_error(capsys, argv + ([] if argv[0] == "peek" else ["--label-column", "stars"]))
    for w in words:
        assert w in line, line
    assert not re.search(r"\b(timeout|max_in_flight|metrics|calibrat\w+|n_boot)=", line), line


@pytest.fixture
def sorted_reviews(tmp_path):
    """A file sorted by label, as many public files are: the first rows are all 'bad'."""
    data = tmp_path / "sorted.csv"
    bad = ["Awful.", "A boring mess.", "Dull and long.", "I hated it.", "A waste of time.", "Terrible acting."]
    good = ["A wonderful film.", "Loved it.", "A joy.", "Brilliant and warm.", "Superb.", "Great fun."]
    data.write_text("review,stars\n" + "".join(f"{t},bad\n" for t in bad) + "".join(f"{t},good\n" for t in good))
    return data


def _limited_rows(capsys, data, *flags: str) -> tuple[list[str], str]:
    """The review texts `score --limit 4` printed, and its stderr."""
    assert cli.main(["score", str(data), "--text-column", "review", "--label-column", "stars", "--limit", "4",
                     "--head", "4", *flags]) == 0
    out = capsys.readouterr()
    return [t for t in re.findall(r"^\s*(.+?\.)\s", out.out, flags=re.M)], out.err


def test_limit_says_what_it_took_and_shuffle_and_stratify_draw_seeded_samples(capsys, sorted_reviews) -> None:
    rows, err = _limited_rows(capsys, sorted_reviews)
    assert "--limit 4: the first 4 of 12 rows (bad 4)" in err and "--shuffle or --stratify" in err
    strat, err = _limited_rows(capsys, sorted_reviews, "--stratify")
    assert "stratified random sample (--seed 0) of 4 of 12 rows" in err and "bad 2" in err and "good 2" in err
    again, _ = _limited_rows(capsys, sorted_reviews, "--stratify")
    other, _ = _limited_rows(capsys, sorted_reviews, "--stratify", "--seed", "3")
    assert strat == again and strat != other
    shuffled, err = _limited_rows(capsys, sorted_reviews, "--shuffle", "--seed", "1")
    assert "random sample (--seed 1) of 4 of 12 rows" in err and shuffled != rows


def test_timeout_and_max_in_flight_reach_the_client() -> None:
    args = cli.build_parser().parse_args(["score", "--api-base", "http://127.0.0.1:9/v1", "--model", "m",
                                          "--timeout", "2.5", "--max-in-flight", "3", "--no-cache"])
    with cli._backend(args) as client:
        assert (client.timeout, client.max_in_flight) == (2.5, 3)


def test_serve_help_describes_each_limit() -> None:
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["serve"].format_help().split())
    assert "ServerConfig" not in help_text
    assert "--queue-size N requests waiting for the worker; one more is 503" in help_text


def test_metric_names_in_help_are_the_reports() -> None:
    from calibkit.report import METRICS

    assert list(cli.DEFAULT_METRICS) == list(METRICS)


def test_hf_without_the_extra_is_one_line_naming_the_install(capsys) -> None:
    try:
        import datasets

        if getattr(datasets, "load_dataset", None):
            pytest.skip("the Hugging Face datasets library is installed here")
    except ImportError:
        pass
    line = one_line_error(capsys, ["eval", "hf:sst2", "--limit", "5"])
    assert "pip install 'calibkit[hf]'" in line and "=" not in line.split("not installed")[1]


# -- rows with no text or no label: an error naming the lines, or --drop-missing ----------
@pytest.fixture
def gappy_reviews(tmp_path):
    """Reviews with an empty text cell (line 3), a blank one (line 5) and no label (line 6)."""
    data = tmp_path / "gappy.csv"
    data.write_text("review,stars\nAwful.,bad\n,bad\nGreat fun.,good\n   ,good\nFine.,\n"
                    "Loved it.,good\nDull.,bad\nA bore.,bad\nSuperb.,good\n")
    return data


@pytest.mark.parametrize("command", ["eval", "score"])
def test_missing_text_or_label_is_an_error_naming_the_lines_before_the_model(capsys, no_model, gappy_reviews,
                                                                              command) -> None:
    line = one_line_error(capsys, [command, str(gappy_reviews), "--text-column", "review", "--label-column", "stars"])
    assert "gappy.csv: empty 'review' on lines 3, 5; empty 'stars' on line 6 (3 of 9 rows)" in line, line
    assert "pass --drop-missing to drop those rows" in line and "missing=" not in line, line


def test_drop_missing_drops_the_rows_and_says_how_many(capsys, monkeypatch, gappy_reviews) -> None:
    def stop(args):
        raise ValueError("no model in this test")

    monkeypatch.setattr(cli, "_backend", stop)
    argv = ["eval", str(gappy_reviews), "--text-column", "review", "--label-column", "stars", "--drop-missing"]
    assert "no model in this test" in one_line_error(capsys, argv)
    err = capsys.readouterr().err
    assert cli.main(argv + ["--limit", "4"]) == 1
    err = capsys.readouterr().err
    assert "calibkit: --drop-missing: dropped 3 of 9 rows with no text or label (lines 3, 5, 6)\n" in err, err
    assert "calibkit: --limit 4: the first 4 of 6 rows" in err, err
    assert err.index("--drop-missing: dropped") < err.index("--limit 4")


def test_drop_missing_on_clean_data_says_nothing(capsys, monkeypatch, sorted_reviews) -> None:
    monkeypatch.setattr(cli, "_backend", lambda args: (_ for _ in ()).throw(ValueError("no model in this test")))
    for data in ([str(sorted_reviews), "--text-column", "review", "--label-column", "stars"], ["sentiment"]):
        assert cli.main(["score", *data, "--drop-missing"]) == 1
        err = capsys.readouterr().err
        assert "no model in this test" in err and "--drop-missing" not in err, err


def test_drop_missing_cannot_drop_every_row(capsys, no_model, tmp_path) -> None:
    data = tmp_path / "empty.csv"
    data.write_text("review,stars\n,bad\n ,good\n")
    line = one_line_error(capsys, ["eval", str(data), "--text-column", "review", "--label-column", "stars",
                                   "--drop-missing"])
    assert "lines 2, 3: empty 'review' (2 of 2 rows)" in line and "--text-column and --label-column" in line, line


# -- the other model backends and scaling out ----------------------------------------------
@pytest.mark.parametrize("argv, words", [
    (["score", "sentiment", "--device", "cpu"], ["--device", "give --backend hf"]),
    (["eval", "sentiment", "--dtype", "bfloat16", "--backend", "local"], ["--dtype", "give --backend hf"]),
    (["score", "sentiment", "--api-base", "http://127.0.0.1:9/v1", "--backend", "hf"], ["--api-base", "--backend hf"]),
    (["score", "sentiment", "--backend", "hf", "--threads", "2"], ["--threads", "--backend local"]),
    (["score", "sentiment", "--threads", "0"], ["--threads must be at least 1"]),
    (["eval", "sentiment", "--workers", "0"], ["--workers must be at least 1"]),
])
def test_model_flags_that_contradict_are_one_line(capsys, argv, words) -> None:
    line = one_line_error(capsys, argv)
    for w in words:
        assert w in line, line


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


# -- a study: several templates, verbalizers and models compared in one report -----------
TEMPLATE_A = "Review: {text}\\nSentiment:"
TEMPLATE_B = "{text}\\nThe review is"


def test_eval_with_two_templates_and_two_calibrators_compares_them_in_one_report(capsys, tmp_path) -> None:
    from calibkit import conformal, metrics
    from calibkit.report import split

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


def _template_score(calls):
    """A fake score whose numbers depend on the template and verbalizer (seeded by their text)."""
    def score(examples, template, verbalizer, backend, method="auto", *, k=None, check=True, **kw):
        calls.append(template.template)
        n, K = len(examples), len(verbalizer.classes)
        seed = sum(map(ord, template.template + repr(verbalizer.mapping) + backend.model_name))
        lp = np.random.default_rng(seed).normal(size=(n, K))
        return LabelScores.from_logprobs(lp, list(verbalizer.classes),
                                         provenance={"requests": n, "cache_hits": 0, "method": method})
    return score


class _NamedBackend(_FakeBackend):
    def __init__(self, name: str | None) -> None:
        self.model_name = name or "org/fake-model"


@pytest.fixture
def fake_models(monkeypatch):
    import calibkit.scoring

    calls: list[str] = []
    monkeypatch.setattr(calibkit.scoring, "score", _template_score(calls))
    monkeypatch.setattr(cli, "_backend", lambda args: _NamedBackend(args.model))
    return calls


STUDY_TOML = '''
dataset = "sentiment"
limit = 80
stratify = true
calibrators = ["temperature", "batch"]
metrics = ["accuracy", "nll"]
bootstrap = 30
baseline = "long/words/a"
alpha = 0.2
out = "from-the-file"

[templates]
short = "Review: {text}\\nSentiment:"
long = "{text}\\nThe review is"

[verbalizers.words]
negative = " negative"
positive = " positive"

[verbalizers.other]
negative = " bad"
positive = " good"
'''


@pytest.mark.filterwarnings("ignore:temperature reached the bound")  # the fake scores are noise
def test_a_toml_study_gives_the_numbers_of_the_same_flags(capsys, tmp_path, fake_models) -> None:
    config = tmp_path / "study.toml"
    config.write_text(STUDY_TOML)
    assert cli.main(["eval", "--config", str(config), "--model", "a", "--model", "b/c.gguf"]) == 0
    from_file = pd.read_csv(tmp_path / "from-the-file" / "comparison.csv", index_col=0)
    assert len(fake_models) == 8  # 2 templates × 2 verbalizers × 2 models, each scored once
    assert from_file.index[0] == "short · words · a · uncalibrated" and from_file.index[-1] == "long · other · c · batch"
    assert (from_file.loc["long · words · a · uncalibrated", [c for c in from_file.columns if c.startswith("diff_")]]
            == 0).all()
    flags = tmp_path / "flags"
    assert cli.main(["eval", "sentiment", "--limit", "80", "--stratify", "--calibrators", "temperature,batch",
                     "--metrics", "accuracy,nll", "--bootstrap", "30", "--alpha", "0.2", "--baseline", "t2/v1/a",
                     "--template", TEMPLATE_A, "--template", TEMPLATE_B,
                     "--verbalizer", '{"negative": " negative", "positive": " positive"}',
                     "--verbalizer", '{"negative": " bad", "positive": " good"}',
                     "--model", "a", "--model", "b/c.gguf", "--out", str(flags)]) == 0
    from_flags = pd.read_csv(flags / "comparison.csv", index_col=0)
    numbers = [c for c in from_file.columns if c not in ("config", "template", "verbalizer", "model")]
    assert from_flags.index[0] == "t1 · v1 · a · uncalibrated"
    pd.testing.assert_frame_equal(from_file[numbers].reset_index(drop=True), from_flags[numbers].reset_index(drop=True))
    # flags given on the command line win over the file
    assert cli.main(["eval", "--config", str(config), "--bootstrap", "10", "--template", TEMPLATE_A,
                     "--template", TEMPLATE_B, "--baseline", "t1/words", "--out", str(tmp_path / "over")]) == 0
    import json

    info = json.loads((tmp_path / "over" / "evaluation.json").read_text())
    assert info["bootstrap"] == 10 and info["baseline"] == "t1 · words · fake-model · uncalibrated"
    assert info["alpha"] == 0.2 and list(info["verbalizers"]) == ["words", "other"]


@pytest.mark.parametrize("toml, words", [
    ('templats = ["{text}"]\n', ["unknown key 'templats'", "the keys are: dataset,", "templates"]),
    ("limit = \"80\"\n", ["limit must be an integer", "'80'"]),
    ('method = "fast"\n', ["method must be one of auto, topk, exact"]),
    ("verbalizers = [3]\n", ["verbalizers[0] must be a table of class = form(s)"]),
    ("limit = 80\nlimit = 90\n", ["is not TOML"]),
])
def test_a_bad_study_file_is_one_line_naming_the_key(capsys, no_model, tmp_path, toml, words) -> None:
    config = tmp_path / "study.toml"
    config.write_text(toml)
    line = one_line_error(capsys, ["eval", "--config", str(config)])
    assert f"--config {config}" in line
    for w in words:
        assert w in line, line


@pytest.mark.parametrize("extra, words", [
    (["--template", TEMPLATE_A, "--template", TEMPLATE_B, "--baseline", "t3"],
     ["--baseline 't3' names no row", "'t1 · v1 · m1 · uncalibrated'"]),
    (["--template", TEMPLATE_A, "--template", TEMPLATE_A], ["--template", "given twice"]),
    (["--verbalizer", '{"negative": " no", "positive": " yes"}', "--verbalizer", "{negative}"],
     ["t1 · v2: --verbalizer must be a JSON object"]),
    (["--template", TEMPLATE_A, "--template", "Review: {review}"], ["t2 · v1", "needs the columns ['review']",
                                                                    "--template"]),
    (["--template", TEMPLATE_A, "--template", TEMPLATE_B, "--alpha", "1"], ["--alpha must lie between 0 and 1"]),
    (["--template", TEMPLATE_A, "--verbalizer", '{"neg": " no", "pos": " yes"}', "--verbalizer",
      '{"negative": " no", "positive": " yes"}'], ["t1 · v1: labels", "--verbalizer"]),
])
def test_a_bad_study_is_one_line_before_the_model(capsys, no_model, extra, words) -> None:
    line = one_line_error(capsys, ["eval", "sentiment", "--limit", "20", "--stratify", "--model", "m1", *extra])
    for w in words:
        assert w in line, line


@pytest.mark.filterwarnings("ignore:temperature reached the bound")
def test_baseline_or_alpha_make_the_comparison_report_for_one_configuration(capsys, tmp_path, fake_models) -> None:
    out = tmp_path / "one"
    assert cli.main(["eval", "sentiment", "--limit", "60", "--stratify", "--calibrators", "temperature,batch",
                     "--metrics", "accuracy", "--bootstrap", "10", "--baseline", "temperature", "--out", str(out)]) == 0
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert list(table["calibrator"]) == ["uncalibrated", "temperature", "batch"]
    assert table.loc["t1 · v1 · fake-model · temperature", "diff_accuracy"] == 0
    assert "baseline t1 · v1 · fake-model · temperature" in capsys.readouterr().out


# -- forms -----------------------------------------------------------------------------
def test_forms_prints_every_candidate_and_the_verbalizer_found(tmp_path, local_model) -> None:
    import json

    import numpy as np
    import pandas as pd

    import calibkit as ck
    from calibkit.datasets import load_dataset

    out = tmp_path / "forms.csv"
    r = run("forms", "sentiment", "--limit", "60", "--proposed", "2", "--cv", "3",
            "--candidates", '{"negative": [" negative", " bad"], "positive": [" positive", " good"]}',
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "calibkit: searching label words on 60 examples with google/gemma-3-270m (2 proposed per class" in r.stderr
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 8 and (table["source"] == "model").sum() == 4
    for form in table["form"]:
        assert form.strip() in r.stdout
    found = json.loads(r.stdout.split("found: --verbalizer '")[1].split("'\n")[0])
    best = table[table["chosen"]]
    assert found == dict(zip(best["class"], best["form"]))
    # the same search in Python gives the same table
    rows = load_dataset("sentiment").frame.head(60)
    res = ck.search_forms(rows[["text"]], rows["label"].tolist(), load_dataset("sentiment").template, local_model,
                          candidates={"negative": [" negative", " bad"], "positive": [" positive", " good"]},
                          n_proposed=2, cv=3, progress=False)
    assert res.table["form"].tolist() == table["form"].tolist()
    np.testing.assert_allclose(res.table["cv_nll"], table["cv_nll"], rtol=1e-5)


@pytest.mark.parametrize("argv, words", [
    (["--proposed", "-1"], "--proposed must be 0 or more"),
    (["--cv", "1"], "--cv must be at least 2"),
    (["--calibration", "isotonic+temperature"], "--calibration isotonic+temperature: the binning 'isotonic' cannot"),
    (["--candidates", "[1, 2]"], "--candidates must be a JSON object"),
    (["--candidates", "{nope"], "--candidates must be a JSON object of class -> form(s)"),
    (["--out", "table.txt"], "--out writes a .csv file"),
])
def test_forms_flags_are_checked_before_the_model_is_touched(capsys, no_model, argv, words) -> None:
    assert words in one_line_error(capsys, ["forms", "sentiment", *argv])


def test_forms_over_an_api_without_candidates_names_the_flag(capsys) -> None:
    from calibkit.cli import main

    code = main(["forms", "sentiment", "--limit", "20", "--stratify", "--api-base", "http://127.0.0.1:9/v1",
                 "--model", "x", "--candidates", '{"negative": [], "positive": [" good"]}'])
    err = capsys.readouterr().err
    assert code == 1 and "give --candidates for every class" in err and "Traceback" not in err
