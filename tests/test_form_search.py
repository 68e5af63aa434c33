"""ck.search_forms: label words proposed from the whole vocabulary and ranked by cross-validated worth."""

from __future__ import annotations

import math

import numpy as np
import pytest

import calibkit as ck
from calibkit.calibration import cross_val_calibrate
from calibkit.datasets import load_dataset
from calibkit.form_search import sees_vocabulary
from calibkit.scoring import CONTENT_FREE
from sklearn.model_selection import StratifiedKFold

from helpers import sst2

CANDIDATES = {"negative": [" negative", " bad"], "positive": [" positive", " good"]}


@pytest.fixture(scope="module")
def sentiment():
    ds = load_dataset("sentiment")
    # 60 rows, 30 of each class
    idx = np.concatenate([np.flatnonzero(np.asarray(ds.y) == c)[:30] for c in ("negative", "positive")])
    return [ds.X[i] for i in idx], [ds.y[i] for i in idx], ds.template


@pytest.fixture(scope="module")
def found(local_model, sentiment):
    X, y, template = sentiment
    return ck.search_forms(X, y, template, local_model, candidates=CANDIDATES, n_proposed=3, progress=False)


def test_the_table_holds_every_candidate_tried_and_the_verbalizer_its_best(found, local_model) -> None:
    t = found.table
    assert list(t.columns) == ["class", "form", "source", "tokens", "mean_logprob", "log_ratio", "cv_nll",
                               "cv_accuracy", "rank", "chosen"]
    for c, forms in CANDIDATES.items():
        mine = t[t["class"] == c]
        assert set(forms) <= set(mine["form"]) and (mine[mine["form"].isin(forms)]["source"] == "given").all()
        proposed = mine[mine["source"] == "model"]
        assert len(proposed) == 3 and not set(proposed["form"]) & set(forms)
        assert (proposed["tokens"] == 1).all() and (proposed["log_ratio"] > 0).all()
        assert mine["rank"].tolist() == [1, 2, 3, 4, 5]
        assert mine["chosen"].tolist() == [True, False, False, False, False]
        assert (np.diff(mine["cv_nll"].to_numpy()) >= 0).all()  # best first, by NLL
        assert found.verbalizer.form_of(c) == mine["form"].iloc[0]
    assert found.verbalizer.classes == ["negative", "positive"]
    # a proposal is one token of the model's vocabulary where it follows the prompt
    for form in t[t["source"] == "model"]["form"]:
        assert local_model.tokenize(form) == [form]


def test_the_table_numbers_are_the_library_functions(found, local_model, sentiment) -> None:
    X, y, template = sentiment
    v = found.verbalizer
    s = ck.score(X, template, v, local_model, method="exact", check=False)
    cf = ck.content_free_scores(template, v, local_model, method="exact")
    cal = ck.make_calibrator("contextual+temperature", v.classes, content_free=np.asarray(cf))
    p = cross_val_calibrate(cal, s, y, cv=StratifiedKFold(5, shuffle=True, random_state=0), classes=v.classes)
    y_idx = [v.classes.index(c) for c in y]
    best = found.table[found.table["chosen"]]
    assert best["cv_nll"].iloc[0] == pytest.approx(ck.metrics.nll(y_idx, p), abs=1e-9)
    assert best["cv_accuracy"].iloc[0] == pytest.approx(ck.metrics.accuracy(y_idx, p), abs=1e-12)
    # every candidate's scores are what ck.score gives those forms
    forms = found.table["form"].tolist()
    alone = ck.score(X, template, {f: f for f in forms}, local_model, method="exact", check=False)
    table = found.table.set_index("form")
    for j, form in enumerate(forms):
        np.testing.assert_array_equal(found.scores.form_logprobs[:, found.scores.forms.index(form)],
                                      alone.form_logprobs[:, j])
        mine = [i for i, c in enumerate(y) if c == table.loc[form, "class"]]
        assert table.loc[form, "mean_logprob"] == pytest.approx(alone.form_logprobs[mine, j].mean(), abs=1e-12)


