"""calibkit serve --backend hf: the completions API over a TransformersModel.

A real ``calibkit serve --backend hf`` on 127.0.0.1 serves the bundled gemma-3-270m under
transformers (float32, from the GGUF converted once per session by the ``hf_model``
fixture, found by the server through the session's cache folder), and its answers are
checked against the same model in-process: echo logprobs against
``continuation_logprobs`` (through ``ck.score`` with a Client), top-k, greedy generation
against a plain forward pass, seeded sampling. The decoder's kept cache is checked
in-process, past gemma-3's 512-token sliding window too.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from calibkit.api import CompletionRequest
from calibkit.server import create_key

from server_harness import ServerProcess, assert_error_shape

pytest.importorskip("torch")
pytest.importorskip("transformers")

ATOL = 1e-5  # float32 arithmetic on another schedule of forward passes
#: Echo runs prompt and form in one forward pass, the library the prompt, then its last token, then the
#: form's later tokens: float32 rows of other shapes. Over 60 SST-2 prompt/form pairs the two differed by
#: 1e-6 to 1.4e-5 (median 3.5e-6) on a CPU; the 1e-5 of the other checks is too close for every text.
ECHO_ATOL = 3e-5


@pytest.fixture(scope="module")
def model(hf_model, session_cache):
    """TransformersModel(cache=False, progress=False): the bundled GGUF under transformers, loaded once,
    converted (once per session) into the session's cache folder, where the server finds it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CALIBKIT_CACHE_DIR", str(session_cache))
        hf_model.engine  # load (and convert once) now
    return hf_model


@pytest.fixture(scope="module")
def served(model, session_cache, tmp_path_factory):
    """calibkit serve --backend hf --model gemma --keys-file ..., in a process of its own.

    It runs with the session's cache folder, where the GGUF's converted checkpoint already
    is: it loads that, in seconds, and converts nothing.
    """
    work = tmp_path_factory.mktemp("serve-hf")
    keys = work / "keys.json"
    key, _ = create_key(keys, name="tests")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CALIBKIT_CACHE_DIR", str(session_cache))
        srv = ServerProcess(["--backend", "hf", "--device", "cpu", "--model", "gemma", "--keys-file", str(keys),
                             "--max-tokens-limit", "32", "--threads", str(min(2, os.cpu_count() or 1))], work)
        srv.__enter__()
    try:
        srv.key = key
        yield srv
    finally:
        srv.stop()
    err = srv.stderr()
    assert "Traceback" not in err, err[-3000:]
    assert "converting" not in err, "the server converted the GGUF again"


def _post(served, body: dict) -> dict:
    r = served.post({"model": "gemma", **body}, served.key)
    assert r.status_code == 200, r.text[:1000]
    return r.json()


# -- 1. echo logprobs are the in-process continuation logprobs ---------------------------------------
def test_client_scores_through_the_hf_server_as_the_in_process_model(served, model):
    import calibkit as ck

    from helpers import sst2

    texts, _ = sst2("dev", n=4)
    tpl = ck.PromptTemplate("Review: {text}\nSentiment:")
    client = ck.Client(served.base, served.key, model="gemma", cache=False)
    for verb in (ck.Verbalizer({0: " negative", 1: " positive"}),
                 ck.Verbalizer({0: [" bad", " not good at all"], 1: [" good", " very good"]})):
        remote = ck.score(texts, tpl, verb, client, method="exact", check=False)
        local = ck.score(texts, tpl, verb, model, method="exact", check=False)
        assert remote.logprobs.shape == (4, 2)
        np.testing.assert_array_equal(remote.censored, local.censored)
        assert np.allclose(remote.logprobs, local.logprobs, atol=ECHO_ATOL, rtol=0), (
            np.abs(remote.logprobs - local.logprobs).max())
    assert client.requests_made >= 2


def test_echo_of_a_multi_token_form_is_its_continuation_logprobs(served, model):
    prompt, form = "Review: the plot drags and the jokes fall flat\nSentiment:", " not good at all"
    body = _post(served, {"prompt": prompt + form, "max_tokens": 0, "echo": True, "logprobs": 0})
    lp = body["choices"][0]["logprobs"]
    (want,) = model.continuation_logprobs([(prompt, form)])
    n = len(want.tokens)
    assert n > 1 and lp["tokens"][-n:] == list(want.tokens) and lp["tokens"][0] == ""
    np.testing.assert_allclose(lp["token_logprobs"][-n:], want.logprobs, atol=ECHO_ATOL, rtol=0)
    assert body["choices"][0]["text"] == prompt + form
    assert body["usage"]["prompt_tokens"] == len(model.token_ids(prompt + form, add_bos=True))
    assert body["model"] == model.name


