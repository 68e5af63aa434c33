"""Templates, verbalizers and the tokenization traps."""

from __future__ import annotations

import pandas as pd
import pytest

from calibkit.templates import TRAP_METHODS, PromptTemplate, Verbalizer, check_traps, iter_examples


def test_format_string_dict_and_pandas_row() -> None:
    tpl = PromptTemplate("Premise: {premise}\nHypothesis: {hypothesis}\nAnswer:")
    assert tpl.fields == ["premise", "hypothesis"]
    row = pd.DataFrame({"premise": ["A cat sat."], "hypothesis": ["An animal sat."]}).iloc[0]
    expect = "Premise: A cat sat.\nHypothesis: An animal sat.\nAnswer:"
    assert tpl.format(row) == expect
    assert tpl.format({"premise": "A cat sat.", "hypothesis": "An animal sat.", "extra": 1}) == expect
    with pytest.raises(ValueError, match="pass a dict"):
        tpl.format("just a string")
    with pytest.raises(KeyError, match="no 'hypothesis'"):
        tpl.format({"premise": "x"})


def test_template_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="name its fields"):
        PromptTemplate("Review: {}")
    with pytest.raises(ValueError, match="has no field"):
        PromptTemplate("Review:")


def test_demonstrations_and_instructions() -> None:
    verb = Verbalizer({"negative": [" negative", " bad"], "positive": " positive"})
    tpl = PromptTemplate(
        "Review: {text}\nSentiment:",
        instructions="Classify each review.",
        demonstrations=[("great fun", "positive"), ("a bore", "negative")],
    )
    assert tpl.format("fine", verb) == (
        "Classify each review.\n\nReview: great fun\nSentiment: positive\n\n"
        "Review: a bore\nSentiment: negative\n\nReview: fine\nSentiment:"
    )
    with pytest.raises(ValueError, match="pass verbalizer="):
        tpl.format("fine")
    with pytest.raises(KeyError, match="not a class"):
        PromptTemplate("{text}", demonstrations=[("x", "neutral")]).format("y", verb)


def test_format_many_takes_frames_series_and_lists() -> None:
    tpl = PromptTemplate("T: {text}")
    assert tpl.format_many(pd.Series(["a", "b"])) == ["T: a", "T: b"]
    assert tpl.format_many(pd.DataFrame({"text": ["a"]})) == ["T: a"]
    with pytest.raises(TypeError, match="wrap it"):
        iter_examples("one string")


def test_verbalizer() -> None:
    v = Verbalizer({0: " negative", 1: [" positive", " good"]})
    assert v.all_forms == [" negative", " positive", " good"] and v.form_class == [0, 1, 1]
    with pytest.raises(ValueError, match="both"):
        Verbalizer({"a": " x", "b": " x"})
    with pytest.raises(ValueError, match="at least two classes"):
        Verbalizer({"a": " x"})
    with pytest.raises(ValueError, match="non-empty"):
        Verbalizer({"a": [], "b": " y"})


def test_a_form_repeated_within_a_class_names_that_class_once() -> None:
    with pytest.raises(ValueError) as e:
        Verbalizer({"positive": [" good", " good"], "negative": " bad"})
    assert str(e.value) == "the form ' good' is given twice for class 'positive'; give each form once"
    with pytest.raises(ValueError, match="given for both 'positive' and 'negative'"):
        Verbalizer({"positive": [" good"], "negative": [" bad", " good"]})


def test_text_traps() -> None:
    kinds = [t.kind for t in check_traps(PromptTemplate("Sentiment: {text} "), Verbalizer({"a": " Good", "b": " good "}))]
    assert kinds == ["trailing-space", "case-variant"]
    assert check_traps(PromptTemplate("Sentiment: {text}"), Verbalizer({"a": " good", "b": " bad"})) == []


def test_traps_with_the_embedded_tokenizer(local_model) -> None:
    verb = Verbalizer({"world": [" World news"], "sports": [" World cup", " Sports"], "tech": [" Technology"]})
    traps = check_traps(PromptTemplate("Article: {text}\nTopic:"), verb, local_model, example="A match.")
    by_kind = {t.kind: t for t in traps}
    assert "multi-token" in by_kind and " World news" in [f for t in traps if t.kind == "multi-token" for f in t.forms]
    assert by_kind["shared-first-token"].forms == [" World news", " World cup"]
    assert check_traps(PromptTemplate("Article: {text}\nTopic:"), verb, local_model, example="A match.", method="exact") == []
    merged = check_traps(PromptTemplate("Article: {text}\nTopic: "), Verbalizer({"a": " Sports", "b": " Technology"}), local_model)
    assert {"trailing-space", "boundary-merge"} <= {t.kind for t in merged}


