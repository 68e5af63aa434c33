"""scikit-learn estimators over the embedded model: Pipeline, GridSearchCV, cross_val_predict,
CalibratedClassifierCV, MAPIE, clone and pickle; labels as scikit-learn hands them over; chains
of calibrators."""

from __future__ import annotations

import itertools
import json
import pickle
import zlib

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, log_loss, make_scorer, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict, cross_validate
from sklearn.pipeline import make_pipeline

import calibkit as ck
from calibkit.backends.llamacpp.engine import Engine
from calibkit.estimator import CHAIN_ORDER, check_calibration, make_calibrator

from helpers import SHARED_DATA, sst2

TPL = "Review: {text}\nSentiment:"
VERB = {"neg": " negative", "pos": " positive"}


def _data(n: int = 40) -> tuple[list[str], np.ndarray]:
    X, y = sst2("dev", n)
    return X, np.array(["pos" if v else "neg" for v in y], dtype=object)


@pytest.fixture(scope="module")
def cached_model(tmp_path_factory):
    """The embedded model behind a cache that this module's tests share: each example is scored once."""
    model = ck.LocalModel(cache=tmp_path_factory.mktemp("estimator") / "answers.sqlite")
    model.engine  # loaded now, before any test that forbids loading runs
    return model


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if anything loads a model (the shared one is already loaded)."""
    def refuse(self, key):
        raise AssertionError("a model was loaded again")

    monkeypatch.setattr(Engine, "__init__", refuse)


def test_grid_search_over_templates_and_calibrators(cached_model) -> None:
    X, y = _data(40)
    grid = GridSearchCV(
        ck.LogprobClassifier(cached_model, verbalizer=VERB),
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


def test_pipeline_of_vectorizer_and_calibrator_with_cross_val_predict(cached_model) -> None:
    X, y = _data(30)
    pipe = make_pipeline(ck.LogprobVectorizer(cached_model, TPL, VERB), ck.TemperatureScaling())
    proba = cross_val_predict(pipe, X, y, cv=3, method="predict_proba")
    assert proba.shape == (30, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    pipe.fit(X, y)
    assert list(pipe.classes_) == ["neg", "pos"]
    assert list(pipe[0].get_feature_names_out()) == ["logprob[neg]", "logprob[pos]"]


def test_classifier_interface(cached_model) -> None:
    X, y = _data(30)
    clf = ck.LogprobClassifier(cached_model, TPL, VERB, calibration="contextual+temperature").fit(X[:20], y[:20])
    proba = clf.predict_proba(X[20:])
    assert proba.shape == (10, 2) and list(clf.classes_) == ["neg", "pos"]
    np.testing.assert_array_equal(clf.predict(X[20:]), clf.classes_[np.argmax(proba, axis=1)])
    np.testing.assert_allclose(clf.decision_function(X[20:]), np.log(proba[:, 1]) - np.log(proba[:, 0]))
    assert 0 <= clf.score(X[20:], y[20:]) <= 1
    none = ck.LogprobClassifier(cached_model, TPL, VERB, calibration="none").fit(X[:20], y[:20])
    np.testing.assert_allclose(none.predict_proba(X[20:]), none.scores(X[20:]).probs)
    with pytest.raises(ValueError, match="'maybe' that the verbalizer does not name"):
        ck.LogprobClassifier(cached_model, TPL, VERB).fit(X[:3], ["pos", "neg", "maybe"])
    with pytest.raises(ValueError, match="unknown calibration 'magic'"):
        ck.LogprobClassifier(cached_model, TPL, VERB, calibration="magic").fit(X[:4], y[:4])


def test_clone_and_pickle_neither_copy_nor_reload_the_model(cached_model, no_model_loading) -> None:
    X, y = _data(12)
    clf = ck.LogprobClassifier(cached_model, TPL, VERB).fit(X, y)
    twin = clone(clf)
    assert twin.backend is cached_model
    again = pickle.loads(pickle.dumps(clf))
    assert again.vectorizer_.backend_.engine is cached_model.engine
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
def test_a_dataframe_fills_a_multi_field_template(cached_model) -> None:
    rows = pd.read_json(SHARED_DATA / "rte" / "val.jsonl", lines=True).head(16)
    tpl = "{premise}\nQuestion: {hypothesis} True or False?\nAnswer:"
    clf = ck.LogprobClassifier(cached_model, tpl, {"entailment": " True", "not_entailment": " False"},
                               calibration="contextual")
    clf.fit(rows[["premise", "hypothesis"]], rows["label"])
    assert clf.predict_proba(rows[["premise", "hypothesis"]].tail(4)).shape == (4, 2)


# -- labels as scikit-learn hands them over ----------------------------------------------------
# cross_val_predict(method="predict_proba"), CalibratedClassifierCV and MAPIE's cross-conformal
# classifier fit the estimator on LabelEncoder codes 0..K-1 instead of the labels.

def _short_sst2(per_class: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The first short SST-2 dev sentences, positive and negative in turn; y is 1 for positive."""
    X, y = sst2("dev", 200)
    pos = [x for x, label in zip(X, y) if label == 1 and len(x) < 60][:per_class]
    neg = [x for x, label in zip(X, y) if label == 0 and len(x) < 60][:per_class]
    # an array (not a list), as MAPIE asks of X
    return np.array([x for pair in zip(pos, neg) for x in pair], dtype=object), np.array([1, 0] * per_class)


