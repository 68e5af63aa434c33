"""Scoring: top-k censoring bounds, the auto method's routing, and LabelScores.

The logic runs on an in-memory backend here (tests/helpers.py's TableBackend); the
tests of the embedded model and of the HTTP client score with the real model and
real servers."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest

import calibkit as ck
from calibkit.scoring import CONTENT_FREE, TokenizationError

from helpers import TableBackend, sst2

VERB = {"neg": " negative", "pos": " positive"}
TPL = "Review: {text}\nSentiment:"


def _p(text: str) -> str:
    return TPL.format(text=text)


def test_topk_keeps_missing_labels_as_upper_bounds() -> None:
    dist = {" the": -0.3, " a": -2.0, " positive": -2.5, " negative": -6.0, " of": -7.0}
    b = TableBackend({_p("x"): dist})
    s = ck.score(["x"], TPL, VERB, b, method="topk", k=3)
    assert s.censored.tolist() == [[True, False]]
    assert s.logprobs[0, 1] == pytest.approx(-2.5)
    # " negative" is outside the top 3: at most the 3rd largest probability, and at
    # most what the top 3 leave.
    rest = 1 - sum(math.exp(v) for v in (-0.3, -2.0, -2.5))
    assert math.log(rest) < -2.5  # here the mass left is the tighter bound
    assert s.logprobs[0, 0] == pytest.approx(min(-2.5, math.log(rest)))
    assert not s.exact.any() and s.provenance["k"] == 3
    assert s.label_mass[0] == pytest.approx(math.exp(-2.5) + math.exp(s.logprobs[0, 0]))


def test_joint_bound_of_several_missing_forms_is_what_the_top_k_leaves() -> None:
    dist = {" the": -0.05, " a": -3.5, " b": -4.0, " negative": -5.0, " bad": -5.5, " positive": -6.0}
    b = TableBackend({_p("x"): dist})
    s = ck.score(["x"], TPL, {"neg": [" negative", " bad"], "pos": " positive"}, b, method="topk", k=3)
    rest = 1 - sum(math.exp(v) for v in (-0.05, -3.5, -4.0))
    assert s.logprobs[0, 0] == pytest.approx(math.log(min(2 * math.exp(-4.0), rest)))
    assert s.censored.all()


def test_auto_goes_exact_only_where_a_censored_value_could_flip_the_answer() -> None:
    clear = {" the": -0.1, " positive": -1.0, " a": -3.0, " negative": -9.0}
    # Both labels outside the top 3: either could be the larger.
    close = {" the": -0.1, " a": -3.0, " b": -3.5, " positive": -4.0, " negative": -4.5}
    b = TableBackend(
        {_p("clear"): clear, _p("close"): close},
        continuations={_p("close") + " negative": -4.5, _p("close") + " positive": -4.0},
    )
    s = ck.score(["clear", "close"], TPL, VERB, b, method="auto", k=3)
    assert s.exact.tolist() == [False, True]
    # the clear row keeps its bound on " negative"; it cannot beat " positive"
    assert s.censored.tolist() == [[True, False], [False, False]]
    assert s.logprobs[1].tolist() == pytest.approx([-4.5, -4.0])
    # Beyond the form tokens learnt on the first prompt, only the close row is asked exactly.
    exact_asked = [q[1:] for q in b.asked if q[0] == "continuation" and q[1] != _p("clear")]
    assert exact_asked == [(_p("close"), " negative"), (_p("close"), " positive")]
    assert s.predict() == ["pos", "pos"]


def test_auto_scores_multi_token_forms_exactly() -> None:
    b = TableBackend(
        {_p("x"): {" very": -1.0, " negative": -2.0}},
        continuations={_p("x") + " very good": -3.0, _p("x") + " negative": -2.0},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto loses nothing to a multi-token form: no warning
        s = ck.score(["x"], TPL, {"neg": " negative", "pos": " very good"}, b, method="auto")
    assert s.exact.all() and not s.censored.any()
    assert s.logprobs[0].tolist() == pytest.approx([-2.0, -3.0])
    topk = ck.score(["x"], TPL, {"neg": " negative", "pos": " very good"}, b, method="topk", k=2, check=False)
    assert topk.censored[0, 1] and topk.logprobs[0, 1] == pytest.approx(-1.0)  # P(" very") bounds it


def _multi_token_backend() -> TableBackend:
    return TableBackend(
        {_p("x"): {" very": -1.0, " negative": -2.0}},
        continuations={_p("x") + " very good": -3.0, _p("x") + " negative": -2.0},
        logprobs_cap=20,
    )


@pytest.mark.parametrize("method", ["exact", "auto"])
def test_multi_token_forms_warn_only_where_top_k_sees_their_first_token(method: str) -> None:
    verb = {"neg": " negative", "pos": " very good"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ck.score(["x"], TPL, verb, _multi_token_backend(), method=method)
    with pytest.warns(ck.TokenizationWarning, match="' very good' is 2 tokens") as caught:
        ck.score(["x"], TPL, verb, _multi_token_backend(), method="topk", k=2)
    assert len(caught) == 1


@pytest.mark.parametrize("method", ["exact", "auto"])
def test_shared_first_tokens_warn_only_with_top_k(method: str) -> None:
    p = _p("x")
    b = TableBackend({p: {" very": -1.0}}, continuations={p + " very good": -2.0, p + " very bad": -3.0})
    verb = {"neg": " very bad", "pos": " very good"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = ck.score(["x"], TPL, verb, b, method=method)
    assert s.predict() == ["pos"]
    with pytest.warns(ck.TokenizationWarning) as caught:
        ck.score(["x"], TPL, verb, b, method="topk", k=2)
    assert {"shared-first-token", "multi-token"} == {
        t.kind for t in ck.check_traps(ck.PromptTemplate(TPL), ck.Verbalizer(verb), b, "x", method="topk")
    }
    assert any("start with the same token ' very'" in str(w.message) for w in caught)


@pytest.mark.parametrize("method", ["topk", "exact", "auto"])
def test_text_traps_warn_with_every_method(method: str) -> None:
    p = "Review: x\nSentiment: "
    b = TableBackend({p: {" good": -1.0, " bad": -2.0}}, continuations={p + " good": -1.0, p + " bad": -2.0})
    with pytest.warns(ck.TokenizationWarning, match="trailing space"):
        ck.score(["x"], "Review: {text}\nSentiment: ", {"neg": " bad", "pos": " good"}, b, method=method)


def test_top_k_asks_the_form_tokens_once_without_a_cache() -> None:
    b = TableBackend({_p("x"): {" very": -1.0}, _p("y"): {" negative": -1.0}})
    ck.score(["x", "y"], TPL, VERB, b, method="topk")
    assert b.asked == [
        ("continuation", _p("x"), " negative"), ("continuation", _p("x"), " positive"),  # trap check and top-k
        ("top_k", _p("x")), ("top_k", _p("y")),
    ]


def test_multi_token_labels_of_the_embedded_model_warn_only_with_top_k(local_model) -> None:
    verb = {"world": " World news", "sports": " Sports"}  # " World news" is two tokens here
    tpl = "Article: {text}\nTopic:"
    for method in ("exact", "auto"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ck.score(["A match."], tpl, verb, local_model, method=method)
    with pytest.warns(ck.TokenizationWarning, match="' World news' is 2 tokens"):
        ck.score(["A match."], tpl, verb, local_model, method="topk")


class SlowBackend(TableBackend):
    batch_size = 1

    def _answer_top_k(self, prompts, k, *, keep=None):
        time.sleep(0.05)
        return super()._answer_top_k(prompts, k)


def test_a_bar_shows_once_a_run_lasts_and_never_when_told_not_to(capsys, monkeypatch) -> None:
    texts = ["a", "b", "c", "d"]
    dists = {_p(t): {" positive": -1.0, " negative": -2.0} for t in texts}
    ck.score(texts, TPL, VERB, TableBackend(dists), method="topk")
    assert capsys.readouterr().err == ""  # quick: no bar
    ck.score(texts, TPL, VERB, TableBackend(dists), method="topk", progress=True)
    assert "top-20" in capsys.readouterr().err
    monkeypatch.setattr("calibkit.progress.PROGRESS_DELAY", 0.1)
    ck.score(texts, TPL, VERB, SlowBackend(dists), method="topk")
    assert "top-20" in capsys.readouterr().err  # slow: the bar shows after the delay
    ck.score(texts, TPL, VERB, SlowBackend(dists), method="topk", progress=False)
    assert capsys.readouterr().err == ""
    cf_prompts = [_p(t) for t in CONTENT_FREE]
    ck.content_free_scores(TPL, VERB, SlowBackend({p: dists[_p("a")] for p in cf_prompts}), method="topk",
                           progress=True)
    assert "top-20" in capsys.readouterr().err


def test_a_form_that_merges_with_the_prompt_is_an_error_not_a_guess() -> None:
    b = TableBackend({"Sentiment:x": {" a": -1.0}})
    with pytest.raises(TokenizationError, match="merges"):
        ck.score(["x"], "Sentiment:{text}", {"a": "positive", "b": "negative"}, b, method="exact", check=False)


def test_label_scores_interface(local_model) -> None:
    X, y = sst2("dev", 6)
    s = ck.score(X, TPL, {0: " negative", 1: " positive"}, local_model)
    assert s.shape == (6, 2) and len(s) == 6
    assert np.asarray(s) is s.logprobs
    np.testing.assert_allclose(s.probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(s.label_mass, np.exp(s.logprobs).sum(axis=1))
    assert s.predict() == [int(i) for i in np.argmax(s.logprobs, axis=1)]
    sub = s[[0, 2]]
    np.testing.assert_array_equal(sub.logprobs, s.logprobs[[0, 2]])
    frame = s.to_frame()
    assert list(frame.columns[:2]) == ["logprob[0]", "logprob[1]"] and len(frame) == 6
    # 6 examples x 2 forms; exact scoring asks nothing more for the trap check
    assert s.provenance["model"] == "google/gemma-3-270m" and s.provenance["requests"] == 6 * 2
    assert "LabelScores(n=6" in repr(s)


def test_bad_arguments() -> None:
    b = TableBackend({})
    with pytest.raises(ValueError, match="method must be"):
        ck.score(["x"], TPL, VERB, b, method="fast")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backend must be"):
        ck.score(["x"], TPL, VERB, object())  # type: ignore[arg-type]


# -- the inputs of the prior corrections ---------------------------------------------------


def test_content_free_scores_fill_every_field_and_keep_demonstrations() -> None:
    tpl = ck.PromptTemplate("Q: {question}\n{text}\nA:", demonstrations=[({"question": "q1", "text": "t1"}, "yes")])
    verb = {"no": " no", "yes": " yes"}
    prompts = [tpl.format({"question": t, "text": t}, ck.Verbalizer(verb)) for t in CONTENT_FREE]
    b = TableBackend({}, continuations={p + " yes": -1.0 for p in prompts})
    cf = ck.content_free_scores(tpl, verb, b, method="exact")
    assert [q[1] for q in b.asked[::2]] == prompts and all(p.startswith("Q: q1\nt1\nA: yes") for p in prompts)
    assert cf.shape == (3, 2) and cf.logprobs[:, 1].tolist() == [-1.0] * 3
    cal = ck.ContextualCalibration(content_free=cf).fit(cf)
    assert cal.prior_[1] > 0.99


def test_domain_context_scores_score_random_in_domain_words() -> None:
    texts = ["the movie was great fun", "a dull and tedious plot"]
    b = TableBackend({})
    ck.domain_context_scores("{text}:", {"neg": " bad", "pos": " good"}, b, texts=texts, n_samples=5, seed=3,
                             method="exact")
    strings = [q[1][:-1] for q in b.asked[::2]]
    assert strings == ck.random_domain_texts(texts, n_samples=5, seed=3)
    assert all(len(s.split()) == 5 for s in strings)  # the mean word count of texts
    vocabulary = {w for t in texts for w in t.split()}
    assert all(set(s.split()) <= vocabulary for s in strings)
    with pytest.raises(ValueError, match="non-empty list"):
        ck.content_free_scores("{text}:", {"neg": " bad", "pos": " good"}, b, texts="N/A")


def test_random_domain_texts_are_seeded():
    texts = ["one two three", "four five six seven"]
    assert ck.random_domain_texts(texts, seed=1) == ck.random_domain_texts(texts, seed=1)
    assert ck.random_domain_texts(texts, seed=1) != ck.random_domain_texts(texts, seed=2)
    assert all(len(s.split()) == 4 for s in ck.random_domain_texts(texts, length=4))
    with pytest.raises(ValueError, match="no words"):
        ck.random_domain_texts(["", "  "])


def test_contextual_calibration_from_the_embedded_model(local_model) -> None:
    tpl, verb = "Review: {text}\nSentiment:", {0: " negative", 1: " positive"}
    X, y = sst2("dev", 40)
    scores = ck.score(X, tpl, verb, local_model)
    cal = ck.ContextualCalibration(content_free=ck.content_free_scores(tpl, verb, local_model)).fit(scores)  # no labels needed
    cf = ck.score(["N/A", "", "[MASK]"], tpl, verb, local_model).logprobs
    prior = np.exp(cf).mean(axis=0)
    prior /= prior.sum()
    expected = scores.probs / prior
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(cal.predict_proba(scores), expected, rtol=1e-9)
    # the correction removes most of this model's bias towards one label
    raw_share = np.mean(np.argmax(scores.logprobs, axis=1) == 1)
    fixed_share = np.mean(cal.predict(scores) == 1)
    assert abs(fixed_share - np.mean(y)) < abs(raw_share - np.mean(y))


def test_batch_and_domain_context_from_the_embedded_model(local_model) -> None:
    tpl, verb = "Review: {text}\nSentiment:", {0: " negative", 1: " positive"}
    X, _ = sst2("dev", 20)
    s = ck.score(X, tpl, verb, local_model)
    batch = ck.BatchCalibration().fit(s)
    np.testing.assert_allclose(batch.predict_proba(s).mean(axis=0), [0.5, 0.5], atol=0.15)
    dc = ck.DomainContextCalibration(content_free=ck.domain_context_scores(tpl, verb, local_model, texts=X, n_samples=5, seed=1))
    assert dc.fit(s).predict_proba(s).shape == (20, 2)


MERGING_TPL, MERGING_VERB = "Review: {text}\nSentiment: pos", {"pos": "itive", "neg": "ition"}


@pytest.mark.parametrize("method", ["auto", "topk", "exact"])
def test_a_merging_form_is_an_error_on_the_embedded_model_with_every_method(local_model, method) -> None:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with pytest.raises(TokenizationError) as e:
            ck.score(["a great film"], MERGING_TPL, MERGING_VERB, local_model, method=method)
    msg = str(e.value)
    assert msg.startswith("the form 'itive' merges with the end of prompt 0 'Review: a great film\\nSentiment: pos'")
    assert "start the forms with a space (e.g. ' itive')" in msg and "no trailing text" in msg
    assert not [x for x in w if issubclass(x.category, ck.TokenizationWarning)]  # an error, not a warning


def test_a_form_without_a_space_that_keeps_the_prompts_tokens_is_scored(local_model) -> None:
    # "Sentiment:" + "positive" tokenizes as the prompt's tokens + "positive": not a trap
    s = ck.score(["a great film"], "Review: {text}\nSentiment:", {"pos": "positive", "neg": "negative"}, local_model)
    c = local_model.continuation_logprobs([("Review: a great film\nSentiment:", "positive")])[0]
    assert s.logprobs[0, s.classes.index("pos")] == pytest.approx(c.logprob)


def test_topk_checks_every_prompt_where_the_example_meets_the_form() -> None:
    # The template ends with the example: "ok " leaves "!" a token of its own, "great" merges with it.
    b = TableBackend({"Say: ok ": {"!": -0.5, "?": -1.0}, "Say: great": {"!": -0.5, "?": -1.0}})
    with pytest.raises(TokenizationError, match=r"the form '!' merges with the end of prompt 1 'Say: great'"):
        ck.score(["ok ", "great"], "Say: {text}", {"a": "!", "b": "?"}, b, method="topk", check=False)
    assert ("top_k", "Say: great") not in b.asked  # checked before any number was asked for
    # a template with text after the example checks its first prompt only (the seam is the same)
    b = TableBackend({"Say: ok\nA:": {" yes": -0.5, " no": -1.0}, "Say: great\nA:": {" yes": -0.5, " no": -1.0}})
    ck.score(["ok", "great"], "Say: {text}\nA:", {"a": " yes", "b": " no"}, b, method="topk", check=False)
    assert [q for q in b.asked if q[0] == "continuation"] == [("continuation", "Say: ok\nA:", " yes"),
                                                              ("continuation", "Say: ok\nA:", " no")]
