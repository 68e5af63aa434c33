"""calibkit.cli.config: a study in a TOML file gives the numbers of the same flags."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from calibkit import cli

from cli_tools import STUDY_TOML, TEMPLATE_A, TEMPLATE_B, one_line_error


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
    ('[templates]\nplain = "{text}:"\n[verbalizers.plain]\nnegative = " no"\npositive = " yes"\n',
     ["'plain' names a template and a verbalizer; give them different names"]),
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
     ["v2: --verbalizer must be a JSON object"]),
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


README_STUDY = '''
dataset = "sentiment"
stratify = true
calibrators = ["temperature"]
metrics = ["accuracy"]
bootstrap = 10
baseline = "plain"
out = "report"
[templates]
plain = "Review: {text}\\nSentiment:"
question = "{text}\\nWas that review positive or negative? Answer:"
[verbalizers.words]
negative = " negative"
positive = " positive"
[verbalizers.other]
negative = " bad"
positive = " good"
'''


@pytest.mark.filterwarnings("ignore:temperature reached the bound")  # the fake scores are noise
def test_the_readme_study_with_a_second_verbalizer_and_no_limit(capsys, tmp_path, fake_models) -> None:
    config = tmp_path / "study.toml"
    config.write_text(README_STUDY)
    assert cli.main(["eval", "--config", str(config)]) == 0
    info = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    # "plain" is the plain template with the first verbalizer; stratify = true with no limit takes every row
    assert info["baseline"] == "plain · words · fake-model · uncalibrated"
    assert capsys.readouterr().out.startswith("sentiment: 300 examples (150 to calibrate, 150 held out)")
    config.write_text(README_STUDY.replace('baseline = "plain"', 'baseline = "other/temperature"')
                      .replace('out = "report"', 'out = "other"'))
    assert cli.main(["eval", "--config", str(config)]) == 0
    info = json.loads((tmp_path / "other" / "evaluation.json").read_text())
    assert info["baseline"] == "plain · other · fake-model · temperature"
