"""calibkit.cli.flags: every flag checked (by the library) before the model is touched, messages in flags, the data flags."""

from __future__ import annotations

import re

import pytest

from calibkit import cli
from calibkit.datasets.formats import FORMATS

from cli_tools import limited_rows, one_line_error, open_with


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
    from calibkit.cli.score import load

    ds = load(args)
    assert ds.template.template == "Critique : {review}\nAvis é:" and ds.fields == ["review"]
    assert cli.unescape("tab\\there, a backslash \\\\n, \\d and ü") == "tab\there, a backslash \\n, \\d and ü"


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


def test_limit_says_what_it_took_and_shuffle_and_stratify_draw_seeded_samples(capsys, sorted_reviews) -> None:
    rows, err = limited_rows(capsys, sorted_reviews)
    assert "--limit 4: the first 4 of 12 rows (bad 4)" in err and "--shuffle or --stratify" in err
    strat, err = limited_rows(capsys, sorted_reviews, "--stratify")
    assert "stratified random sample (--seed 0) of 4 of 12 rows" in err and "bad 2" in err and "good 2" in err
    again, _ = limited_rows(capsys, sorted_reviews, "--stratify")
    other, _ = limited_rows(capsys, sorted_reviews, "--stratify", "--seed", "3")
    assert strat == again and strat != other
    shuffled, err = limited_rows(capsys, sorted_reviews, "--shuffle", "--seed", "1")
    assert "random sample (--seed 1) of 4 of 12 rows" in err and shuffled != rows


def test_timeout_and_max_in_flight_reach_the_client() -> None:
    args = cli.build_parser().parse_args(["score", "--api-base", "http://127.0.0.1:9/v1", "--model", "m",
                                          "--timeout", "2.5", "--max-in-flight", "3", "--no-cache"])
    from calibkit.cli.score import open_model

    with open_model(args) as client:
        assert (client.timeout, client.max_in_flight) == (2.5, 3)


def test_metric_names_in_help_are_the_reports() -> None:
    from calibkit.names import METRIC_NAMES
    from calibkit.evaluation import METRICS

    assert list(METRIC_NAMES) == list(METRICS)
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["eval"].format_help()
    assert ", ".join(METRIC_NAMES) in " ".join(help_text.split())


@pytest.mark.parametrize("command", ["eval", "score"])
def test_missing_text_or_label_is_an_error_naming_the_lines_before_the_model(capsys, no_model, gappy_reviews,
                                                                              command) -> None:
    line = one_line_error(capsys, [command, str(gappy_reviews), "--text-column", "review", "--label-column", "stars"])
    assert "gappy.csv: empty 'review' on lines 3, 5; empty 'stars' on line 6 (3 of 9 rows)" in line, line
    assert "pass --drop-missing to drop those rows" in line and "missing=" not in line, line


def test_drop_missing_drops_the_rows_and_says_how_many(capsys, monkeypatch, gappy_reviews) -> None:
    def stop(*args, **kwargs):
        raise ValueError("no model in this test")

    open_with(monkeypatch, stop)
    argv = ["eval", str(gappy_reviews), "--text-column", "review", "--label-column", "stars", "--drop-missing"]
    assert "no model in this test" in one_line_error(capsys, argv)
    err = capsys.readouterr().err
    assert cli.main(argv + ["--limit", "4"]) == 1
    err = capsys.readouterr().err
    assert "calibkit: --drop-missing: dropped 3 of 9 rows with no text or label (lines 3, 5, 6)\n" in err, err
    assert "calibkit: --limit 4: the first 4 of 6 rows" in err, err
    assert err.index("--drop-missing: dropped") < err.index("--limit 4")


def test_drop_missing_on_clean_data_says_nothing(capsys, monkeypatch, sorted_reviews) -> None:
    open_with(monkeypatch, lambda *a, **kw: (_ for _ in ()).throw(ValueError("no model in this test")))
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


@pytest.mark.parametrize("command", ["eval", "score"])
def test_a_template_ending_in_a_space_names_the_template_and_the_fix(capsys, local_model, command) -> None:
    # eval meets it first in the default contextual calibrator's content-free inputs ("N/A", ...)
    line = one_line_error(capsys, [command, "sentiment", "--limit", "8", "--stratify",
                                   "--template", "Review: {text}\\nSentiment: "])
    assert line.startswith(f"calibkit {command}: --template 'Review: {{text}}\\nSentiment: ' ends in a space and "
                           "the forms [' negative', ' positive'] start with a space"), line
    assert line.endswith("drop the trailing space: --template 'Review: {text}\\nSentiment:'"), line
    assert "--calibrators" not in line and "contextual" not in line and "start the forms with" not in line


def test_stratify_without_limit_takes_every_row(capsys, fake_models, tmp_path) -> None:
    assert cli.main(["eval", "sentiment", "--stratify", "--calibrators", "temperature", "--metrics", "accuracy",
                     "--bootstrap", "10", "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr()
    assert "calibkit: --stratify with no --limit: all 300 rows are taken" in out.err, out.err
    assert out.out.startswith("sentiment: 300 examples (150 to calibrate, 150 held out)"), out.out
    assert one_line_error(capsys, ["score", "sentiment", "--shuffle"]) == \
        "calibkit score: --shuffle draws the --limit sample; give --limit N"
