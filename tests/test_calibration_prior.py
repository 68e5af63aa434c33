import pickle
import sys
import types

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline

from calibkit.calibration import (
    BatchCalibration,
    ContextualCalibration,
    DomainContextCalibration,
    TemperatureScaling,
    random_domain_texts,
)


class Scores:
    def __init__(self, logprobs, classes):
        self.logprobs = np.asarray(logprobs, dtype=float)
        self.classes = list(classes)

    def __array__(self, dtype=None, copy=None):
        return self.logprobs


def test_contextual_calibration_worked_example():
    """Zhao et al. 2021, by hand.

    Label probabilities (unnormalised, as a base LM gives them) of the three
    content-free prompts:       N/A    [0.030, 0.010]
                                ""     [0.020, 0.020]
                                [MASK] [0.040, 0.000]
    Their mean is [0.030, 0.010], normalised p_cf = [0.75, 0.25], so
    W = diag(1/0.75, 1/0.25) = diag(4/3, 4).
    A test prompt with label probabilities [0.006, 0.004] normalises to
    p = [0.6, 0.4]; W p = [0.8, 1.6]; renormalised q = [1/3, 2/3].
    The uncalibrated prediction (class 0) flips to class 1.
    """
    cf = np.array([[0.030, 0.010], [0.020, 0.020], [0.040, 0.000]])
    x = np.array([[0.006, 0.004]])
    with np.errstate(divide="ignore"):
        log_cf = np.log(cf)  # log 0 = -inf: a class with no mass
    cc = ContextualCalibration(content_free=log_cf).fit(np.log(x))
    np.testing.assert_allclose(cc.prior_, [0.75, 0.25])
    np.testing.assert_allclose(cc.predict_proba(np.log(x)), [[1 / 3, 2 / 3]])
    assert cc.predict(np.log(x)).tolist() == [1]
    # the same numbers from Zhao et al.'s reference code path: W = inv(diag(p_cf)), b = 0
    p_cf = cf.mean(axis=0) / cf.mean(axis=0).sum()
    W = np.linalg.inv(np.identity(2) * p_cf)
    p = x[0] / x[0].sum()
    calibrated = W @ p
    np.testing.assert_allclose(cc.predict_proba(np.log(x))[0], calibrated / calibrated.sum())
    # probabilities in, the same answer
    same = ContextualCalibration(content_free=cf, input="probs").fit(x)
    np.testing.assert_allclose(same.predict_proba(x), [[1 / 3, 2 / 3]])


def test_content_free_prior_averages_raw_probabilities_like_the_reference_code():
    cf = np.array([[0.09, 0.01], [0.001, 0.009]])  # very different label mass
    cc = ContextualCalibration(content_free=cf, input="probs").fit(cf)
    np.testing.assert_allclose(cc.prior_, [0.091 / 0.11, 0.019 / 0.11])  # not [0.5, 0.5]


def test_prior_corrections_need_no_labels_but_need_their_prior():
    X = np.log([[0.2, 0.8], [0.6, 0.4]])
    assert BatchCalibration().fit(X).classes_.tolist() == [0, 1]
    with pytest.raises(ValueError, match="from_backend"):
        ContextualCalibration().fit(X)
    with pytest.raises(ValueError, match="content_free has 3 columns"):
        ContextualCalibration(content_free=[[0.0, 0.0, 0.0]]).fit(X)


def test_batch_calibration_divides_by_the_batch_mean():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([4, 1, 1], size=200)
    bc = BatchCalibration(input="probs").fit(p)
    mean = p.mean(axis=0)
    np.testing.assert_allclose(bc.prior_, mean / mean.sum())
    expected = p / mean
    np.testing.assert_allclose(bc.predict_proba(p), expected / expected.sum(axis=1, keepdims=True))
    # the corrected batch is balanced on average: the label bias is gone
    assert np.ptp(bc.predict_proba(p).mean(axis=0)) < np.ptp(p.mean(axis=0)) / 3


def test_batch_calibration_running_estimate_equals_the_full_batch():
    rng = np.random.default_rng(1)
    X = np.log(rng.dirichlet([3, 1], size=300)) + np.log(0.002)
    stream = BatchCalibration()
    for chunk in np.array_split(X, 7):
        stream.partial_fit(chunk)
    np.testing.assert_allclose(stream.prior_, BatchCalibration().fit(X).prior_)
    assert stream.n_seen_ == 300
    w = rng.integers(1, 4, size=300)
    weighted = BatchCalibration().fit(X, sample_weight=w)
    np.testing.assert_allclose(weighted.prior_, BatchCalibration().fit(np.repeat(X, w, axis=0)).prior_)


