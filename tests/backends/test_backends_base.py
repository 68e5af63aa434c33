"""The model seam: a backend of two methods is enough for scoring, calibration and the
report, and the one cache in front of every backend (keys, batches, resumption, old
layouts)."""

from __future__ import annotations

import logging
import math
import sqlite3

import numpy as np
import pytest

import calibkit as ck
from calibkit.backends.base import Backend, Continuation, VocabularyBackend
from calibkit.evaluation import evaluate
from calibkit.report import write_report


class Letters(Backend):
    """A toy model: after a prompt ending in a letter, " yes" is likelier the earlier that
    letter is in the alphabet. Tokens are characters; whole words are one token."""

    identity = {"backend": "letters", "model": "letters-1"}

    def __init__(self, cache=False, fail_after: int | None = None):
        super().__init__(cache=cache)
        self.fail_after = fail_after
        self.answered = 0

    def _dist(self, prompt: str) -> dict[str, float]:
        p_yes = (ord("z") - ord(prompt.strip()[-1].lower()) + 0.5) / 27
        return {" yes": math.log(p_yes * 0.9), " no": math.log((1 - p_yes) * 0.9), " maybe": math.log(0.1)}

    def _answer_top_k(self, prompts, k, *, keep=None):
        return [dict(sorted(self._dist(p).items(), key=lambda kv: -kv[1])[:k]) for p in prompts]

    def _answer_continuations(self, pairs, *, keep=None):
        out = []
        for p, c in pairs:
            if self.fail_after is not None and self.answered >= self.fail_after:
                raise KeyboardInterrupt
            self.answered += 1
            out.append(Continuation((c,), (self._dist(p)[c],)))
        return out


TPL = "Letter: {text}"
VERB = {"no": " no", "yes": " yes"}
LETTERS = list("abcdefghijklmnopqrstuvwxy")
# Labels drawn from the toy model's own P(yes), so the scores are roughly calibrated.
_u = np.random.default_rng(0).random(2 * len(LETTERS))
Y2 = ["yes" if u < (ord("z") - ord(c) + 0.5) / 27 else "no" for u, c in zip(_u, LETTERS * 2)]
Y = Y2[: len(LETTERS)]


def test_a_two_method_backend_runs_score_a_calibrator_and_the_report(tmp_path) -> None:
    model = Letters()
    exact = ck.score(LETTERS, TPL, VERB, model, method="exact")
    topk = ck.score(LETTERS, TPL, VERB, model, method="topk", k=3)
    auto = ck.score(LETTERS, TPL, VERB, model)
    # Every label is inside the top 3 here: the three methods agree to the bit.
    np.testing.assert_array_equal(exact.logprobs, topk.logprobs)
    np.testing.assert_array_equal(exact.logprobs, auto.logprobs)
    assert not topk.censored.any() and exact.exact.all() and not topk.exact.any()
    assert exact.predict()[:3] == ["yes"] * 3 and exact.predict()[-3:] == ["no"] * 3
    assert exact.provenance["model"] == "letters-1"

    cal = ck.TemperatureScaling().fit(exact, Y)
    proba = cal.predict_proba(exact)
    assert proba.shape == (25, 2) and np.allclose(proba.sum(axis=1), 1)

    cf = ck.content_free_scores(TPL, VERB, model, texts=["n"])
    contextual = ck.ContextualCalibration(content_free=cf).fit(exact)
    assert contextual.prior_[0] == pytest.approx(1 - (ord("z") - ord("n") + 0.5) / 27)

    both = ck.score(LETTERS * 2, TPL, VERB, model, method="exact")
    ev = evaluate(both, Y2, {"temperature": ck.TemperatureScaling(), "contextual": contextual},
                  classes=["no", "yes"], n_boot=20)
    folder = write_report(ev, tmp_path / "report")
    assert (folder / "index.html").is_file() and (folder / "metrics.csv").is_file()
    assert set(ev.table.index.get_level_values(0)) >= {"uncalibrated", "temperature", "contextual"}


def test_top_k_above_the_cap_fails_before_asking(tmp_path) -> None:
    model = Letters()
    model.logprobs_cap = 2
    with pytest.raises(ValueError, match=r"k=3 .* top-k cap is 2\); pass k <= 2"):
        model.top_k(["a"], 3)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        model.top_k(["a"], 0)
    assert model.requests_made == 0