# Each verbalizer is written out of sorted order, so classes_ (sorted) differs from it.
LABELS = {
    "string": ({"pos": " positive", "neg": " negative"}, lambda b: np.where(b == 1, "pos", "neg")),
    "integer": ({1: " positive", 0: " negative"}, lambda b: b),
    # integer classes that are not 0..K-1: scikit-learn's codes 0, 1 mix a class (1) and a non-class (0)
    "mixed": ({1: " positive", -1: " negative"}, lambda b: np.where(b == 1, 1, -1)),
}


@pytest.mark.filterwarnings("ignore:temperature reached the bound")  # folds of 4 to 11 examples
@pytest.mark.parametrize("kind", list(LABELS))
def test_every_sklearn_entry_point_reads_string_integer_and_mixed_labels(cached_model, kind) -> None:
    verbalizer, labelled = LABELS[kind]
    X, b = _short_sst2()
    y = labelled(b)
    labels = sorted(set(y.tolist()))  # scikit-learn's order
    positive = labels[1]
    clf = ck.LogprobClassifier(cached_model, TPL, verbalizer)
    cv = StratifiedKFold(3)

    # The reference: each fold fitted on its labels as they are.
    oof = np.empty((len(X), 2))
    for train, test in cv.split(X, y):
        fold = clone(clf).fit(X[train], y[train])
        assert list(fold.classes_) == labels
        oof[test] = fold.predict_proba(X[test])
    np.testing.assert_allclose(cross_val_predict(clf, X, y, cv=cv, method="predict_proba"), oof)
    np.testing.assert_array_equal(cross_val_predict(clf, X, y, cv=cv), np.array(labels)[oof.argmax(axis=1)])

    # scikit-learn's brier scorer has no positive label to go by with string labels, for any classifier
    brier = "neg_brier_score" if kind != "string" else make_scorer(
        brier_score_loss, pos_label=positive, response_method="predict_proba", greater_is_better=False)
    scoring = {"accuracy": "accuracy", "neg_log_loss": "neg_log_loss", "roc_auc": "roc_auc",
               "roc_auc_ovr": "roc_auc_ovr", "f1_macro": "f1_macro", "neg_brier_score": brier}
    result = cross_validate(clf, X, y, cv=cv, scoring=scoring, error_score="raise")
    for i, (_, test) in enumerate(cv.split(X, y)):
        p, t = oof[test], y[test]
        by_hand = {
            "accuracy": accuracy_score(t, np.array(labels)[p.argmax(axis=1)]),
            "neg_log_loss": -log_loss(t, p, labels=labels),
            "roc_auc": roc_auc_score(t == positive, p[:, 1]),  # the scorer uses decision_function
            "roc_auc_ovr": roc_auc_score(t == positive, p[:, 1]),
            "f1_macro": f1_score(t, np.array(labels)[p.argmax(axis=1)], average="macro"),
            "neg_brier_score": -np.mean((p[:, 1] - (t == positive)) ** 2),
        }
        for name, value in by_hand.items():
            assert result[f"test_{name}"][i] == pytest.approx(value), name
    for name, scorer in scoring.items():
        grid = GridSearchCV(clf, {"calibration": ["temperature", "none"]}, cv=cv, scoring=scorer,
                            error_score="raise").fit(X, y)
        assert grid.cv_results_["mean_test_score"][0] == pytest.approx(result[f"test_{name}"].mean()), name

    full = clone(clf).fit(X, y)
    for method, ensemble in itertools.product(("sigmoid", "isotonic", "temperature"), (True, False)):
        cal = CalibratedClassifierCV(clf, method=method, cv=cv, ensemble=ensemble).fit(X, y)
        assert list(cal.classes_) == labels
        np.testing.assert_allclose(cal.predict_proba(X).sum(axis=1), 1.0)
        if method == "temperature" and not ensemble:  # fitted on codes; temperature keeps the arg-max
            np.testing.assert_array_equal(cal.predict(X), full.predict(X))

    mapie = pytest.importorskip("mapie.classification")
    split = mapie.SplitConformalClassifier(clf, confidence_level=0.8, prefit=False)
    predicted, sets = split.fit(X[:6], y[:6]).conformalize(X[6:12], y[6:12]).predict_set(X[12:])
    np.testing.assert_array_equal(predicted, clone(clf).fit(X[:6], y[:6]).predict(X[12:]))
    assert sets.shape == (4, 2, 1)
    cross = mapie.CrossConformalClassifier(clf, confidence_level=0.8, cv=cv).fit_conformalize(X, y)
    predicted, sets = cross.predict_set(X)  # its folds are fitted on codes
    np.testing.assert_array_equal(predicted, full.predict(X))
    assert sets.shape == (len(X), 2, 1)