# -- 2. top-k ------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", ["The capital of France is", "Review: a gripping, beautifully acted film\nSentiment:"])
def test_top_logprobs_are_the_in_process_top_k(served, model, prompt):
    body = _post(served, {"prompt": prompt, "max_tokens": 1, "logprobs": 5, "temperature": 0})
    (choice,) = body["choices"]
    top = choice["logprobs"]["top_logprobs"][0]
    mine = model.top_k([prompt], 5)[0]
    assert list(top) == list(mine)  # greedy: the chosen token is the first, so no (k+1)-th
    assert max(abs(top[t] - mine[t]) for t in mine) < ATOL
    assert choice["text"] == next(iter(mine)) and choice["logprobs"]["token_logprobs"][0] == top[choice["text"]]


def test_a_sampled_token_outside_the_top_k_joins_as_the_last_entry(served, model):
    body = _post(served, {"prompt": "Once upon a time", "max_tokens": 12, "logprobs": 1, "temperature": 1.5,
                          "seed": 4})
    lp = body["choices"][0]["logprobs"]
    for tok, v, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert 1 <= len(top) <= 2 and top[tok] == v
    assert any(len(top) == 2 for top in lp["top_logprobs"])  # temperature 1.5: some draw is not the argmax


# -- 3. generation ---------------------------------------------------------------------------------
def _greedy(model, prompt: str, n: int) -> tuple[list[int], list[float]]:
    """The argmax continuation by plain forward passes over the whole text, no cache kept."""
    eng = model.engine
    torch = eng.torch
    ids = eng.tokenize(prompt, True)
    out, lps = [], []
    with torch.inference_mode():
        for _ in range(n):
            logits = eng.model(input_ids=torch.tensor([ids + out]), use_cache=False).logits[0, -1]
            logp = torch.log_softmax(logits.double(), -1)
            t = int(logp.argmax())
            if t in eng.ends:
                break
            out.append(t)
            lps.append(float(logp[t]))
    return out, lps