def test_the_cache_keys_by_identity_and_question_and_answers_each_once(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    first = Letters(cache=path)
    a = first.continuation_logprobs([("a", " yes"), ("b", " yes"), ("a", " yes")])
    assert a[0] == a[2] and first.requests_made == 2  # asked twice in one call, answered once
    again = Letters(cache=path)
    assert again.continuation_logprobs([("a", " yes"), ("b", " yes")]) == a[:2]
    assert again.requests_made == 0 and again.cache_hits == 2
    again.top_k(["a"], 2)  # another question about the same prompt is asked anew
    assert again.requests_made == 1

    other = Letters(cache=path)
    other.identity = {"backend": "letters", "model": "letters-2"}  # another model: nothing shared
    other.continuation_logprobs([("a", " yes")])
    assert other.requests_made == 1 and other.cache_hits == 0


def test_an_interrupted_run_keeps_every_finished_batch(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    model = Letters(cache=path, fail_after=40)
    model.batch_size = 16
    with pytest.raises(KeyboardInterrupt):
        ck.score(LETTERS, TPL, VERB, model, method="exact", check=False)  # 50 questions; dies in the third batch
    resumed = Letters(cache=path)
    s = ck.score(LETTERS, TPL, VERB, resumed, method="exact", check=False)
    assert resumed.cache_hits == 32 and resumed.requests_made == 50 - 32
    np.testing.assert_array_equal(s.logprobs, ck.score(LETTERS, TPL, VERB, Letters(), method="exact").logprobs)


def test_a_cache_file_of_the_old_layout_is_ignored_with_one_line(tmp_path, caplog) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # calibkit 0.1 kept whole responses here
        conn.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL)")
        key = ck.ResponseCache.key(Letters.identity, {"question": "continuation", "prompt": "a",
                                                       "continuation": " yes"})
        conn.execute("INSERT INTO responses VALUES (?, ?, 0)", (key, '{"choices": []}'))
    with caplog.at_level(logging.WARNING, logger="calibkit.cache"):
        model = Letters(cache=path)
    assert [r.getMessage().count("\n") for r in caplog.records] == [0]
    assert "another layout (responses); they are ignored" in caplog.records[0].getMessage()
    got = model.continuation_logprobs([("a", " yes")])[0]
    assert got == Continuation((" yes",), (model._dist("a")[" yes"],)) and model.requests_made == 1


def test_continuation_answers_are_checked() -> None:
    with pytest.raises(ValueError, match="one log-probability per token"):
        Continuation((" a", " b"), (-1.0,))
    with pytest.raises(ValueError, match="needs a log-probability"):
        Continuation((" a",), (float("nan"),))
    assert Continuation((" a", " b"), (-1.0, -0.5)).logprob == -1.5


def test_a_backend_that_loses_answers_is_an_error() -> None:
    class Lossy(Letters):
        def _answer_top_k(self, prompts, k, *, keep=None):
            return super()._answer_top_k(prompts, k)[:-1]

    with pytest.raises(RuntimeError, match="answered 1 of 2 questions"):
        Lossy().top_k(["a", "b"], 2)


class Streaming(Letters):
    """Letters that hands back each answer as it comes (as the HTTP client does), then fails
    with an API error after ``fail_after`` answers, the answers so far in the error too."""

    streams_answers = True
    batch_size = 4
    window_batches = 8

    def __init__(self, cache=False, fail_after: int | None = None):
        super().__init__(cache=cache, fail_after=fail_after)
        self.windows: list[int] = []
        self.cached_before_end: list[int] = []

    def _answer_continuations(self, pairs, *, keep=None):
        assert keep is not None
        self.windows.append(len(pairs))
        out = []
        for i, (p, c) in enumerate(pairs):
            if self.fail_after is not None and self.answered >= self.fail_after:
                rest = [ck.backends.base.MISSING] * (len(pairs) - i)
                raise ck.backends.base.IncompleteAnswers(out + rest, ck.APIError("the server is gone"), failed=[i])
            self.answered += 1
            out.append(Continuation((c,), (self._dist(p)[c],)))
            keep({i: out[-1]})
            if self.cache is not None and i == 9:
                self.cached_before_end.append(len(self.cache))
        return out


def test_a_backend_that_streams_gets_windows_and_each_answer_is_cached_as_it_comes(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    model = Streaming(cache=path)
    seen: list[int] = []
    pairs = [(TPL.format(text=c), f) for c in LETTERS for f in (" no", " yes")]
    got = model.continuation_logprobs(pairs, progress=seen.append)
    assert model.windows == [32, 18]  # 50 questions, in windows of 8 batches of 4
    assert model.cached_before_end == [10, 10 + 32]  # each answer cached as it came, before the window ended
    assert model.requests_made == 50 and sum(seen) == 50  # each counted once, though also returned at the end
    assert got == Letters().continuation_logprobs(pairs)


def test_a_streaming_backend_that_fails_keeps_what_it_handed_back_and_says_so(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    model = Streaming(cache=path, fail_after=40)
    with pytest.raises(ck.APIError, match=r"the server is gone \[failed: \('Letter: u', ' no'\); "
                                          r"40 of 50 questions were answered and are cached"):
        model.continuation_logprobs([(TPL.format(text=c), f) for c in LETTERS for f in (" no", " yes")])
    assert model.requests_made == 40
    resumed = Letters(cache=path)
    ck.score(LETTERS, TPL, VERB, resumed, method="exact", check=False)
    assert resumed.cache_hits == 40 and resumed.requests_made == 10


def test_a_backend_that_does_not_stream_is_handed_keep_and_one_batch_at_a_time() -> None:
    class Counting(Letters):
        batch_size = 4

        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []

        def _answer_top_k(self, prompts, k, *, keep=None):
            assert callable(keep)  # declared, and always handed over; calling it is optional
            self.batches.append(len(prompts))
            return super()._answer_top_k(prompts, k, keep=keep)

    model = Counting()
    model.top_k(LETTERS[:10], 2)
    assert model.batches == [4, 4, 2]


def test_incomplete_answers_pickle_as_themselves() -> None:
    import pickle

    from calibkit.backends.base import MISSING, IncompleteAnswers

    e = IncompleteAnswers([{" yes": -0.1}, MISSING], ck.APIError("503 upstream overloaded", status_code=503), [1])
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is IncompleteAnswers and str(back) == str(e)
    assert back.answers == [{" yes": -0.1}, MISSING] and back.answers[1] is MISSING and back.failed == [1]
    assert isinstance(back.cause, ck.APIError) and back.cause.status_code == 503


class Dice(VocabularyBackend):
    """A six-token vocabulary; the prompt's last digit is likelier, token 5 impossible (-inf)."""

    identity = {"backend": "dice", "model": "dice-1"}
    n_vocab = 6

    def __init__(self, cache=False):
        super().__init__(cache=cache)
        self.asked: list[str] = []

    def token_ids(self, text, *, add_bos=False):
        return [int(c) for c in text if c.isdigit()]

    def token_text(self, token_id):
        return str(token_id)

    def next_token_logprobs(self, prompt):
        self.asked.append(prompt)
        w = np.array([1.0, 1, 1, 1, 1, 0])
        w[int(prompt[-1]) % 5] += 1 / 3
        with np.errstate(divide="ignore"):
            return np.log(w / w.sum())

    def _answer_top_k(self, prompts, k, *, keep=None):
        raise AssertionError("not asked here")

    def _answer_continuations(self, pairs, *, keep=None):
        raise AssertionError("not asked here")


def test_the_vocabulary_question_is_cached_by_identity_prompts_and_groups(tmp_path) -> None:
    from calibkit.form_search import sees_vocabulary

    assert sees_vocabulary(Dice()) and not sees_vocabulary(Letters())
    prompts, groups = ["roll 1", "roll 2", "roll 3", "roll 1"], [0, 1, 0, 1]
    path = tmp_path / "c.sqlite"
    first = Dice(cache=path)
    seen: list[int] = []
    means = first.mean_next_token_logprobs(prompts, groups, progress=seen.append)
    assert first.asked == prompts and seen == [1, 1, 1, 1] and first.requests_made == 1
    fresh = Dice()
    rows = [fresh.next_token_logprobs(p) for p in prompts]
    np.testing.assert_array_equal(means, [(rows[0] + rows[2]) / 2, (rows[1] + rows[3]) / 2])
    assert means.shape == (2, 6) and np.isneginf(means[:, 5]).all()

    again = Dice(cache=path)
    seen.clear()
    np.testing.assert_array_equal(again.mean_next_token_logprobs(prompts, groups, progress=seen.append), means)
    assert again.asked == [] and again.requests_made == 0 and again.cache_hits == 1 and seen == [4]
    np.testing.assert_array_equal(again.mean_next_token_logprobs(prompts[:2])[0], (rows[0] + rows[1]) / 2)
    again.mean_next_token_logprobs(prompts, [1, 0, 1, 0])
    assert again.requests_made == 2  # other prompts, other groups: asked anew
    other = Dice(cache=path)
    other.identity = {"backend": "dice", "model": "dice-2"}
    other.mean_next_token_logprobs(prompts, groups)
    assert other.requests_made == 1 and other.cache_hits == 0

    for bad in ([0, 2, 0, 2], [0, 1], [-1, 0, 0, 0]):
        with pytest.raises(ValueError, match="group"):
            again.mean_next_token_logprobs(prompts, bad)
    with pytest.raises(ValueError, match="needs prompts"):
        again.mean_next_token_logprobs([])
