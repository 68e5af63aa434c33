"""The bundled data sets load by name, with their cards; load_dataset dispatches names, files and hf:."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from calibkit.datasets import (
    Dataset,
    DatasetFormatError,
    bundled_root,
    list_datasets,
    load_card_folder,
    load_dataset,
    read_card,
)
from calibkit.datasets.cards import CARD_KEYS
from helpers import SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize("name", ["sentiment", "topic", "truefalse"])
def test_generators_rewrite_the_same_file(name: str, tmp_path: Path) -> None:
    # Run a copy of the script in a scratch folder so the shipped file is never touched.
    (tmp_path / name).mkdir()
    (tmp_path / name / "make.py").write_bytes((ROOT / "datasets" / name / "make.py").read_bytes())
    subprocess.run([sys.executable, str(tmp_path / name / "make.py")], check=True, capture_output=True, cwd=tmp_path)
    assert (tmp_path / name / "data.csv").read_bytes() == (ROOT / "datasets" / name / "data.csv").read_bytes()


@pytest.mark.parametrize("name", ["sentiment", "topic", "truefalse"])
def test_each_folder_holds_data_card_and_script(name: str) -> None:
    folder = ROOT / "datasets" / name
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == ["README.md", "data.csv", "make.py"]
    card = read_card(folder / "README.md")
    assert set(CARD_KEYS) <= set(card.meta)
    assert card.meta["license"] == "CC0-1.0" and "make.py" in card.meta["source"]
    # The prose below the front matter states the same template, as it is written in the front matter.
    prose = card.text.split("\n---\n", 1)[1]
    assert json.dumps(card.meta["template"])[1:-1] in prose
    assert "tools/" not in card.text and "calibkit/datasets/" not in card.text


def test_the_top_level_folder_is_not_a_package() -> None:
    # A datasets/__init__.py would make it a regular package that shadows the Hugging Face library.
    assert not (ROOT / "datasets" / "__init__.py").exists()
    assert bundled_root().name in ("datasets", "bundled")


def test_the_settings_come_from_the_card() -> None:
    ds = load_dataset("topic")
    assert ds.template.template == "News: {text}\nCategory:"
    assert ds.verbalizer.mapping == {"World": [" World"], "Sports": [" Sports"], "Business": [" Business"],
                                     "Sci/Tech": [" Technology"]}
    assert ds.label_column == "label" and ds.source == "bundled"
    assert ds.card == (bundled_root() / "topic" / "README.md").read_text(encoding="utf-8")


CARD = """---
template: "Claim: {claim}\\nVerdict:"
fields: ["claim"]
label_column: verdict
verbalizer:
  "true": [" True", " Yes"]
  "false": " False"
