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
