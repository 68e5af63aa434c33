"""Readers for the public benchmark formats and for plain CSV/JSONL, on real files and on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calibkit.datasets import DatasetFormatError, MissingValuesError, MissingValuesWarning, load_dataset
from calibkit.datasets.formats import (
    infer_format,
    read_agnews,
    read_file,
    read_path,
    read_sst2,
    read_superglue,
    read_trec,
)
from helpers import SHARED_DATA

needs = {name: pytest.mark.skipif(not (SHARED_DATA / name).exists(), reason=f"../shared/data/{name} is not here")
         for name in ("sst2", "agnews", "rte")}


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# -- the shared files, read in place ---------------------------------------------------
@needs["sst2"]
def test_sst2_dev() -> None:
    ds = read_sst2(SHARED_DATA / "sst2" / "dev.txt")
    lines = (SHARED_DATA / "sst2" / "dev.txt").read_text().splitlines()
    assert len(ds) == len(lines) == 872
    assert ds.frame.iloc[0].to_dict() == {"text": lines[0][2:], "label": "negative"}
    assert ds.label_counts() == {"negative": sum(l[0] == "0" for l in lines), "positive": sum(l[0] == "1" for l in lines)}
    assert ds.template.format(ds.X.iloc[0]).endswith("\nSentiment:")


@needs["agnews"]
def test_agnews_test_csv() -> None:
    ds = read_agnews(SHARED_DATA / "agnews" / "test.csv")
    assert len(ds) == 7600 and ds.fields == ["title", "description"]
    assert ds.label_counts() == {"World": 1900, "Sports": 1900, "Business": 1900, "Sci/Tech": 1900}
    first = ds.frame.iloc[0]
    assert first.label == "Business" and first.title == "Fears for T N pension after talks"
    # The corpus's escapes are undone: no backslashes or bare "#36;" entities are left.
    assert not ds.frame.description.str.contains(r"\\|#36;|#39;", regex=True).any()
    assert "$10 million" in ds.frame.description.iloc[1]
    raw = read_agnews(SHARED_DATA / "agnews" / "test.csv", clean=False)
    assert "#36;10 million" in raw.frame.description.iloc[1]


@needs["rte"]
def test_rte_val_jsonl() -> None:
    ds = read_superglue(SHARED_DATA / "rte" / "val.jsonl")
    assert ds.name == "rte:val.jsonl" and len(ds) == 277
    assert ds.classes == ["entailment", "not_entailment"]
    assert ds.fields == ["premise", "hypothesis"]
    prompt = ds.template.format(ds.X.iloc[0])
    assert prompt.startswith("Dana Reeve") and "Question: Christopher Reeve had an accident. True or False?" in prompt


@needs["sst2"]
@needs["agnews"]
@needs["rte"]
def test_formats_are_inferred_from_the_files() -> None:
    assert infer_format(SHARED_DATA / "sst2" / "train.txt") == "sst2"
    assert infer_format(SHARED_DATA / "agnews" / "test.csv") == "agnews"
    assert infer_format(SHARED_DATA / "rte" / "train.jsonl") == "rte"
    assert load_dataset(str(SHARED_DATA / "rte" / "train.jsonl")).name == "rte:train.jsonl"


# -- small files written here ----------------------------------------------------------
def test_trec_lines(tmp_path: Path) -> None:
    p = write(tmp_path, "TREC_10.label", "DESC:manner How did serfdom develop in and then leave Russia ?\n"
              "NUM:date When was Ozzy Osbourne born ?\n\nLOC:city What is the capital of Peru ?\n")
    assert infer_format(p) == "trec"
    ds = read_path(p)
    assert ds.frame.iloc[0].to_dict() == {"question": "How did serfdom develop in and then leave Russia ?",
                                          "label": "DESC", "fine": "manner"}
    assert list(ds.y) == ["DESC", "NUM", "LOC"]
    assert ds.classes == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


def test_trec_latin1(tmp_path: Path) -> None:
    p = tmp_path / "trec.label"
    p.write_bytes("HUM:ind Who wrote Les Mis\xe9rables ?\n".encode("latin-1"))
    assert read_trec(p).frame.question[0] == "Who wrote Les Misérables ?"


def test_cb_jsonl_with_index_labels(tmp_path: Path) -> None:
    records = [{"premise": "It rained.", "hypothesis": "The ground is wet.", "label": 0},
               {"premise": "It rained.", "hypothesis": "It was dry.", "label": 1},
               {"premise": "It rained.", "hypothesis": "It was Monday.", "label": 2}]
    p = write(tmp_path, "val.jsonl", "\n".join(json.dumps(r) for r in records) + "\n")
    ds = read_superglue(p, task="cb")
    assert list(ds.y) == ["entailment", "contradiction", "neutral"]
    assert ds.verbalizer.all_forms == [" True", " False", " Neither"]
    # Without task=, string labels that only CB has tell it apart from RTE.
    q = write(tmp_path, "dev.jsonl", json.dumps({**records[2], "label": "neutral"}) + "\n")
    assert read_superglue(q).name == "cb:dev.jsonl"
    cb_dir = tmp_path / "CB"
    cb_dir.mkdir()
    r = write(cb_dir, "train.jsonl", json.dumps({**records[0], "label": "entailment"}) + "\n")
    assert infer_format(r) == "cb"


CB_RECORDS = [{"premise": "It rained all night.", "hypothesis": "The ground is wet.", "label": "entailment"},
              {"premise": "It rained all night.", "hypothesis": "The ground is dry.", "label": "contradiction"},
              {"premise": "It rained all night.", "hypothesis": "It was a Monday.", "label": "neutral"}]


@pytest.mark.parametrize("where", ["val.jsonl", "rte/val.jsonl", "superglue/train.jsonl"])
def test_cb_is_told_from_rte_by_its_labels(tmp_path: Path, where: str) -> None:
    # A CB file is CB by its labels wherever it lies, even in a folder named rte: RTE has no
    # contradiction or neutral, and reading it as RTE would fail on its second line.
    p = tmp_path / where
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(json.dumps(r) for r in CB_RECORDS) + "\n", encoding="utf-8")
    assert infer_format(p) == "cb"
    for ds in (load_dataset(p), read_path(p), read_path(p, format="superglue"), read_superglue(p)):
        assert ds.name == f"cb:{p.name}"
        assert ds.classes == ["entailment", "contradiction", "neutral"]
        assert list(ds.y) == ["entailment", "contradiction", "neutral"]
        assert ds.verbalizer.all_forms == [" True", " False", " Neither"]
    # CB's own indices: 2 (neutral) is CB's alone.
    q = write(tmp_path, "indices.jsonl", "\n".join(json.dumps({**r, "label": i}) for i, r in enumerate(CB_RECORDS)))
    assert infer_format(q) == "cb" and list(read_path(q).y) == ["entailment", "contradiction", "neutral"]


def test_rte_labels_and_ambiguous_files(tmp_path: Path) -> None:
    rte = [{"premise": "p", "hypothesis": "h", "label": "entailment"}, {"premise": "p", "hypothesis": "h", "label": "not_entailment"}]
    (tmp_path / "cb").mkdir()
    p = write(tmp_path / "cb", "val.jsonl", "\n".join(json.dumps(r) for r in rte))
    assert infer_format(p) == "rte" and read_path(p).name == "rte:val.jsonl"
    # Labels that both have (entailment, 0, 1): the path decides, else RTE.
    only = json.dumps(rte[0]) + "\n"
    assert infer_format(write(tmp_path / "cb", "dev.jsonl", only)) == "cb"
    assert infer_format(write(tmp_path, "dev.jsonl", only)) == "rte"
    # Told explicitly, the task holds: CB labels in format="rte" are an error naming the line.
    cb = write(tmp_path, "x.jsonl", "\n".join(json.dumps(r) for r in CB_RECORDS))
    with pytest.raises(DatasetFormatError, match=r"x\.jsonl, line 2: unknown RTE label 'contradiction'"):
        read_path(cb, format="rte")


def test_formats_lists_every_format_read_path_takes(tmp_path: Path) -> None:
    from calibkit.datasets import FORMATS
    from calibkit.datasets.formats import FORMAT_DESCRIPTIONS

    assert tuple(FORMAT_DESCRIPTIONS) == FORMATS
    assert {"sst2", "agnews", "trec", "rte", "cb", "superglue", "csv", "tsv", "jsonl"} <= set(FORMATS)
    assert all(isinstance(v, str) and v for v in FORMAT_DESCRIPTIONS.values())
    p = write(tmp_path, "notes.txt", "hello world\n")
    for fmt in FORMATS:
        # Each is accepted (the file is wrong for most, which is a different error).
        try:
            read_path(p, format=fmt)
        except ValueError as e:
            assert "is not one calibkit reads" not in str(e), fmt
    with pytest.raises(ValueError, match=r"format='nope' is not one calibkit reads; use one of \[.*'cb'.*'superglue'"):
        read_path(p, format="nope")


def test_generic_csv_multi_field(tmp_path: Path) -> None:
    p = write(tmp_path, "pairs.csv", "question,passage,answer\nIs ice cold?,Ice is frozen.,yes\n"
              "Is fire cold?,Fire burns.,no\n")
    ds = read_file(p, text_column=["question", "passage"], label_column="answer")
    assert ds.fields == ["question", "passage"] and ds.classes == ["no", "yes"]
    assert ds.template.format(ds.X.iloc[0]) == "Question: Is ice cold?\nPassage: Ice is frozen.\nAnswer:"
    assert ds.verbalizer.all_forms == [" no", " yes"]


def test_generic_jsonl_with_label_names_list(tmp_path: Path) -> None:
    p = write(tmp_path, "x.jsonl", '{"sentence": "good", "label": 1}\n{"sentence": "bad", "label": 0}\n')
    ds = load_dataset(p, label_names=["negative", "positive"], verbalizer={"negative": " bad", "positive": " good"})
    assert list(ds.y) == ["positive", "negative"] and ds.fields == ["sentence"]


def test_generic_tsv_and_custom_template(tmp_path: Path) -> None:
    p = write(tmp_path, "x.tsv", "review\tlabel\na, b\tpos\nc\tneg\n")
    ds = read_file(p, template="Text: {review}\nMood:")
    assert ds.fields == ["review"] and list(ds.frame.review) == ["a, b", "c"]


# -- bad input: the error names the file, the line and the fix ---------------------------
@pytest.mark.parametrize("name,text,fmt,pattern", [
    ("s.txt", "1 fine\n0fine\n", "sst2", r"s\.txt, line 2: expected '<label> <sentence>'.*0 or 1, a space"),
    ("s.txt", "1 fine\n0\n", "sst2", r"s\.txt, line 2: empty 'text' \(1 of 2 rows\).*missing='drop'"),
    ("s.txt", "1 fine\n2 odd\n", "sst2", r"s\.txt, line 2: unknown SST-2 label '2'.*read_file"),
    ("a.csv", "Class Index,Title,Description\n1,t,d\n5,t,d\n", "agnews", r"a\.csv, line 3: unknown AG News class index '5'"),
    ("a.csv", "1,t,d\n2,t\n", "agnews", r"a\.csv, line 2: expected 3 cells.*quote cells"),
    ("t.label", "DESC:manner How ?\nFOO:bar Why ?\n", "trec", r"t\.label, line 2: unknown TREC coarse class 'FOO'.*ABBR"),
    ("t.label", "DESC:manner How ?\njust a question\n", "trec", r"t\.label, line 2: expected 'COARSE:fine question'"),
    ("r.jsonl", '{"premise": "p", "hypothesis": "h", "label": "entailment"}\n{"premise": "p", "hypothesis": "h"',
     "rte", r"r\.jsonl, line 2: not valid JSON"),
    ("r.jsonl", '{"premise": "p", "hypothesis": "h", "label": -1}\n', "rte", r"r\.jsonl, line 1: no label.*train or val"),
    ("r.jsonl", '{"premise": "p", "label": "entailment"}\n', "rte", r"line 1: no 'hypothesis' text"),
    ("r.jsonl", '{"premise": "p", "hypothesis": "h", "label": "maybe"}\n', "rte", r"line 1: unknown RTE label 'maybe'"),
    ("g.csv", "text,label\na,x\nb,\n", "csv", r"g\.csv, line 3: empty 'label'.*give every row a label"),
    ("g.csv", "body,label\na,x\nb,y\n", "csv", r"g\.csv: no 'text' or 'sentence' column.*\['body', 'label'\].*text_column="),
    ("g.csv", "text,y\na,x\nb,y\n", "csv", r"no column 'label' \(the columns are \['text', 'y'\]\); pass label_column="),
    ("g.csv", "text,label\na,x\nb,x\n", "csv", r"holds 1 distinct label.*at least two classes"),
    ("g.jsonl", '{"text": "a", "label": "x"}\n[1, 2]\n', "jsonl", r"g\.jsonl, line 2: expected a JSON object"),
])
def test_bad_input_names_file_line_and_fix(tmp_path: Path, name: str, text: str, fmt: str, pattern: str) -> None:
    p = write(tmp_path, name, text)
    with pytest.raises(DatasetFormatError, match=pattern):
        read_path(p, format=fmt)


def test_a_label_outside_the_verbalizer_names_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, "g.csv", "text,label\na,pos\nb,neg\nc,meh\n")
    with pytest.raises(DatasetFormatError, match=r"g\.csv, line 4: the label 'meh' is not a class.*add it to the verbalizer"):
        read_file(p, verbalizer={"neg": " bad", "pos": " good"})


def test_label_names_must_cover_every_label(tmp_path: Path) -> None:
    p = write(tmp_path, "g.csv", "text,label\na,0\nb,1\nc,2\n")
    with pytest.raises(DatasetFormatError, match=r"line 4: the label '2' is not in label_names"):
        read_file(p, label_names={0: "neg", 1: "pos"})


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    p = write(tmp_path, "notes.txt", "hello world\n")
    with pytest.raises(DatasetFormatError, match=r"notes\.txt: cannot tell its format.*pass format="):
        infer_format(p)
    with pytest.raises(ValueError, match="format='parquet' is not one calibkit reads"):
        read_path(p, format="parquet")
    with pytest.raises(FileNotFoundError, match="no data file at"):
        read_sst2(tmp_path / "missing.txt")


# -- rows with no text or no label ---------------------------------------------------------
@pytest.mark.parametrize("name,text,fmt,pattern", [
    ("g.csv", "text,label\na,x\n,y\nb,x\n", "csv", r"g\.csv, line 3: empty 'text' \(1 of 3 rows\); give every row its text"),
    ("g.csv", "text,label\na,x\n   ,y\nb,\nc,y\n", "csv",
     r"g\.csv: empty 'text' on line 3; empty 'label' on line 4 \(2 of 4 rows\); give every row its text and label"),
    ("g.tsv", "text\tlabel\na\tx\n\nb\t\n", "tsv", r"g\.tsv, line 4: empty 'label' \(1 of 2 rows\); give every row a label"),
    ("g.csv", 'text,label\n"two\nlines",x\n"",y\n', "csv", r"g\.csv, line 4: empty 'text'"),
    ("g.jsonl", '{"text": "a", "label": "x"}\n{"text": null, "label": "y"}\n{"label": "x"}\n', "jsonl",
     r"g\.jsonl, lines 2, 3: empty 'text' \(2 of 3 rows\)"),
    ("a.csv", "1,t,d\n2,,d\n3,t,d\n", "agnews", r"a\.csv, line 2: empty 'title'"),
    ("t.label", "DESC:manner How ?\nHUM:ind\nLOC:city Where ?\n", "trec", r"t\.label, line 2: empty 'question'"),
    ("r.jsonl", '{"premise": "p", "hypothesis": "h", "label": 0}\n{"premise": null, "hypothesis": "h", "label": 1}\n',
     "rte", r"r\.jsonl, line 2: empty 'premise'"),
    ("r.jsonl", '{"premise": "p", "hypothesis": "h", "label": 0}\n{"premise": "p", "hypothesis": "h", "label": -1}\n',
     "rte", r"r\.jsonl, line 2: empty 'label'"),
])
def test_missing_text_or_label_names_file_column_and_line(tmp_path: Path, name: str, text: str, fmt: str,
                                                           pattern: str) -> None:
    p = write(tmp_path, name, text)
    with pytest.raises(MissingValuesError, match=pattern + r".*missing='drop' \(calibkit's CLI: --drop-missing\)"):
        read_path(p, format=fmt)
    with pytest.raises(MissingValuesError, match=pattern):
        load_dataset(p, format=fmt)


def test_missing_drop_drops_the_rows_and_says_how_many(tmp_path: Path) -> None:
    p = write(tmp_path, "g.csv", "text,label\na,x\n,y\nb,x\nc,\n\nd,y\n")
    with pytest.warns(MissingValuesWarning, match=r"g\.csv: dropped 2 of 5 rows with no text or label \(lines 3, 5\)"):
        ds = load_dataset(p, missing="drop")
    assert ds.frame.text.tolist() == ["a", "b", "d"] and ds.classes == ["x", "y"]
    assert ds.dropped.rows == [3, 5] and ds.dropped.unit == "line" and len(ds.dropped) == 2
    assert ds.dropped.total == 5 and ds.dropped.columns == ["text", "label"]
    assert "Dropped 2 of 5 rows" in ds.card
    # A label after a drop that the verbalizer lacks still names its own line.
    q = write(tmp_path, "h.csv", "text,label\n,x\nb,x\nc,z\n")
    with pytest.warns(MissingValuesWarning), pytest.raises(DatasetFormatError, match=r"h\.csv, line 4: the label 'z'"):
        read_file(q, verbalizer={"x": " x", "y": " y"}, missing="drop")


@pytest.mark.parametrize("name,text,fmt,kept", [
    ("s.txt", "1 fine\n0\n0 dull\n", "sst2", 2),
    ("t.label", "DESC:manner How ?\nHUM:ind\nLOC:city Where ?\n", "trec", 2),
    ("a.csv", "1,t,d\n2,,d\n3,t, \n4,t,d\n", "agnews", 2),
    ("r.jsonl", '{"premise": "p", "hypothesis": "h", "label": 0}\n{"premise": "p", "label": 1}\n'
     '{"premise": "p", "hypothesis": "h", "label": 1}\n{"premise": "p", "hypothesis": "h"}\n', "rte", 2),
])
def test_every_reader_drops_on_request(tmp_path: Path, name: str, text: str, fmt: str, kept: int) -> None:
    p = write(tmp_path, name, text)
    with pytest.raises(MissingValuesError):
        read_path(p, format=fmt)
    with pytest.warns(MissingValuesWarning, match=rf"dropped {text.count(chr(10)) - kept} of"):
        ds = read_path(p, format=fmt, missing="drop")
    assert len(ds) == kept and ds.dropped is not None


def test_missing_option_is_checked_and_all_missing_is_not_dropped_to_nothing(tmp_path: Path) -> None:
    p = write(tmp_path, "g.csv", "text,label\na,x\nb,y\n")
    with pytest.raises(ValueError, match="missing must be 'error'.*or 'drop'.*not 'skip'"):
        load_dataset(p, missing="skip")
    assert load_dataset(p, missing="drop").dropped is None
    q = write(tmp_path, "e.csv", "text,label\n,x\n ,y\n")
    with pytest.raises(MissingValuesError, match=r"lines 2, 3: empty 'text' \(2 of 2 rows\); every row lacks"):
        load_dataset(q, missing="drop")


@pytest.mark.parametrize("name, text, problem", [
    ("empty.csv", "", "the file is empty: no header and no rows; give a file with a header line"),
    ("header.csv", "review,stars\n", "no rows: only a header (review, stars); give a row per example"),
    ("empty.jsonl", "", "no rows: the file is empty; give a row per example"),
])
def test_a_file_with_no_rows_says_so_naming_the_file(tmp_path, name, text, problem) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DatasetFormatError) as info:
        read_file(path, text_column="review", label_column="stars")
    assert str(info.value).startswith(f"{path}: {problem}")