license: CC0-1.0
source: written for this test
---
# claims
"""


def write_folder(folder: Path, card: str = CARD, data: str = "claim,verdict\nSnow is cold.,true\nFire is cold.,false\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(card, encoding="utf-8")
    (folder / "data.csv").write_text(data, encoding="utf-8")
    return folder


def test_a_card_folder_loads_by_path(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "claims")
    ds = load_dataset(folder)
    assert ds.name == "claims" and ds.fields == ["claim"] and ds.label_column == "verdict"
    assert ds.classes == ["true", "false"] and list(ds.y) == ["true", "false"]  # strings, not booleans
    assert ds.verbalizer.mapping["true"] == [" True", " Yes"]
    assert ds.template.format(ds.X.iloc[0]) == "Claim: Snow is cold.\nVerdict:"
    with pytest.raises(TypeError, match="takes no options"):
        load_dataset(folder, text_column="claim")


@pytest.mark.parametrize("edit,pattern", [
    (lambda c: c.replace("license: CC0-1.0\n", ""),
     r"claims/README\.md: the front matter has no 'license' key; add it between the --- lines"),
    (lambda c: c.replace("source: written for this test\n", ""), r"no 'source' key"),
    (lambda c: c.replace("label_column: verdict\n", ""), r"no 'label_column' key.*label_column: label"),
    (lambda c: c.replace('fields: ["claim"]', "fields: claim"), r"'fields' is 'claim', not a non-empty list"),
    (lambda c: c.replace('fields: ["claim"]', 'fields: ["text"]'), r"'fields' \['text'\] are not the fields of its template"),
    (lambda c: c.replace('fields: ["claim"]', 'fields: ["claim"'), r"README\.md, line 3: the value of 'fields' is not valid JSON"),
    (lambda c: c.replace('  "false": " False"\n', ""), r"'verbalizer' cannot be used.*at least two classes"),
    (lambda c: c.replace('  "false": " False"', '  "false": {"x": 1}'), r"form for 'false' is {'x': 1}"),
    (lambda c: c.replace("license: CC0-1.0", "license: CC0-1.0\nlicense: MIT"), r"line 9: 'license' is given twice"),
    (lambda c: c.replace("template:", "  template:"), r"line 2: an indented line"),
    (lambda c: c.replace("source: written", "source:written"), r"line 9: expected 'key: value'"),
    (lambda c: c[4:], r"no front matter: a card begins with a line '---'"),
    (lambda c: c.replace("---\n# claims", "# claims"), r"the front matter is not closed"),
])
def test_a_bad_card_names_the_file_and_the_key(tmp_path: Path, edit, pattern: str) -> None:
    folder = write_folder(tmp_path / "claims", edit(CARD))
    with pytest.raises(DatasetFormatError, match=pattern):
        load_card_folder(folder)


def test_bad_data_beside_a_card(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "claims", data="claim,verdict\nSnow is cold.,maybe\n")
    with pytest.raises(DatasetFormatError, match=r"data\.csv: the label\(s\) \['maybe'\] are not classes.*README\.md"):
        load_card_folder(folder)
    write_folder(folder, data="text,verdict\nSnow is cold.,true\n")
    with pytest.raises(DatasetFormatError, match=r"no column\(s\) \['claim'\].*fix 'fields' or 'label_column'"):
        load_card_folder(folder)
    (folder / "data.csv").unlink()
    with pytest.raises(FileNotFoundError, match="no data.csv beside the card"):
        load_card_folder(folder)


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


def test_a_card_folder_with_missing_rows(tmp_path: Path) -> None:
    import shutil

    from calibkit.datasets import MissingValuesError, MissingValuesWarning, bundled_root

    folder = tmp_path / "tf"
    shutil.copytree(bundled_root() / "truefalse", folder)
    data = folder / "data.csv"
    lines = data.read_text(encoding="utf-8").splitlines()
    lines[2] = ",true"  # line 3: no text
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(MissingValuesError, match=r"data\.csv, line 3: empty '\w+' \(1 of 400 rows\)"):
        load_dataset(folder)
    with pytest.warns(MissingValuesWarning, match=r"dropped 1 of 400 rows"):
        ds = load_dataset(folder, missing="drop")
    assert len(ds) == 399 and ds.dropped.rows == [3]


def test_settle_missing_after_a_new_template() -> None:
    import pandas as pd

    from calibkit.datasets import MissingValuesError

    ds = load_dataset("sentiment").head(4)
    ds.frame = ds.frame.assign(topic=["a", None, "c", float("nan")])
    ds.fields = ["text", "topic"]
    with pytest.raises(MissingValuesError, match=r"rows 1, 3: empty 'topic' \(2 of 4 rows\)"):
        ds.settle_missing()
    with pytest.warns(UserWarning, match="dropped 2 of 4"):
        kept = ds.settle_missing("drop")
    assert len(kept) == 2 and kept.dropped.unit == "row" and isinstance(kept.frame, pd.DataFrame)
    assert load_dataset("sentiment").settle_missing().dropped is None


def test_hf_rows_with_no_text_are_named_by_position(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    import pandas as pd

    from calibkit.datasets import MissingValuesError

    class Split:
        features: dict = {}

        def to_pandas(self) -> pd.DataFrame:
            return pd.DataFrame({"text": ["good", None, "bad", "", "dull"], "label": ["pos", "neg", None, "pos", "neg"]})

    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name, config, split=None, **kw: Split()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(MissingValuesError, match=r"hf:fake \(validation\): empty 'text' on rows 1, 3; "
                                                 r"empty 'label' on row 2 \(3 of 5 rows\)"):
        load_dataset("hf:fake", split="validation")
    with pytest.warns(UserWarning, match="dropped 3 of 5"):
        ds = load_dataset("hf:fake", split="validation", missing="drop")
    assert ds.frame.text.tolist() == ["good", "dull"] and ds.dropped.rows == [1, 2, 3] and ds.classes == ["neg", "pos"]


def test_stratify_without_limit_takes_every_row_and_shuffle_needs_a_limit() -> None:
    from calibkit.datasets.selection import select

    ds = select("truefalse", stratify=True)
    assert len(ds.frame) == 400 and ds.label_counts() == load_dataset("truefalse").label_counts()
    with pytest.raises(ValueError, match=r"shuffle=True draws the limit= sample; give limit=N"):
        select("truefalse", shuffle=True)
