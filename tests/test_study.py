"""calibkit.study: a study built and run in Python gives what ``calibkit eval`` gives.

The value-by-value comparisons run the real embedded model through both (the command in
process, as a user's shell would run it); the rules of the object run on an in-memory
backend.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from calibkit import cli
from calibkit.comparison import Comparison
from calibkit.study import Study, StudyResults

TEMPLATES = {"plain": "Review: {text}\nSentiment:", "asked": "{text}\nThe review is"}


@pytest.fixture(scope="module")
def two_templates(local_model):
    """A study of two templates with two calibrators on 40 SST-2-like reviews, run once."""
    study = Study("sentiment", limit=40, stratify=True, templates=TEMPLATES, models=[local_model],
                  calibrators=["temperature", "contextual"], bootstrap=60, progress=False)
    return study.run()


def test_a_python_study_has_the_numbers_of_calibkit_eval(two_templates, tmp_path, capsys) -> None:
    config = tmp_path / "study.toml"
    config.write_text('dataset = "sentiment"\nlimit = 40\nstratify = true\nbootstrap = 60\n'
                      'calibrators = ["temperature", "contextual"]\n'
                      '[templates]\nplain = "Review: {text}\\nSentiment:"\nasked = "{text}\\nThe review is"\n')
    assert cli.main(["eval", "--config", str(config), "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    from_cli = pd.read_csv(tmp_path / "r" / "comparison.csv", index_col=0)
    table = two_templates.table
    assert list(from_cli.index) == list(table.index)
    assert list(table.index)[:3] == [f"plain · v1 · gemma-3-270m · {c}" for c in ("uncalibrated", "temperature",
                                                                                 "contextual")]
    numeric = [c for c in table.columns if table[c].dtype.kind == "f"]
    assert {"nll", "nll_low", "diff_nll_high", "coverage", "set_size", "aurc"} <= set(numeric)
    np.testing.assert_allclose(from_cli[numeric].to_numpy(), table[numeric].to_numpy(), rtol=1e-5, atol=1e-9)
    probs = pd.read_csv(tmp_path / "r" / "probabilities.csv")
    mine = two_templates.probabilities()
    np.testing.assert_allclose(probs.filter(like="proba[").to_numpy(), mine.filter(like="proba[").to_numpy(),
                               rtol=1e-5)


def test_one_configuration_is_a_study_of_one_row_with_the_calibration_report(local_model, tmp_path, capsys) -> None:
    results = Study("sentiment", limit=40, stratify=True, models=local_model, calibrators="temperature",
                    bootstrap=50, metrics=["accuracy", "nll", "ece"], progress=False).run()
    assert results.single and "diff_nll" not in results.table.columns and results.alpha is None
    assert cli.main(["eval", "--limit", "40", "--stratify", "--calibrators", "temperature", "--bootstrap", "50",
                     "--metrics", "accuracy,nll,ece", "--out", str(tmp_path / "r")]) == 0
    assert "model google/gemma-3-270m" in capsys.readouterr().out
    from_cli = pd.read_csv(tmp_path / "r" / "metrics.csv", index_col=0)
    ev = results.evaluation_of()
    assert list(from_cli.index) == list(ev.table.index) == ["uncalibrated", "temperature"]
    np.testing.assert_allclose(from_cli[ev.table.columns].to_numpy(), ev.table.to_numpy(dtype=float), rtol=1e-5, atol=1e-9)
    row = "t1 · v1 · gemma-3-270m · temperature"
    assert results.table.loc[row, "nll"] == ev.table.loc["temperature", "nll"]
    assert ev.info["sample"] == "a stratified random sample (seed=0) of 40 of 300 rows"
    assert ev.info["template"] == "Review: {text}\nSentiment:"
    written = sorted(p.name for p in results.write_report(tmp_path / "again").iterdir())
    assert "metrics.csv" in written and "comparison.csv" not in written


def test_the_results_draw_and_write_the_comparison_report(two_templates, tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    fig = two_templates.plot_reliability()
    assert len([ax for ax in fig.axes if ax.get_title()]) == len(two_templates.probs) == 6
    ax = two_templates.plot_risk_coverage(["plain · v1 · gemma-3-270m · uncalibrated"])
    assert len(ax.get_lines()) >= 1 and "AURC" in ax.get_legend().get_texts()[0].get_text()
    per_class = two_templates.plot_per_class()
    assert len([a for a in per_class.axes if a.get_title()]) >= 2
    folder = two_templates.write_report(tmp_path / "report", title="my study")
    assert {"comparison.csv", "index.html", "risk_coverage.png", "reliability.png"} <= {p.name for p in folder.iterdir()}
    assert "my study" in (folder / "index.html").read_text()
    assert isinstance(two_templates, Comparison)
    info = json.loads((folder / "evaluation.json").read_text())
    assert info["templates"] == TEMPLATES and info["baseline"] == "plain · v1 · gemma-3-270m · uncalibrated"


# -- the object's rules, on an in-memory backend ---------------------------------------------
def _table(texts: list[str], template: str = "{text}") -> dict:
    rng = np.random.default_rng(0)
    return {template.format(text=t): {" no": float(rng.normal()), " yes": float(rng.normal())} for t in texts}


@pytest.fixture
def memory(table_backend):
    texts = [f"example {i}" for i in range(40)]
    y = ["yes" if i % 2 else "no" for i in range(40)]
    backend = table_backend(_table(texts))
    return texts, y, backend


def test_texts_with_labels_a_dataframe_and_a_file_are_data(memory, tmp_path) -> None:
    texts, y, backend = memory
    verbalizer = {"no": " no", "yes": " yes"}
    options = dict(templates="{text}", verbalizers=verbalizer, models=backend, calibrators="temperature",
                   bootstrap=20, metrics=["accuracy", "nll"], progress=False)
    from_lists = Study(texts, y, **options).run()
    from_frame = Study(pd.DataFrame({"text": texts, "label": y}), **options).run()
    path = tmp_path / "data.csv"
    pd.DataFrame({"text": texts, "label": y}).to_csv(path, index=False)
    from_file = Study(str(path), **options).run()
    for other in (from_frame, from_file):
        pd.testing.assert_frame_equal(from_lists.table, other.table)
    assert isinstance(from_lists, StudyResults) and from_lists.single


@pytest.mark.parametrize("kwargs, words", [
    ({"calibrators": ["temperature", "tempreature"]}, ["calibrators=", "'tempreature'"]),
    ({"bootstrap": 0}, ["bootstrap=", "at least 1"]),
    ({"calibration_fraction": 1.0}, ["calibration_fraction="]),
    ({"alpha": 1.5}, ["alpha=", "between 0 and 1"]),
    ({"metrics": ["nll", "auroc"]}, ["metrics=", "'auroc'"]),
    ({"method": "greedy"}, ["method=", "auto, topk, exact"]),
    ({"templates": ["{text}", "{text}"]}, ["templates=", "twice"]),
    ({"timeout": 5}, ["timeout=", "api_base="]),
    ({"backend": "hf", "threads": 2}, ["threads="]),
])
def test_bad_settings_are_errors_naming_the_parameter_before_anything_loads(kwargs, words) -> None:
    with pytest.raises(ValueError) as e:
        Study("no-such-data-set", **kwargs)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_in_memory_data_needs_a_template_and_one_label_per_text(memory) -> None:
    texts, y, backend = memory
    with pytest.raises(ValueError, match="template="):
        Study(texts, y, models=backend, calibrators="temperature").run()
    with pytest.raises(ValueError, match="y= has 39 labels for 40 examples"):
        Study(texts, y[:-1], templates="{text}", verbalizers={"no": " no", "yes": " yes"}, models=backend,
              calibrators="temperature").run()


def test_names_of_templates_verbalizers_and_models(memory) -> None:
    texts, y, backend = memory
    s = Study(texts, y, templates=["{text}", "Q: {text}"], verbalizers={"words": {"no": " no", "yes": " yes"}},
              models={"mine": backend}, calibrators="temperature")
    assert list(s.templates) == ["t1", "t2"] and list(s.verbalizers) == ["words"] and list(s.models) == ["mine"]
    assert not s.single and "t1" in repr(s)
    paths = Study(models=["models/a.gguf", "org/b", "c/a.GGUF"])
    assert list(paths.models) == ["a", "b", "a-2"]


def test_the_second_run_asks_the_model_nothing(table_backend, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CALIBKIT_CACHE_DIR", str(tmp_path))
    texts = [f"example {i}" for i in range(30)]
    y = ["yes" if i % 3 else "no" for i in range(30)]
    backend = table_backend(_table(texts), cache=None)
    study = Study(texts, y, templates="{text}", verbalizers={"no": " no", "yes": " yes"}, models=backend,
                  calibrators="temperature", bootstrap=10, metrics=["nll"], progress=False)
    first = study.run()
    asked = len(backend.asked)
    again = study.run()
    assert asked and len(backend.asked) == asked
    pd.testing.assert_frame_equal(first.table, again.table)