def test_greedy_generation_is_the_argmax_continuation(served, model):
    prompt = "The capital of France is"
    want, want_lps = _greedy(model, prompt, 8)
    body = _post(served, {"prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 0})
    (choice,) = body["choices"]
    assert choice["logprobs"]["tokens"] == [model.token_text(t) for t in want]
    assert choice["text"] == "".join(model.token_text(t) for t in want)
    np.testing.assert_allclose(choice["logprobs"]["token_logprobs"], want_lps, atol=ATOL, rtol=0)
    assert choice["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 8
    # n=2 at temperature 0: the same text twice (each sample starts again from the prompt's cache)
    two = _post(served, {"prompt": prompt, "max_tokens": 8, "temperature": 0, "n": 2})
    assert [c["text"] for c in two["choices"]] == [choice["text"]] * 2


def test_seeded_sampling_repeats_and_stop_and_best_of_work(served):
    req = {"prompt": "Once upon a time", "max_tokens": 10, "temperature": 1.0, "seed": 11, "n": 2}
    a, b = _post(served, req), _post(served, req)
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]
    assert a["usage"]["total_tokens"] == a["usage"]["prompt_tokens"] + a["usage"]["completion_tokens"]
    other = _post(served, {**req, "seed": 12})
    assert [c["text"] for c in other["choices"]] != [c["text"] for c in a["choices"]]
    best = _post(served, {**req, "best_of": 3, "n": 1})
    assert len(best["choices"]) == 1
    counted = _post(served, {"prompt": "1, 2, 3, 4,", "max_tokens": 20, "temperature": 0, "stop": ["8"]})
    (c,) = counted["choices"]
    assert c["finish_reason"] == "stop" and "8" not in c["text"] and "7" in c["text"]


def test_a_prompt_longer_than_the_context_is_a_400(served):
    assert "context" in assert_error_shape(
        served.post({"model": "gemma", "prompt": "word " * 2100, "max_tokens": 1}, served.key), 400, "prompt")["message"]
    assert served.alive


# -- the decoder's kept cache, in-process ------------------------------------------------------------
def _plain(model, seq: list[int]) -> np.ndarray:
    """The next-token log-probabilities after ``seq`` by one forward pass over all of it, no cache."""
    torch = model.engine.torch
    with torch.inference_mode():
        logits = model.engine.model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1]
        return torch.log_softmax(logits.double(), -1).numpy()


def test_decoder_reuses_and_cuts_its_cache_exactly(model):
    from calibkit.server.completions import LocalCompletions

    gen = LocalCompletions(model, n_ctx=2048)
    dec = gen.engine
    with dec.lock:
        a = dec.tokenize("The quick brown fox jumps over the lazy dog", True)
        b = a[:6] + dec.tokenize(" and the cat", False)
        rows: list[np.ndarray] = []
        dec.prompt(a, [len(a) - 1], lambda p, r: None)
        before = dec.evaluated_tokens
        dec.prompt(b, [len(b) - 1], lambda p, r: rows.append(r))
        assert dec.evaluated_tokens - before == len(b) - 6  # the shared six tokens are reused
        dec.reset()
        fresh: list[np.ndarray] = []
        dec.prompt(b, [len(b) - 1], lambda p, r: fresh.append(r))
    # whole rows: float32 logits reach -40 for unlikely tokens, where 1e-5 is a few ulps
    np.testing.assert_allclose(rows[0], fresh[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(fresh[0], _plain(model, b), atol=1e-4, rtol=0)


def test_decoder_past_the_sliding_window_runs_again_instead_of_cutting(model):
    from calibkit.server.completions import LocalCompletions

    dec = LocalCompletions(model, n_ctx=2048).engine
    window = model.engine.window
    if window is None:
        pytest.skip("this model has no sliding-window layers")
    ids = dec.tokenize(" ".join(f"w{i}" for i in range(window)), True)[:window + 30]
    assert len(ids) == window + 30
    cut = window + 10
    other = ids[:cut] + dec.tokenize(" tail end", False)
    with dec.lock:
        dec.reset()
        got: list[np.ndarray] = []
        dec.prompt(ids, [len(ids) - 1], lambda p, r: None)
        dec.prompt(other, [len(other) - 1], lambda p, r: got.append(r))  # past the window: from scratch
        dec.truncate(cut)  # likewise
        assert dec.cached == other[:cut]
        dec.extend(other[cut:], [len(other) - 1], lambda p, r: got.append(r))
        assert len(dec.cached) == len(other)
    want = _plain(model, other)
    for row in got:
        np.testing.assert_allclose(row, want, atol=1e-4, rtol=0)


# -- 4. errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, rc, words",
    [
        (["--backend", "vllm"], 2, "--backend"),
        (["--device", "cpu"], 1, "--device is for --backend hf"),
        (["--backend", "hf", "--device", "abacus"], 1, "--device 'abacus'"),
        (["--backend", "hf", "--device", "cpu", "--model", "x=someorg/no-such-model"], 1,
         "--backend hf --model someorg/no-such-model: could not load"),
    ],
)
def test_serve_refuses_a_bad_backend_or_a_flag_of_the_other_backend(tmp_path, args, rc, words):
    r = subprocess.run([sys.executable, "-m", "calibkit.cli", "serve", "--port", "0", *args],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == rc and words in r.stderr, (r.returncode, r.stderr[-2000:])
    assert "on http://" not in r.stdout
    if rc == 2:
        assert "local" in r.stderr and "hf" in r.stderr  # the choices, named


def test_serve_help_says_what_each_backend_is():
    r = subprocess.run([sys.executable, "-m", "calibkit.cli", "serve", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "--backend" in text and "llama.cpp" in text and "transformers" in text and "--device" in text


def test_load_models_checks_the_backend_first():
    from calibkit.server.run import load_models

    with pytest.raises(ValueError, match="--backend 'nope' is not one of local, hf"):
        load_models(["x"], backend="nope")
    with pytest.raises(ValueError, match="--device is for --backend hf"):
        load_models(["x"], device="cuda")


def test_local_completions_serves_an_hf_model_in_process(model):
    from calibkit.server.completions import LocalCompletions

    gen = LocalCompletions(model, n_ctx=64)
    assert gen.n_ctx == 64 and gen.name == model.name
    r = gen.complete(CompletionRequest(model=gen.name, prompt="Hello", max_tokens=2, temperature=0,
                                       prompt_logprobs=2))
    (c,) = r.choices
    assert c.prompt_logprobs[0] is None and 1 <= len(c.prompt_logprobs[1]) <= 3
    with pytest.raises(Exception, match="context of 64"):
        gen.complete(CompletionRequest(model=gen.name, prompt="word " * 80, max_tokens=1))


def test_load_models_serves_a_checkpoint_folder(model, session_cache, monkeypatch):
    from calibkit.backends.transformers import converted_gguf_folder
    from calibkit.server.run import load_models

    monkeypatch.setenv("CALIBKIT_CACHE_DIR", str(session_cache))
    folder = converted_gguf_folder(model.source)
    served = load_models([f"g={folder}", str(folder)], backend="hf", device="cpu", n_ctx=128)
    assert sorted(served) == sorted(["g", folder.name]) and served["g"] is served[folder.name]
    gen = served["g"]
    assert gen.n_ctx == 128 and gen.name == folder.name
    r = gen.complete(CompletionRequest(model="g", prompt="The capital of France is", max_tokens=1, logprobs=3,
                                       temperature=0))
    top = r.choices[0].logprobs.top_logprobs[0]
    mine = model.top_k(["The capital of France is"], 3)[0]
    assert list(top) == list(mine) and max(abs(top[t] - mine[t]) for t in mine) < ATOL


def test_generation_stops_between_tokens_once_cancelled(model):
    import threading

    from calibkit.server.completions import LocalCompletions
    from calibkit.server.engine import Cancelled

    class SetAfter(threading.Event):
        def __init__(self, after: int) -> None:
            super().__init__()
            self.after, self.polls = after, 0

        def is_set(self) -> bool:
            self.polls += 1
            return self.polls > self.after

    gen = LocalCompletions(model, n_ctx=256)
    req = CompletionRequest(model=gen.name, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0)
    want = gen.complete(req)
    with pytest.raises(Cancelled, match="after 3 token"):
        gen.complete(req, cancel=SetAfter(4))  # one poll before the prompt, then one before each token
    assert gen.complete(req).choices[0].text == want.choices[0].text  # the cache is sound after it