@pytest.mark.skipif(not (SHARED_DATA / "rte").exists(), reason="needs ../shared/data/rte")
@pytest.mark.filterwarnings("ignore:temperature reached the bound")  # folds of 8 examples
def test_cross_val_predict_proba_of_a_pipeline_with_string_labels(cached_model) -> None:
    # The report: "y has labels 0, 1 that the verbalizer does not name" from cross_val_predict.
    rows = pd.read_json(SHARED_DATA / "rte" / "val.jsonl", lines=True)
    rows = rows.assign(n=rows.premise.str.len() + rows.hypothesis.str.len()).sort_values("n", kind="stable")
    rows = pd.concat([rows[rows.label == c].head(6) for c in ("entailment", "not_entailment")])
    X, y = rows[["premise", "hypothesis"]], rows["label"]
    tpl = "{premise}\nQuestion: {hypothesis} True or False?\nAnswer:"
    pipe = make_pipeline(ck.LogprobClassifier(cached_model, tpl, {"entailment": " True", "not_entailment": " False"}))
    cv = StratifiedKFold(3)
    proba = cross_val_predict(pipe, X, y, cv=cv, method="predict_proba")
    for train, test in cv.split(X, y):
        fold = clone(pipe).fit(X.iloc[train], y.iloc[train])
        np.testing.assert_allclose(proba[test], fold.predict_proba(X.iloc[test]))
    assert list(pipe.fit(X, y).classes_) == ["entailment", "not_entailment"]


