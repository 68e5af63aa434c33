"""calibkit.arrays: the checks of score matrices and labels that calibrators and metrics share."""

import numpy as np
import pytest

from calibkit.arrays import (
    ROW_BLOCK,
    as_float_array,
    check_columns,
    check_input_kind,
    check_sample_weight,
    check_y,
    resolve_classes,
    row_max,
)


def test_input_kind_must_be_said() -> None:
    assert check_input_kind("logprobs") == "logprobs"
    with pytest.raises(ValueError, match=r"input='logits' is not a score kind; say what p holds"):
        check_input_kind("logits", "p")


def test_scores_must_be_numbers_with_a_column_per_class() -> None:
    assert as_float_array([[1, 2]], "X").dtype == np.float64
    with pytest.raises(ValueError, match="X must hold numbers"):
        as_float_array([["a", "b"]], "X")
    check_columns(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="p has 1 feature"):
        check_columns(np.zeros((2, 1)), "p")


def test_classes_come_from_the_first_rule_that_applies() -> None:
    # 1. given; 2. the scores' own names; 3. column indices; 4. the sorted distinct labels
    assert resolve_classes(["y", "x"], 2, classes=["y", "x"])[1].tolist() == [0, 1]
    assert resolve_classes(["b", "a"], 2, scores_classes=["b", "a"])[1].tolist() == [0, 1]
    classes_, y_idx = resolve_classes(np.array([2, 0]), 3)
    assert classes_.tolist() == [0, 1, 2] and y_idx.tolist() == [2, 0]
    assert resolve_classes([1.0, 0.0], 2)[1].tolist() == [1, 0]
    classes_, y_idx = resolve_classes(["pos", "neg"], 2)
    assert classes_.tolist() == ["neg", "pos"] and y_idx.tolist() == [1, 0]
    assert resolve_classes(None, 2) == (pytest.approx(np.arange(2)), None)


@pytest.mark.parametrize(
    ("y", "kwargs", "message"),
    [
        (["a", "b", "c"], {}, r"3 distinct label\(s\).*pass classes="),
        (["a", "z"], {"classes": ["a", "b"]}, r"label\(s\) \['z'\] that are not among the classes"),
        (["a"], {"classes": ["a"]}, "classes has 1 label"),
        (["a"], {"classes": ["a", "a"]}, "duplicate labels"),
    ],
)
def test_classes_that_do_not_fit_are_refused_with_the_fix(y, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_classes(y, 2, **kwargs)


def test_labels_and_weights_fit_the_rows() -> None:
    assert check_y(["b", "a"], 2).tolist() == ["b", "a"]
    with pytest.raises(ValueError, match="y has 1 labels but X has 2 rows"):
        check_y([1], 2)
    assert check_sample_weight(None, np.zeros((3, 2))).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="non-zero|sums to zero"):
        check_sample_weight([0, 0], np.zeros((2, 2)))


def test_row_max_is_each_rows_largest_entry() -> None:
    block = np.random.default_rng(0).normal(size=(ROW_BLOCK // 64, 7))
    block[3, 2] = np.nan
    out = row_max(block)
    assert np.isnan(out[3]) and np.array_equal(np.delete(out, 3), np.delete(block.max(axis=1), 3))
