"""The embedded backend against llama.cpp itself (llama-cpp-python's own Llama class)."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest

import calibkit as ck
from calibkit.api import InvalidRequestError

from helpers import sst2

TPL = "Review: {text}\nSentiment:"
VERB = {0: " negative", 1: " positive"}


@pytest.fixture(scope="module")
def reference_llama(local_model):
    """llama.cpp through llama-cpp-python's high-level class, set up like the engine
    (the same batch size and attention kernel, so the same arithmetic)."""
    import llama_cpp

    return llama_cpp.Llama(
        local_model.model_path, n_ctx=2048, n_batch=local_model.n_batch, n_ubatch=local_model.n_batch,
        flash_attn=True, logits_all=True, verbose=False,
    )


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    return x - (x.max() + math.log(np.exp(x - x.max()).sum()))


def test_exact_scores_equal_llama_cpp_last_position_log_softmax(local_model, reference_llama) -> None:
    X, _ = sst2("dev", 12)
    s = ck.score(X, TPL, VERB, local_model, method="exact")
    ids = [local_model.token_ids(f)[0] for f in VERB.values()]
    for i, text in enumerate(X):
        reference_llama.reset()
        reference_llama.eval(reference_llama.tokenize(TPL.format(text=text).encode()))
        ref = _log_softmax(reference_llama.scores[reference_llama.n_tokens - 1])
        np.testing.assert_allclose(s.logprobs[i], ref[ids], atol=1e-4, rtol=0)
    assert s.exact.all() and not s.censored.any()


def test_multi_token_forms_are_the_chain_rule_over_the_cached_prompt(local_model, reference_llama) -> None:
    prompt = "Article: The striker scored twice in the final.\nTopic:"
    forms = [" World news", " Sports", " Science and technology"]
    assert [len(local_model.token_ids(f)) for f in forms] == [2, 1, 3]
    got = local_model.form_logprobs([prompt], [local_model.token_ids(f) for f in forms])[0]
    base = reference_llama.tokenize(prompt.encode())
    for j, form in enumerate(forms):
        toks = local_model.token_ids(form)
        reference_llama.reset()
        reference_llama.eval(base)
        reference_llama.eval(toks[:-1])  # the form's tokens after the prompt, one more batch
        rows = reference_llama.scores[len(base) - 1 : len(base) + len(toks) - 1]
        chain = sum(_log_softmax(row)[t] for row, t in zip(rows, toks))
        assert got[j] == pytest.approx(chain, abs=1e-4)


def test_prefix_reuse_never_changes_a_score(local_model) -> None:
    """Few-shot prompts share a long prefix: its aligned chunks are reused, bit for bit."""
    X, y = sst2("dev", 6)
    demos = list(zip(*sst2("train", 6)))
    tpl = ck.PromptTemplate(TPL, instructions="Classify the sentiment of each movie review.",
                            demonstrations=[(x, lab) for x, lab in demos])
    eng = local_model._engine
    fresh = []
    for text in X:
        eng.reset()
        fresh.append(ck.score([text], tpl, VERB, local_model, check=False).logprobs[0])
    eng.reset()
    before = eng.evaluated_tokens
    forward = ck.score(X, tpl, VERB, local_model, check=False).logprobs
    decoded = eng.evaluated_tokens - before
    backward = ck.score(X[::-1], tpl, VERB, local_model, check=False).logprobs[::-1]
    np.testing.assert_array_equal(forward, np.array(fresh))
    np.testing.assert_array_equal(backward, np.array(fresh))
    total = sum(len(local_model.token_ids(tpl.format(x, ck.Verbalizer(VERB)), add_bos=True)) for x in X)
    assert decoded < total / 2, (decoded, total)  # the shared prefix was not recomputed


def test_complete_answers_like_a_server(local_model) -> None:
    req = local_model.make_request("The capital of France is", max_tokens=3, logprobs=5, temperature=0, echo=True)
    r = local_model.complete(req)
    c = r.choices[0]
    lp = c.logprobs
    assert c.text.startswith("The capital of France is") and r.id.startswith("cmpl-")
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # BOS: nothing to condition on
    assert "".join(lp.tokens) == c.text
    assert [c.text[o:o + len(t)] for t, o in zip(lp.tokens, lp.text_offset)] == lp.tokens
    assert r.usage.completion_tokens == 3 and r.usage.prompt_tokens == 6
    for tok, val, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert top[tok] == val and len(top) in (5, 6)  # the chosen token joins a top-5 it is not in
    peek = dict(local_model.top_tokens("The capital of France is", 5))
    assert " Paris" in peek
    # greedy generation continues with the most likely token
    assert lp.tokens[6] == max(peek, key=peek.get)


def test_sampling_is_seeded_and_stops(local_model) -> None:
    a = local_model.complete(local_model.make_request("Once upon a time", max_tokens=8, temperature=1.0, seed=7, n=2))
    b = local_model.complete(local_model.make_request("Once upon a time", max_tokens=8, temperature=1.0, seed=7, n=2))
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    counting = local_model.complete(local_model.make_request("1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[" 7"]))
    assert counting.choices[0].finish_reason == "stop" and " 7" not in counting.choices[0].text
    assert counting.choices[0].text.startswith(" 5, 6")


def test_too_long_a_prompt_is_a_clear_error(local_model) -> None:
    with pytest.raises(InvalidRequestError, match="longer than the model's context") as e:
        local_model.complete(local_model.make_request("word " * 3000, max_tokens=1))
    assert e.value.param == "prompt"


def test_clone_copy_and_pickle_share_the_loaded_model(local_model) -> None:
    eng = local_model._engine
    assert copy.deepcopy(local_model) is local_model
    again = pickle.loads(pickle.dumps(local_model))
    assert again._engine is eng and again.identity == local_model.identity


def test_bad_model_path_names_the_argument(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="model_path"):
        ck.LocalModel(tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="n_batch"):
        ck.LocalModel(n_batch=0)


def test_an_interrupted_run_resumes_without_scoring_anything_twice(tmp_path, monkeypatch) -> None:
    X, _ = sst2("dev", 10)
    model = ck.LocalModel(cache=tmp_path / "c.sqlite")
    calls: list[str] = []
    real = type(model)._score_one

    def flaky(eng, prompt, forms):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(prompt)
        return real(eng, prompt, forms)

    monkeypatch.setattr(type(model), "_score_one", staticmethod(flaky))
    with pytest.raises(KeyboardInterrupt):
        ck.score(X, TPL, VERB, model, check=False)
    first = list(calls)
    monkeypatch.setattr(type(model), "_score_one", staticmethod(lambda eng, p, f: (calls.append(p), real(eng, p, f))[1]))
    resumed = ck.score(X, TPL, VERB, model, check=False)
    assert len(first) == 5 and len(calls) == 10 and len(set(calls)) == 10  # no prompt scored twice
    assert resumed.provenance["cache_hits"] == 5 and resumed.provenance["requests"] == 5
    again = ck.score(X, TPL, VERB, model, check=False)
    assert again.provenance["requests"] == 0
    np.testing.assert_array_equal(again.logprobs, resumed.logprobs)


def test_extreme_sampler_values_still_give_a_token(local_model) -> None:
    for kw in ({"temperature": 5e-324}, {"repetition_penalty": 1e-300, "temperature": 1.0}, {"seed": -5, "temperature": 1.0}):
        r = local_model.complete(local_model.make_request("Hello there, how are", max_tokens=2, **kw))
        assert r.choices[0].finish_reason in ("length", "stop"), kw