def test_a_chain_of_prior_correction_scaling_and_binning(cached_model) -> None:
    X, b = _short_sst2()
    y = np.where(b == 1, "pos", "neg")
    clf = ck.LogprobClassifier(cached_model, TPL, VERB, calibration="contextual+temperature+isotonic").fit(X, y)
    assert [name for name, _ in clf.calibrator_.steps] == [
        "contextualcalibration", "temperaturescaling", "isotoniccalibration"]
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.score(X, y) >= 0.5


# -- the same rules, fast, over an in-memory model ---------------------------------------------

class WordModel(ck.Backend):
    """log P(form | prompt) grows with the prompt's cue words for the form, plus a fixed jitter."""

    identity = {"backend": "words", "model": "words-v1"}
    exact_is_cheap = True
    cues = {" positive": ("good", "great"), " negative": ("bad", "dull"), " neutral": ("so-so",)}

    def _answer_top_k(self, prompts: list[str], k: int, *, keep=None) -> list[dict[str, float]]:
        raise AssertionError("asked for the top-k; these tests score exactly")

    def _answer_continuations(self, pairs: list[tuple[str, str]], *, keep=None) -> list[ck.Continuation]:
        out = []
        for prompt, form in pairs:
            jitter = zlib.crc32(f"{prompt}|{form}".encode()) % 1000 / 500.0
            cue = sum(prompt.count(w) for w in self.cues.get(form, ()))
            out.append(ck.Continuation((form,), (-4.0 + cue + jitter,)))
        return out


_CUES = ["good", "bad", "so-so", "great", "dull", "so-so"] * 3  # positive, negative, neutral in turn
WORDS = np.array([f"a {w} film, take {i}" for i, w in enumerate(_CUES)], dtype=object)
THREE = {"pos": " positive", "neg": " negative", "mid": " neutral"}  # sorted: mid, neg, pos
THREE_Y = np.array(["pos", "neg", "mid"] * 6, dtype=object)


def test_integer_codes_are_read_only_where_they_cannot_be_misread() -> None:
    model = WordModel(cache=False)
    by_name = ck.LogprobClassifier(model, TPL, THREE).fit(WORDS, THREE_Y)
    assert list(by_name.classes_) == ["mid", "neg", "pos"]
    codes = np.searchsorted(by_name.classes_, THREE_Y)  # LabelEncoder's codes
    by_code = ck.LogprobClassifier(model, TPL, THREE).fit(WORDS, codes)
    assert list(by_code.classes_) == [0, 1, 2] and list(by_code.verbalizer_classes_) == ["mid", "neg", "pos"]
    np.testing.assert_allclose(by_code.predict_proba(WORDS), by_name.predict_proba(WORDS))
    np.testing.assert_array_equal(by_code.predict(WORDS), np.searchsorted(by_name.classes_, by_name.predict(WORDS)))

    # integer classes are themselves, never codes, whatever their order in the verbalizer
    as_int = {"neg": 0, "mid": 1, "pos": 2}
    ints = ck.LogprobClassifier(model, TPL, {2: " positive", 0: " negative", 1: " neutral"})
    ints.fit(WORDS, [as_int[c] for c in THREE_Y])
    assert list(ints.classes_) == [0, 1, 2] and list(ints.verbalizer_classes_) == [0, 1, 2]
    np.testing.assert_allclose(ints.predict_proba(WORDS), by_name.predict_proba(WORDS)[:, [1, 0, 2]])

    with pytest.raises(ValueError, match="codes can be read back only when y holds all 3 of them"):
        ck.LogprobClassifier(model, TPL, THREE).fit(WORDS[:6], np.array([0, 1] * 3))
    with pytest.raises(ValueError, match="mix types that do not sort"):
        ck.LogprobClassifier(model, TPL, {"pos": " positive", 0: " negative"}).fit(WORDS[:4], [1, 0, 1, 0])
    for wrong in ([0.0, 1.0, 2.0], [True, False, True], ["pos", "neg", "maybe"]):
        with pytest.raises(ValueError, match="that the verbalizer does not name"):
            ck.LogprobClassifier(model, TPL, THREE).fit(WORDS[:3], wrong)
    with pytest.raises(ValueError, match="verbalizer must map each class to its form"):
        ck.LogprobClassifier(model, TPL, [" negative", " positive"]).fit(WORDS[:2], [0, 1])


