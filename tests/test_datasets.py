"""The bundled data sets load by name, with their cards; load_dataset dispatches names, files and hf:."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from calibkit.datasets import Dataset, list_datasets, load_dataset
from helpers import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list_datasets())
def test_bundled_sets_load_with_a_card(name: str) -> None:
    ds = load_dataset(name)
    assert len(ds.frame) >= 200
    assert set(ds.frame[ds.label_column]) == set(ds.verbalizer.classes)
    assert "License" in ds.card and "Size" in ds.card and "CC0" in ds.card
    assert ds.template.fields == ds.fields
    assert ds.frame[ds.fields[0]].is_unique
    # The card's stated balance is the file's.
    for cls, count in ds.label_counts().items():
        assert f"{count} {cls}" in ds.card.replace("`", "") or f"{count} {cls.lower()}" in ds.card.lower()


def test_three_sets_ship() -> None:
    assert {"sentiment", "topic", "truefalse"} <= set(list_datasets())


def test_truefalse_labels_stay_strings() -> None:
    # pandas would read "true"/"false" as booleans, which are not the verbalizer's classes.
    ds = load_dataset("truefalse")
    assert ds.classes == ["false", "true"]
    assert all(isinstance(v, str) for v in ds.y)
    assert ds.label_counts() == {"false": 200, "true": 200}
    assert set(ds.frame["kind"]) == {"arithmetic", "capitals", "continents", "animals", "everyday"}


@pytest.mark.parametrize("script,name", [("make_topic.py", "topic"), ("make_truefalse.py", "truefalse"),
                                         ("make_sentiment.py", "sentiment")])
def test_generators_rewrite_the_same_file(script: str, name: str, tmp_path: Path) -> None:
    # Run a copy of the script in a scratch tree so the shipped file is never touched.
    (tmp_path / "tools").mkdir()
    (tmp_path / "calibkit" / "datasets").mkdir(parents=True)
    for f in (script, "_bundled.py"):
        (tmp_path / "tools" / f).write_text((ROOT / "tools" / f).read_text())
    subprocess.run([sys.executable, str(tmp_path / "tools" / script)], check=True, capture_output=True)
    assert (tmp_path / "calibkit" / "datasets" / f"{name}.csv").read_bytes() == \
        (ROOT / "calibkit" / "datasets" / f"{name}.csv").read_bytes()


@pytest.mark.model
def test_bundled_forms_are_single_tokens() -> None:
    import calibkit as ck

    model = ck.LocalModel(cache=False)
    for name in list_datasets():
        for form in load_dataset(name).verbalizer.all_forms:
            assert len(model.tokenize(form)) == 1, (name, form)


def test_unknown_name() -> None:
    with pytest.raises(KeyError, match="bundled ones are"):
        load_dataset("imdb")


def test_bundled_name_takes_no_options() -> None:
    with pytest.raises(TypeError, match="takes no options"):
        load_dataset("topic", text_column="x")


def test_head_and_sample_keep_the_template() -> None:
    ds = load_dataset("topic")
    head = ds.head(5)
    assert isinstance(head, Dataset) and len(head) == 5 and head.template == ds.template
    a, b = ds.sample(50, random_state=1), ds.sample(50, random_state=1)
    assert list(a.frame.text) == list(b.frame.text)
    assert list(a.frame.text) != list(ds.head(50).frame.text)
    assert len(ds.sample(10_000)) == len(ds)


def test_a_path_dispatches_to_the_reader(tmp_path: Path) -> None:
    p = tmp_path / "reviews.csv"
    with p.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "stars"])
        w.writerows([["great", "5"], ["awful", "1"], ["fine", "5"]])
    ds = load_dataset(p, text_column="review", label_column="stars", label_names={"1": "bad", "5": "good"})
    assert ds.classes == ["bad", "good"] and list(ds.y) == ["good", "bad", "good"]
    assert ds.source == str(p)


@pytest.mark.skipif(not (SHARED_DATA / "sst2" / "dev.txt").exists(), reason="../shared/data/sst2 is not here")
def test_a_shared_file_by_path() -> None:
    ds = load_dataset(str(SHARED_DATA / "sst2" / "dev.txt"))
    assert ds.name == "sst2:dev.txt" and len(ds) == 872