def test_prior_correction_then_temperature_is_one_pipeline():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(600, 3)) * 2
    y = (z / 2 + rng.gumbel(size=z.shape)).argmax(axis=1)
    biased = z + np.array([1.5, 0.0, 0.0])  # the model leans towards class 0
    cf = np.array([[1.5, 0.0, 0.0]])
    pipe = make_pipeline(ContextualCalibration(content_free=cf), TemperatureScaling()).fit(biased, y)
    proba = pipe.predict_proba(biased)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # the correction removes the bias exactly, so the temperature matches the unbiased fit
    assert pipe[-1].temperature_ == pytest.approx(TemperatureScaling().fit(z, y).temperature_, rel=1e-6)
    again = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(again.predict_proba(biased), proba)


def test_transform_returns_corrected_log_probabilities():
    X = np.log([[0.2, 0.8], [0.6, 0.4]])
    bc = BatchCalibration().fit(X)
    np.testing.assert_allclose(np.exp(bc.transform(X)), bc.predict_proba(X))


class FakeTemplate(str):
    fields = ("question", "text")


@pytest.fixture
def fake_core(monkeypatch):
    """A stand-in for calibkit.scoring.score that records what it is asked to score."""
    calls = []

    def score(examples, template, verbalizer, backend, method="auto", progress=False):
        calls.append({"examples": list(examples), "template": template, "method": method})
        k = len(verbalizer)
        rows = [np.log(np.arange(1, k + 1) / 100.0 * (i + 1)) for i in range(len(calls[-1]["examples"]))]
        return Scores(rows, list(verbalizer))

    module = types.ModuleType("calibkit.scoring")
    module.score = score
    monkeypatch.setitem(sys.modules, "calibkit.scoring", module)
    return calls


def test_contextual_from_backend_fills_every_field(fake_core):
    verbalizer = {"no": [" no"], "yes": [" yes"]}
    cc = ContextualCalibration.from_backend("backend", FakeTemplate("Q: {question}\n{text}\nA:"), verbalizer)
    assert fake_core[0]["examples"] == [
        {"question": "N/A", "text": "N/A"},
        {"question": "", "text": ""},
        {"question": "[MASK]", "text": "[MASK]"},
    ]
    assert cc.classes == ["no", "yes"]
    cc.fit(np.zeros((1, 2)))
    np.testing.assert_allclose(cc.prior_, [1 / 3, 2 / 3])


def test_domain_context_from_backend_scores_random_in_domain_words(fake_core):
    texts = ["the movie was great fun", "a dull and tedious plot"]
    dc = DomainContextCalibration.from_backend(
        "backend", FakeTemplate("{text}"), {"neg": [" bad"], "pos": [" good"]}, texts=texts, n_samples=5, seed=3
    )
    strings = [ex["text"] for ex in fake_core[0]["examples"]]
    assert strings == random_domain_texts(texts, n_samples=5, seed=3)
    assert all(len(s.split()) == 5 for s in strings)  # the mean word count of texts
    vocabulary = {w for t in texts for w in t.split()}
    assert all(set(s.split()) <= vocabulary for s in strings)
    assert isinstance(dc, DomainContextCalibration)


def test_batch_from_backend_fits_on_the_scored_examples(fake_core):
    bc = BatchCalibration.from_backend("b", FakeTemplate("{text}"), {"a": [" a"], "b": [" b"]}, examples=["x", "y"])
    assert fake_core[0]["examples"] == ["x", "y"]
    assert bc.classes_.tolist() == ["a", "b"]
    np.testing.assert_allclose(bc.prior_, [1 / 3, 2 / 3])


def test_random_domain_texts_are_seeded():
    texts = ["one two three", "four five six seven"]
    assert random_domain_texts(texts, seed=1) == random_domain_texts(texts, seed=1)
    assert random_domain_texts(texts, seed=1) != random_domain_texts(texts, seed=2)
    assert all(len(s.split()) == 4 for s in random_domain_texts(texts, length=4))
    with pytest.raises(ValueError, match="no words"):
        random_domain_texts(["", "  "])


# -- priors obtained through the embedded model ------------------------------------------


def test_contextual_calibration_from_the_embedded_model(local_model) -> None:
    import calibkit as ck
    from helpers import sst2

    tpl, verb = "Review: {text}\nSentiment:", {0: " negative", 1: " positive"}
    X, y = sst2("dev", 40)
    scores = ck.score(X, tpl, verb, local_model)
    cal = ck.ContextualCalibration.from_backend(local_model, tpl, verb).fit(scores)  # no labels needed
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
    import calibkit as ck
    from helpers import sst2

    tpl, verb = "Review: {text}\nSentiment:", {0: " negative", 1: " positive"}
    X, _ = sst2("dev", 20)
    batch = ck.BatchCalibration.from_backend(local_model, tpl, verb, examples=X)
    s = ck.score(X, tpl, verb, local_model)
    np.testing.assert_allclose(batch.predict_proba(s).mean(axis=0), [0.5, 0.5], atol=0.15)
    dc = ck.DomainContextCalibration.from_backend(local_model, tpl, verb, texts=X, n_samples=5, seed=1)
    assert dc.fit(s).predict_proba(s).shape == (20, 2)