def test_columns_follow_the_sorted_classes() -> None:
    model = WordModel(cache=False)
    clf = ck.LogprobClassifier(model, TPL, THREE, calibration="none").fit(WORDS, THREE_Y)
    raw = ck.score(WORDS, TPL, THREE, model)  # the verbalizer's order: pos, neg, mid
    np.testing.assert_allclose(clf.predict_proba(WORDS), raw.probs[:, [2, 1, 0]])
    assert clf.scores(WORDS).classes == ["mid", "neg", "pos"]
    two = ck.LogprobClassifier(model, TPL, {"pos": " positive", "neg": " negative"}, calibration="none")
    two.fit(WORDS[[0, 1]], ["pos", "neg"])
    lp = np.log(two.predict_proba(WORDS))
    np.testing.assert_allclose(two.decision_function(WORDS), lp[:, 1] - lp[:, 0])  # log-odds of classes_[1], 'pos'
    # a mixed-type verbalizer does not sort: its own order, as scikit-learn cannot encode such labels anyway
    mixed = ck.LogprobClassifier(model, TPL, {"pos": " positive", 0: " negative"}, calibration="none")
    mixed.fit(WORDS[:4], ["pos", 0, "pos", 0])
    assert mixed.classes_.tolist() == ["pos", 0]
    np.testing.assert_allclose(mixed.predict_proba(WORDS), ck.score(WORDS, TPL, {"pos": " positive", 0: " negative"},
                                                                     model).probs)
    assert set(mixed.predict(WORDS).tolist()) <= {"pos", 0}
    # a calibrator estimator that learns only the classes in y still lands in the right columns
    no_mid = np.where(THREE_Y == "mid", "neg", THREE_Y)
    with pytest.warns(UserWarning, match=r"no example of \['mid'\]: predict_proba gives those probability 0"):
        lr = ck.LogprobClassifier(model, TPL, THREE, calibration=LogisticRegression()).fit(WORDS, no_mid)
    proba = lr.predict_proba(WORDS)
    assert proba.shape == (len(WORDS), 3) and (proba[:, 0] == 0).all()  # no 'mid' in y


def test_vectorizer_columns_are_in_the_order_sklearn_encodes_labels() -> None:
    model = WordModel(cache=False)
    vec = ck.LogprobVectorizer(model, TPL, THREE).fit(WORDS)
    assert list(vec.get_feature_names_out()) == ["logprob[mid]", "logprob[neg]", "logprob[pos]"]
    pipe = make_pipeline(ck.LogprobVectorizer(model, TPL, THREE), ck.TemperatureScaling())
    cv = StratifiedKFold(3)
    oof = np.empty((len(WORDS), 3))
    for train, test in cv.split(WORDS, THREE_Y):
        oof[test] = clone(pipe).fit(WORDS[train], THREE_Y[train]).predict_proba(WORDS[test])
    # the calibrator reads the codes 0..2 as columns, which are the sorted classes
    np.testing.assert_allclose(cross_val_predict(pipe, WORDS, THREE_Y, cv=cv, method="predict_proba"), oof)


# -- chains of calibrators ---------------------------------------------------------------------

def _chains() -> list[str]:
    kinds = [[None, *names] for _, names in CHAIN_ORDER]
    return ["+".join(p for p in parts if p) for parts in itertools.product(*kinds) if any(parts)]


