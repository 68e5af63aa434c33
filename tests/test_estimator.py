"""scikit-learn estimators over the embedded model: Pipeline, GridSearchCV, cross_val_predict,
clone and pickle."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_predict
from sklearn.pipeline import make_pipeline

import calibkit as ck
from calibkit.backends.llamacpp.engine import Engine

from helpers import SHARED_DATA, sst2

TPL = "Review: {text}\nSentiment:"
VERB = {"neg": " negative", "pos": " positive"}


def _data(n: int = 40) -> tuple[list[str], np.ndarray]:
    X, y = sst2("dev", n)
    return X, np.array(["pos" if v else "neg" for v in y], dtype=object)


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if anything loads a model (the shared one is already loaded)."""
    def refuse(self, key):
        raise AssertionError("a model was loaded again")

    monkeypatch.setattr(Engine, "__init__", refuse)


def test_grid_search_over_templates_and_calibrators(local_model) -> None:
    X, y = _data(40)
    grid = GridSearchCV(
        ck.LogprobClassifier(local_model, verbalizer=VERB),
        {"template": [TPL, "Text: {text}\nThe sentiment is"], "calibration": ["temperature", "contextual"]},
        cv=2,
    )
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    # contextual calibration undoes this model's bias towards one label
    scores = dict(zip(map(json.dumps, grid.cv_results_["params"]), grid.cv_results_["mean_test_score"]))
    assert scores[json.dumps({"calibration": "contextual", "template": TPL})] > scores[
        json.dumps({"calibration": "temperature", "template": TPL})]
    assert set(grid.predict(X[:5])) <= {"neg", "pos"}


def test_pipeline_of_vectorizer_and_calibrator_with_cross_val_predict(local_model) -> None:
    X, y = _data(30)
    pipe = make_pipeline(ck.LogprobVectorizer(local_model, TPL, VERB), ck.TemperatureScaling())
    proba = cross_val_predict(pipe, X, y, cv=3, method="predict_proba")
    assert proba.shape == (30, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    pipe.fit(X, y)
    assert list(pipe.classes_) == ["neg", "pos"]
    assert list(pipe[0].get_feature_names_out()) == ["logprob[neg]", "logprob[pos]"]


def test_classifier_interface(local_model) -> None:
    X, y = _data(30)
    clf = ck.LogprobClassifier(local_model, TPL, VERB, calibration="contextual+temperature").fit(X[:20], y[:20])
    proba = clf.predict_proba(X[20:])
    assert proba.shape == (10, 2) and list(clf.classes_) == ["neg", "pos"]
    np.testing.assert_array_equal(clf.predict(X[20:]), clf.classes_[np.argmax(proba, axis=1)])
    np.testing.assert_allclose(clf.decision_function(X[20:]), np.log(proba[:, 1]) - np.log(proba[:, 0]))
    assert 0 <= clf.score(X[20:], y[20:]) <= 1
    none = ck.LogprobClassifier(local_model, TPL, VERB, calibration="none").fit(X[:20], y[:20])
    np.testing.assert_allclose(none.predict_proba(X[20:]), none.scores(X[20:]).probs)
    with pytest.raises(ValueError, match="'maybe' that the verbalizer does not name"):
        ck.LogprobClassifier(local_model, TPL, VERB).fit(X[:3], ["pos", "neg", "maybe"])
    with pytest.raises(ValueError, match="unknown calibration 'magic'"):
        ck.LogprobClassifier(local_model, TPL, VERB, calibration="magic").fit(X[:4], y[:4])


def test_clone_and_pickle_neither_copy_nor_reload_the_model(local_model, no_model_loading) -> None:
    X, y = _data(12)
    clf = ck.LogprobClassifier(local_model, TPL, VERB).fit(X, y)
    twin = clone(clf)
    assert twin.backend is local_model
    again = pickle.loads(pickle.dumps(clf))
    assert again.vectorizer_.backend_.engine is local_model.engine
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert len(pickle.dumps(clf)) < 100_000  # the model's weights do not travel


def test_an_example_scored_twice_comes_from_the_cache(tmp_path) -> None:
    X, y = _data(10)
    model = ck.LocalModel(cache=tmp_path / "c.sqlite")
    clf = ck.LogprobClassifier(model, TPL, VERB).fit(X, y)
    sent = model.requests_made
    clf.predict_proba(X)
    assert model.requests_made == sent and model.cache_hits >= 10


@pytest.mark.skipif(not (SHARED_DATA / "rte").exists(), reason="needs ../shared/data/rte")
def test_a_dataframe_fills_a_multi_field_template(local_model) -> None:
    rows = pd.read_json(SHARED_DATA / "rte" / "val.jsonl", lines=True).head(16)
    tpl = "{premise}\nQuestion: {hypothesis} True or False?\nAnswer:"
    clf = ck.LogprobClassifier(local_model, tpl, {"entailment": " True", "not_entailment": " False"},
                               calibration="contextual")
    clf.fit(rows[["premise", "hypothesis"]], rows["label"])
    assert clf.predict_proba(rows[["premise", "hypothesis"]].tail(4)).shape == (4, 2)