def test_proposals_alone_find_a_verbalizer_better_than_chance(local_model, sentiment) -> None:
    X, y, template = sentiment
    res = ck.search_forms(X, y, template, local_model, n_proposed=4, calibration="vector", progress=False)
    assert set(res.table["source"]) == {"model"} and len(res.table) == 8
    assert res.table[res.table["chosen"]]["cv_accuracy"].min() > 0.7
    assert res.table[res.table["chosen"]]["cv_nll"].max() < math.log(2)
    assert res.info["calibration"] == "vector" and res.info["proposed from the vocabulary"]


def test_the_transformers_backend_proposes_from_its_whole_vocabulary_too(hf_model, sentiment) -> None:
    X, y, template = sentiment
    res = ck.search_forms(X[:40], y[:40], template, hf_model, candidates=CANDIDATES, n_proposed=2, cv=3,
                          progress=False)
    proposed = res.table[res.table["source"] == "model"]
    assert len(proposed) == 4 and (proposed["tokens"] == 1).all()
    for form in proposed["form"]:
        assert hf_model.tokenize(form) == [form]
    forms = res.table["form"].tolist()
    alone = ck.score(X[:40], template, {f: f for f in forms}, hf_model, method="exact", check=False)
    np.testing.assert_allclose(res.scores.form_logprobs, alone.form_logprobs[:, [forms.index(f) for f in
                                                                                res.scores.forms]], atol=1e-9)


def test_select_by_accuracy_ranks_by_accuracy(found, local_model, sentiment) -> None:
    X, y, template = sentiment
    res = ck.search_forms(X, y, template, local_model, candidates=CANDIDATES, n_proposed=0, select_by="accuracy",
                          progress=False)
    for _, mine in res.table.groupby("class"):
        acc = mine["cv_accuracy"].to_numpy()
        assert (np.diff(acc) <= 0).all()


def test_a_domain_correction_and_an_estimator_are_accepted(local_model, sentiment) -> None:
    X, y, template = sentiment
    res = ck.search_forms(X, y, template, local_model, candidates=CANDIDATES, n_proposed=0,
                          calibration="domain+temperature", progress=False)
    assert res.table["cv_nll"].notna().all()
    res2 = ck.search_forms(X, y, template, local_model, candidates=CANDIDATES, n_proposed=0,
                           calibration=ck.TemperatureScaling(), progress=False)
    res3 = ck.search_forms(X, y, template, local_model, candidates=CANDIDATES, n_proposed=0,
                           calibration="temperature", progress=False)
    assert res2.table["cv_nll"].tolist() == res3.table["cv_nll"].tolist()


def test_a_top_k_api_ranks_the_given_candidates_exactly(local_model, tmp_path) -> None:
    from calibkit.server import create_key
    from server_harness import ServerProcess

    X, y = sst2("dev", 18)
    template = "Review: {text}\nSentiment:"
    candidates = {0: [" negative", " bad"], 1: [" positive", " good"]}
    key, _ = create_key(tmp_path / "keys.json")
    with ServerProcess(["--model", "llama-8b", "--keys-file", str(tmp_path / "keys.json")], tmp_path) as srv:
        client = ck.Client(srv.base, key, model="llama-8b", cache=False)
        assert not sees_vocabulary(client)
        with pytest.raises(ValueError, match="shows only its top tokens.*give candidates for every class"):
            ck.search_forms(X, y, template, client, progress=False)
        remote = ck.search_forms(X, y, template, client, candidates=candidates, cv=3, progress=False)
        client.close()
    local = ck.search_forms(X, y, template, local_model, candidates=candidates, n_proposed=0, cv=3, progress=False)
    assert set(remote.table["source"]) == {"given"} and len(remote.table) == 4
    cols = ["class", "form", "rank", "chosen"]
    assert remote.table[cols].equals(local.table[cols])
    np.testing.assert_allclose(remote.table["cv_nll"], local.table["cv_nll"], atol=1e-4)


