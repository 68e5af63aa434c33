"""Scores files: LabelScores written to CSV or Parquet and read back, classes with their types."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from calibkit.label_scores import LabelScores, check_scores_path, read_scores, write_scores

SUFFIXES = [".csv", pytest.param(".parquet", marks=pytest.mark.skipif(
    importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow"))]


def _scores(classes: list, n: int = 4, seed: int = 0) -> LabelScores:
    rng = np.random.default_rng(seed)
    lp = np.log(rng.dirichlet(np.ones(len(classes) + 1), size=n)[:, : len(classes)])
    s = LabelScores.from_logprobs(lp, classes, provenance={"model": "m", "method": "auto", "k": np.int64(20)})
    s.censored[0, -1] = True  # top-k scoring: an upper bound
    s.exact[1] = False
    return s


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("classes", [[0, 1, 2], ["negative", "positive"], ["1", "2"], [True, False], [1, "1.5"]],
                         ids=["int", "str", "digit-str", "bool", "mixed"])
def test_round_trip_keeps_values_types_and_precision(tmp_path, suffix, classes) -> None:
    s = _scores(classes)
    labels = [classes[i % len(classes)] for i in range(len(s))]
    frame = pd.DataFrame({"text": ["N/A", "", "a fine film", "0"], "label": labels})
    cf = _scores(classes, n=3, seed=1)
    path = write_scores(tmp_path / f"scores{suffix}", s, frame, content_free=cf,
                        content_free_frame=pd.DataFrame({"text": ["N/A", "", "[MASK]"]}))
    f = read_scores(path)
    assert f.scores.classes == classes
    assert [type(c) for c in f.scores.classes] == [type(c) for c in classes]
    np.testing.assert_array_equal(f.scores.logprobs, s.logprobs)  # bit for bit
    np.testing.assert_array_equal(f.scores.censored, s.censored)
    np.testing.assert_array_equal(f.scores.exact, s.exact)
    np.testing.assert_array_equal(f.scores.label_mass, s.label_mass)
    assert f.labels == labels and [type(v) for v in f.labels] == [type(v) for v in labels]
    assert f.label_column == "label" and list(f.frame["label"]) == labels
    assert list(f.frame["text"]) == ["N/A", "", "a fine film", "0"]  # texts stay texts
    assert f.scores.predict() == s.predict()
    np.testing.assert_array_equal(f.content_free.logprobs, cf.logprobs)
    assert f.content_free.classes == classes
    assert f.scores.provenance["model"] == "m" and f.scores.provenance["k"] == 20


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_the_file_stays_a_plain_table(tmp_path, suffix) -> None:
    s = _scores([0, 1])
    path = write_scores(tmp_path / f"s{suffix}", s, pd.DataFrame({"text": list("abcd"), "label": [0, 1, 1, 0]}),
                        content_free=_scores([0, 1], n=2))
    frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path, keep_default_na=False)
    assert {"text", "label", "logprob[0]", "logprob[1]", "censored[0]", "censored[1]", "label_mass", "exact",
            "prediction", "row"} <= set(frame.columns)
    assert list(frame["row"]) == ["example"] * 4 + ["content-free"] * 2
    np.testing.assert_allclose(frame.loc[frame["row"] == "example", "logprob[1]"].astype(float), s.logprobs[:, 1])


def test_infinite_logprobs_survive_csv(tmp_path) -> None:
    s = LabelScores.from_logprobs([[-np.inf, -0.1], [-1.0, -2.0]], ["a", "b"])
    f = read_scores(write_scores(tmp_path / "s.csv", s))
    assert f.scores.logprobs[0, 0] == -np.inf and f.labels is None and f.content_free is None


def test_a_file_written_by_hand_reads_with_string_classes(tmp_path) -> None:
    path = tmp_path / "hand.csv"
    path.write_text("text,label,logprob[neg],logprob[pos]\nbad,neg,-0.1,-2.5\ngood,pos,-3,-0.2\n")
    f = read_scores(path)
    assert f.scores.classes == ["neg", "pos"] and f.labels == ["neg", "pos"]
    assert not f.scores.censored.any() and f.scores.exact.all()


def test_a_file_without_logprob_columns_names_the_file_and_the_fix(tmp_path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text,label\na,b\n")
    with pytest.raises(ValueError, match=r"data\.csv has no logprob\[<class>\] columns.*calibkit score --out"):
        read_scores(path)
    with pytest.raises(FileNotFoundError, match="no scores file at .*calibkit score --out"):
        read_scores(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=r"ends in \.csv or \.parquet"):
        read_scores(tmp_path / "data.txt")


def test_bad_cells_and_bad_label_columns_are_named(tmp_path) -> None:
    path = tmp_path / "s.csv"
    write_scores(path, _scores(["a", "b"]), pd.DataFrame({"label": ["a", "b", "a", "b"]}))
    with pytest.raises(ValueError, match="no column 'stars'.*label_column="):
        read_scores(path, label_column="stars")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[2, "logprob[b]"] = "oops"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"'logprob\[b\]' holds 'oops' \(data row 3\)"):
        read_scores(path)


def test_writing_checks_what_it_cannot_store(tmp_path) -> None:
    with pytest.raises(ValueError, match="two classes print as '1'"):
        write_scores(tmp_path / "s.csv", LabelScores.from_logprobs([[-1.0, -1.0]], [1, "1"]))
    with pytest.raises(ValueError, match="cannot be stored"):
        write_scores(tmp_path / "s.csv", LabelScores.from_logprobs([[-1.0, -1.0]], [(1, 2), "b"]))
    with pytest.raises(ValueError, match="3 rows for 2 scores"):
        write_scores(tmp_path / "s.csv", _scores(["a", "b"], n=2), pd.DataFrame({"text": ["x", "y", "z"]}))
    with pytest.raises(ValueError, match=r"uses itself"):
        write_scores(tmp_path / "s.csv", _scores(["a", "b"], n=2), pd.DataFrame({"row": ["x", "y"]}))


def test_parquet_without_pyarrow_says_how_to_get_it(tmp_path, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    hint = r"Parquet files need pyarrow: pip install 'calibkit\[parquet\]', or use a \.csv file"
    with pytest.raises(ValueError, match=hint):
        check_scores_path(tmp_path / "s.parquet")
    with pytest.raises(ValueError, match=hint):
        write_scores(tmp_path / "s.parquet", _scores(["a", "b"]))