def test_every_chain_that_can_be_spelt_in_order_fits_and_predicts() -> None:
    model = WordModel(cache=False)
    chains = _chains()
    assert "contextual+temperature+isotonic" in chains and len(chains) == 4 * 5 * 3 - 1
    kw = dict(backend=model, template=TPL, verbalizer=THREE, texts=["good bad so-so dull film"], method="exact")
    scores = ck.score(WORDS, TPL, THREE, model)
    for chain in chains:
        if "platt" in chain:
            continue
        cal = make_calibrator(chain, ["pos", "neg", "mid"], **kw).fit(scores, THREE_Y)
        proba = cal.predict_proba(scores)
        assert proba.shape == (len(WORDS), 3), chain
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, err_msg=chain)
        assert list(cal.classes_) == ["pos", "neg", "mid"], chain
    # platt takes two classes: the first two columns
    kw["verbalizer"] = {"pos": " positive", "neg": " negative"}
    two, y2 = np.asarray(scores)[:, :2], np.where(THREE_Y == "pos", "pos", "neg")
    for chain in [c for c in chains if "platt" in c]:
        cal = make_calibrator(chain, ["pos", "neg"], **kw).fit(two, y2)
        np.testing.assert_allclose(cal.predict_proba(two).sum(axis=1), 1.0, err_msg=chain)


@pytest.mark.parametrize("chain, says", [
    ("isotonic+temperature", "the binning 'isotonic' cannot come before the scaling 'temperature'"),
    ("temperature+contextual", "the scaling 'temperature' cannot come before the prior correction 'contextual'"),
    ("contextual+batch", "'contextual' and 'batch' are both a prior correction"),
    ("temperature+vector", "'temperature' and 'vector' are both a scaling"),
    ("isotonic+histogram", "'isotonic' and 'histogram' are both a binning"),
    ("none+temperature", "'none' fits nothing and takes no part in a chain"),
    ("contextual+", "an empty name in calibration='contextual+'"),
    ("contextual+magic", "unknown calibration 'magic' in calibration='contextual+magic'"),
    ("contextual+platt", "'platt' calibrates two classes and these are 3"),
])
def test_a_chain_that_cannot_work_fails_before_anything_is_scored(chain, says) -> None:
    model = WordModel(cache=False)
    with pytest.raises(ValueError) as made:
        make_calibrator(chain, ["pos", "neg", "mid"], backend=model, template=TPL, verbalizer=THREE)
    with pytest.raises(ValueError) as fitted:
        ck.LogprobClassifier(model, TPL, THREE, calibration=chain).fit(WORDS, THREE_Y)
    for message in (str(made.value), str(fitted.value)):
        assert says in message and f"calibration={chain!r}" in message
        # and what is allowed
        assert ("'contextual+temperature+isotonic'" if "platt" not in chain else "'vector'") in message
    assert model.requests_made == 0


def test_check_calibration_splits_a_chain() -> None:
    assert check_calibration("contextual + temperature") == ["contextual", "temperature"]
    assert check_calibration("none") == ["none"]
    with pytest.raises(ValueError, match="calibration must be a name"):
        check_calibration(None)  # type: ignore[arg-type]


def test_a_missing_example_is_an_error_before_anything_is_scored() -> None:
    model = WordModel(cache=False)
    X = pd.Series(["a fine film", None, "a dull mess"])
    with pytest.raises(ValueError, match=r"example 1 \(1 of 3\) has no value for field 'text'"):
        ck.LogprobClassifier(model, TPL, THREE, calibration="domain").fit(X, ["pos", "neg", "neg"])
    assert model.requests_made == 0


def test_y_of_one_class_is_named_by_its_label(cached_model) -> None:
    X, _ = _data(4)
    for calibration in ("temperature", "contextual+temperature"):
        with pytest.raises(ValueError) as e:
            ck.LogprobClassifier(cached_model, TPL, VERB, calibration=calibration).fit(X, ["pos"] * 4)
        assert "y holds 1 class only (['pos'])" in str(e.value) and "[1]" not in str(e.value), str(e.value)
        assert f"calibration={calibration!r}" in str(e.value)