def test_demonstrations_are_written_with_the_first_candidates(local_model, sentiment) -> None:
    X, y, _ = sentiment
    tpl = ck.PromptTemplate("Review: {text}\nSentiment:", demonstrations=[("a fine film", "positive")])
    res = ck.search_forms(X[:20] + X[-20:], y[:20] + y[-20:], tpl, local_model, candidates=CANDIDATES,
                          n_proposed=0, cv=2, progress=False)
    prompts = tpl.format_many(X[:1], ck.Verbalizer({"negative": " negative", "positive": " positive"}))
    assert prompts[0].startswith("Review: a fine film\nSentiment: positive\n\n")
    s = ck.score(X[:1], tpl, {"negative": " negative", "positive": " positive"}, local_model, method="exact")
    assert res.scores.form_logprobs[0, res.scores.forms.index(" positive")] == s.form_logprobs[0, 1]
    with pytest.raises(ValueError, match="demonstrations.*give candidates for every class"):
        ck.search_forms(X, y, tpl, local_model, candidates={"negative": [" no"], "positive": []}, progress=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(y=["negative"] * 3), "y has 3 labels for 60 examples"),
    (dict(cv=40), "class 'negative' has 30 examples and cv=40 folds"),
    (dict(select_by="ece"), "select_by must be 'nll' or 'accuracy'"),
    (dict(candidates={"negative": [" good"], "positive": [" good"]}),
     r"candidates= gives the form ' good' for 'negative' and 'positive'; each form belongs to one class"),
    (dict(candidates={"neg": [" bad"], "pos": [" good"]}), "labels 'negative', 'positive' are not among the classes"),
    (dict(candidates={"negative": [" bad"], "positive": []}, n_proposed=0), r"no forms for class\(es\) \['positive'\]"),
    (dict(calibration="temperature+contextual"), "cannot come before"),
    (dict(calibration=3), "calibration must be a name"),
    (dict(n_proposed=-1), "n_proposed"),
])
def test_bad_input_is_a_clear_error(local_model, sentiment, kwargs, match) -> None:
    X, y, template = sentiment
    kw = dict(y=y, candidates=CANDIDATES, progress=False) | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        ck.search_forms(X, kw.pop("y"), template, local_model, **kw)


def test_content_free_inputs_are_the_scoring_modules(found) -> None:
    assert CONTENT_FREE == ("N/A", "", "[MASK]")  # what the contextual correction in the table scored


def test_a_rerun_of_a_search_asks_the_model_nothing_and_a_changed_setting_asks_again(sentiment, tmp_path) -> None:
    X, y, template = sentiment
    X, y = X[:12] + X[30:42], y[:12] + y[30:42]  # 12 of each class
    path = tmp_path / "c.sqlite"

    def search(model: ck.LocalModel, rows: slice = slice(None)) -> ck.FormSearch:
        return ck.search_forms(X[rows], y[rows], template, model, candidates=CANDIDATES, n_proposed=2, cv=3,
                               progress=False)

    def counting(model: ck.LocalModel) -> list[str]:
        asked: list[str] = []
        whole = model.next_token_logprobs
        model.next_token_logprobs = lambda p: asked.append(p) or whole(p)  # type: ignore[method-assign]
        return asked

    first = ck.LocalModel(cache=path)
    asked = counting(first)
    found = search(first)
    assert len(asked) == 24 and first.requests_made > 0

    again = ck.LocalModel(cache=path)
    asked = counting(again)
    rerun = search(again)
    assert asked == [] and again.requests_made == 0 and again.cache_hits > 0
    assert rerun.table.equals(found.table) and rerun.verbalizer == found.verbalizer

    changed = ck.LocalModel(cache=path)
    asked = counting(changed)
    search(changed, slice(1, -1))  # other examples: another question about the vocabulary
    assert len(asked) == 22 and changed.requests_made >= 1