def test_traps_are_kept_for_the_methods_they_distort() -> None:
    tpl = PromptTemplate("Topic: {text} ")
    verb = Verbalizer({"world": [" World news", " world"], "sports": [" World cup", " World"]})
    tokens = [[" World", " news"], [" world"], [" World", " cup"], [" World"]]
    every = check_traps(tpl, verb, tokens=tokens)
    assert {t.kind for t in every} == set(TRAP_METHODS) - {"boundary-merge"}
    assert [t.kind for t in check_traps(tpl, verb, tokens=tokens, method="exact")] == ["trailing-space", "case-variant"]
    assert check_traps(tpl, verb, tokens=tokens, method="auto") == check_traps(tpl, verb, tokens=tokens, method="exact")
    assert check_traps(tpl, verb, tokens=tokens, method="topk") == every
    assert all(t.methods == TRAP_METHODS[t.kind] for t in every)
    merged = check_traps(PromptTemplate("Topic: {text}"), verb, tokens=[None, [" world"], [" World", " cup"], [" World"]],
                         method="exact")
    assert [t.kind for t in merged] == ["case-variant", "boundary-merge"]
    with pytest.raises(ValueError, match="method must be"):
        check_traps(tpl, verb, method="fast")
    with pytest.raises(ValueError, match="one entry per form"):
        check_traps(tpl, verb, tokens=[[" World"]])


# -- missing values: an error naming the field and the rows, never the text "nan" ---------
FIX = r"fill them, or drop those rows first \(calibkit's CLI: --drop-missing\)"


@pytest.mark.parametrize("examples, where", [
    (pd.DataFrame({"text": ["a", float("nan"), "c", None]}), r"examples 1, 3 \(2 of 4\) have"),
    ([{"text": "a"}, {"text": None}], r"example 1 \(1 of 2\) has"),
    (["a", "b", None], r"example 2 \(1 of 3\) has"),
    (pd.Series(["a", float("nan")]), r"example 1 \(1 of 2\) has"),
    (pd.Series(["a", pd.NA], dtype="string"), r"example 1 \(1 of 2\) has"),
    (pd.Series([None] * 7), r"examples 0, 1, 2, 3, 4, \.\.\. \(7 of 7\) have"),
])
def test_missing_values_name_the_field_and_rows(examples, where: str) -> None:
    tpl = PromptTemplate("Review: {text}\nSentiment:")
    with pytest.raises(ValueError, match=where + r" no value for field 'text' \(None/NaN\); " + FIX):
        tpl.format_many(examples)


def test_missing_values_in_several_fields_are_named_field_by_field() -> None:
    tpl = PromptTemplate("P: {premise}\nH: {hypothesis}")
    frame = pd.DataFrame({"premise": ["a", None, "c"], "hypothesis": [float("nan"), "b", float("nan")]})
    with pytest.raises(ValueError, match=r"examples 0, 1, 2 \(3 of 3\) have no value \(None/NaN\) for a field: "
                                         r"'premise' in example 1 \(1 of 3\); 'hypothesis' in examples 0, 2 \(2 of 3\)"):
        tpl.format_many(frame)


def test_one_missing_value_and_a_missing_demonstration() -> None:
    verb = Verbalizer({"a": " a", "b": " b"})
    with pytest.raises(ValueError, match=r"the example has no value for field 'text' \(nan\)"):
        PromptTemplate("T: {text}").format({"text": float("nan")})
    with pytest.raises(ValueError, match=r"the example is None, not an example"):
        PromptTemplate("T: {text}").format(None)
    with pytest.raises(ValueError, match=r"demonstrations\[1\] has no value for field 'text'"):
        PromptTemplate("T: {text}", demonstrations=[("x", "a"), ({"text": None}, "b")]).format("y", verb)


def test_empty_strings_are_values_not_missing() -> None:
    # calibkit's own content-free inputs include "" (scoring.CONTENT_FREE).
    tpl = PromptTemplate("T: {text}")
    assert tpl.format_many(["", " ", "x"]) == ["T: ", "T:  ", "T: x"]
    assert tpl.format_many(pd.DataFrame({"text": ["", "y"]})) == ["T: ", "T: y"]
    assert tpl.check([{"text": ""}]) == [{"text": ""}]


def test_score_refuses_missing_values_before_asking_the_model(table_backend) -> None:
    import calibkit as ck

    b = table_backend({})
    with pytest.raises(ValueError, match=r"example 1 \(1 of 2\) has no value for field 'text'"):
        ck.score(pd.DataFrame({"text": ["fine", float("nan")]}), "T: {text}\nA:", {"n": " no", "y": " yes"}, b)
    assert b.asked == []
