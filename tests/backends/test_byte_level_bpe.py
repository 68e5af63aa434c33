"""Byte-level BPE (the tokenizer family of Llama 3, GPT-2, Qwen) end to end, against a plain forward pass.

The model is made at test time (tests/byte_level.py: a 2,000-token byte-level BPE trained on
lines of ../shared/data, a random LlamaForCausalLM of a fixed seed). Its vocabulary holds few
characters outside English, so accented Latin, CJK and emoji are split into raw-byte tokens,
some of them parts of a character. Every path must give the forward pass's numbers: the
in-process TransformersModel, a real ``calibkit serve --backend hf`` through the Client (exact,
top-k and auto), and the same checkpoint written as a GGUF under llama.cpp (its own
token-to-piece), in process and through ``calibkit serve``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import calibkit as ck  # noqa: E402
from calibkit.backends.pieces import token_text  # noqa: E402

from byte_level import Reference, build, byte_of_char, form_logprob, write_gguf  # noqa: E402
from server_harness import ServerProcess  # noqa: E402

ATOL = 1e-5

PROMPTS = [
    "Review: a dull mess\nSentiment:",          # ASCII
    "Review: très mauvais\nSentiment:",          # accented Latin, è in two byte tokens
    "Review: naïve café\nSentiment:",
    "Review: 好 film\nSentiment:",               # CJK, three byte tokens
    "Review: 😀 great fun\nSentiment:",          # emoji, four
]
FORMS = [" negative", " bad", " 好", " très", " café", " 😀", "好"]
PAIRS = list(itertools.product(PROMPTS, FORMS))
#: The cases first found wrong through calibkit serve (prompt, form).
FOUND = [(PROMPTS[0], " 好"), (PROMPTS[1], " negative"), (PROMPTS[2], " bad"), (PROMPTS[3], " bad")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build(tmp_path_factory.mktemp("byte-level-bpe") / "model")


@pytest.fixture(scope="module")
def ref(folder):
    return Reference(folder)


@pytest.fixture(scope="module")
def expected(ref):
    return {pair: ref.continuation(*pair) for pair in PAIRS}


@pytest.fixture(scope="module")
def hf(folder):
    return ck.TransformersModel(str(folder), device="cpu", cache=False, progress=False)


def _serve(backend: str, spec: str, workdir):
    srv = ServerProcess(["--backend", backend, *(["--device", "cpu"] if backend == "hf" else []),
                         "--model", spec, "--max-tokens-limit", "8"], workdir)
    srv.__enter__()
    return srv


@pytest.fixture(scope="module")
def served(folder, tmp_path_factory):
    """calibkit serve --backend hf --model bbpe=FOLDER on 127.0.0.1 (loopback: no keys)."""
    srv = _serve("hf", f"bbpe={folder}", tmp_path_factory.mktemp("serve-bbpe"))
    yield srv
    srv.stop()
    assert "Traceback" not in srv.stderr(), srv.stderr()[-3000:]


@pytest.fixture(scope="module")
def client(served):
    with ck.Client(served.base, model="bbpe", cache=False) as c:
        yield c


def _assert_continuations(got, expected, pairs, atol=ATOL):
    for pair, g in zip(pairs, got):
        want = expected[pair]
        if want is None:
            assert g is None, (pair, g)
            continue
        assert g is not None, f"{pair}: None where the forward pass scores the form"
        assert len(g.tokens) == len(want[0]), (pair, g.tokens, want[0])
        assert abs(g.logprob - want[1]) <= atol, (pair, g.logprob, want[1])


# -- the fixture exercises what it must ---------------------------------------------------------------
def test_the_vocabulary_cuts_characters_into_bytes(ref, expected):
    pieces = ref.tokenizer.convert_ids_to_tokens(ref.ids(" 好 😀 très"))
    bytes_of = byte_of_char()
    lone = [p for p in pieces if len(p) == 1 and bytes_of.get(p, 0) >= 0x80]
    assert len(lone) >= 5, pieces  # 好 and 😀 as single bytes, è as two
    # A template ending in a space would merge; these prompts do not, so every pair is scored.
    assert all(expected[p] is not None for p in PAIRS)
    assert len(expected[FOUND[0]][0]) == 4  # " ", and 好 as three bytes


# -- in process ------------------------------------------------------------------------------------------
def test_transformers_model_scores_every_script_as_the_forward_pass(hf, expected):
    _assert_continuations(hf.continuation_logprobs(PAIRS), expected, PAIRS)


@pytest.mark.parametrize("text", [*PROMPTS, *FORMS])
def test_token_strings_are_the_texts_bytes(hf, ref, text):
    ids = ref.ids(text)[1:]
    want = ref.token_bytes(ids)
    assert b"".join(want) == text.encode("utf-8")
    assert hf.tokenize(text) == [token_text(b) for b in want]
    assert [hf.engine.piece_bytes(t) for t in ids] == want


# -- through calibkit serve --backend hf --------------------------------------------------------------------
def test_the_cases_found_wrong_score_through_serve_as_the_forward_pass(client, expected):
    _assert_continuations(client.continuation_logprobs(FOUND), expected, FOUND)


def test_client_exact_scores_every_script_through_serve_as_the_forward_pass(client, expected):
    _assert_continuations(client.continuation_logprobs(PAIRS), expected, PAIRS)


@pytest.mark.parametrize("form", [" 好", " très", " 😀"])
def test_echo_text_offsets_count_characters(served, ref, form):
    """text_offset: the character each token's first byte lies in (the tokenizer's own offset
    mapping), never past the end of the text; lone bytes written bytes:\\xNN."""
    text = PROMPTS[1] + form + " 😀"
    r = served.post({"model": "bbpe", "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 0})
    assert r.status_code == 200, r.text[:500]
    (choice,) = r.json()["choices"]
    lp = choice["logprobs"]
    enc = ref.tokenizer(text, return_offsets_mapping=True)
    assert choice["text"] == text
    assert lp["text_offset"][1:] == [a for a, _ in enc["offset_mapping"][1:]]
    assert max(lp["text_offset"]) < len(text)
    want = [token_text(b) for b in ref.token_bytes(enc["input_ids"])]
    assert lp["tokens"][1:] == want[1:] and lp["tokens"][0] == ""
    assert any(t.startswith("bytes:\\x") for t in lp["tokens"])


@pytest.mark.parametrize("prompt", [PROMPTS[3], PROMPTS[4]])
def test_top_logprobs_keep_lone_bytes_apart(served, ref, prompt):
    row = ref.next_token(prompt)
    top = np.argsort(-row, kind="stable")[:20]
    want = {token_text(b): float(row[t]) for b, t in zip(ref.token_bytes([int(t) for t in top]), top)}
    r = served.post({"model": "bbpe", "prompt": prompt, "max_tokens": 1, "logprobs": 20, "temperature": 0})
    assert r.status_code == 200, r.text[:500]
    got = r.json()["choices"][0]["logprobs"]["top_logprobs"][0]
    assert list(got) == list(want)  # 20 distinct keys: no two byte tokens collapse into one
    assert max(abs(got[k] - want[k]) for k in want) <= ATOL


def _class_logprobs(ref, prompts, verbalizer):
    out = np.empty((len(prompts), len(verbalizer)))
    for i, p in enumerate(prompts):
        for c, forms in enumerate(verbalizer.values()):
            out[i, c] = np.logaddexp.reduce([ref.continuation(p, f)[1] for f in forms])
    return out


def test_score_exact_topk_and_auto_through_serve_give_the_forward_pass(client, hf, ref):
    """Single-token forms (top-k can see them) beside forms of several byte tokens (exact only)."""
    texts = [p[len("Review: "):-len("\nSentiment:")] for p in PROMPTS]
    tpl = ck.PromptTemplate("Review: {text}\nSentiment:")
    # the two single tokens most likely after these prompts, so that top-k sees them in most rows
    mean = np.mean([ref.next_token(p) for p in PROMPTS], axis=0)
    words = (token_text(hf.engine.piece_bytes(int(t))) for t in np.argsort(-mean))
    single = list(itertools.islice((w for w in words if w.strip() and len(ref.ids(w)) == 2), 2))
    verb_single = {"a": [single[0]], "b": [single[1]]}
    verb_bytes = {"neg": [" bad", " 好"], "pos": [" très", " 😀"]}
    for verb in (verb_single, verb_bytes):
        want = _class_logprobs(ref, PROMPTS, verb)
        for backend in (client, hf):
            exact = ck.score(texts, tpl, verb, backend, method="exact", check=False)
            np.testing.assert_allclose(exact.logprobs, want, atol=ATOL, rtol=0)
            auto = ck.score(texts, tpl, verb, backend, method="auto", k=20, check=False)
            known = ~auto.censored
            np.testing.assert_allclose(auto.logprobs[known], want[known], atol=ATOL, rtol=0)
            assert (auto.logprobs[~known] >= want[~known] - ATOL).all()  # a censored value is an upper bound
            np.testing.assert_array_equal(auto.predict(), exact.predict())
    topk = ck.score(texts, tpl, verb_single, client, method="topk", k=20, check=False)
    want = _class_logprobs(ref, PROMPTS, verb_single)
    assert (~topk.censored).sum() >= 5, topk.censored
    np.testing.assert_allclose(topk.logprobs[~topk.censored], want[~topk.censored], atol=ATOL, rtol=0)
    assert (topk.logprobs[topk.censored] >= want[topk.censored] - ATOL).all()


def test_a_form_that_really_merges_is_an_error_naming_it(client, hf, ref):
    """After a template that ends in a space, "bad" tokenizes as " bad": the prompt's own last token
    is not there. Every path says so, naming the form, where the forward pass has no answer."""
    prompt = "Review: 好 film\nSentiment: "
    assert ref.continuation(prompt, "bad") is None
    for backend in (client, hf):
        assert backend.continuation_logprobs([(prompt, "bad")]) == [None]
        with pytest.raises(ck.TokenizationError, match="the form 'bad' merges with the end of prompt 0"):
            ck.score(["好 film"], "Review: {text}\nSentiment: ", {0: "bad", 1: " good"}, backend, method="exact")


# -- llama.cpp: the same checkpoint as a GGUF, llama.cpp's own token-to-piece ------------------------------
@pytest.fixture(scope="module")
def gguf_path(folder):
    pytest.importorskip("gguf")
    return write_gguf(folder, folder.parent / "bbpe-f32.gguf")


@pytest.fixture(scope="module")
def llama(gguf_path):
    pytest.importorskip("llama_cpp")
    return ck.LocalModel(str(gguf_path), n_threads=1, cache=False)


def _plain_llama_cpp(path, pairs, ids, **settings) -> list[float]:
    """log P(form | prompt) by llama-cpp-python's own Llama: the joint text's logits at every position."""
    import llama_cpp

    from calibkit.backends.llamacpp.engine import loads_as_the_engine

    with loads_as_the_engine():
        lm = llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=1, **settings)
    out = []
    for p, f in pairs:
        pid, full = ids(p), ids(p + f)
        lm.reset()
        lm.eval(full)
        logits = np.array(lm.scores[:len(full)], dtype=np.float64)
        lp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        out.append(form_logprob(lp, len(pid), full))
    lm.close()
    return out


def test_llama_cpp_reads_the_byte_level_gguf_as_transformers_does(llama, hf, ref):
    for text in [*PROMPTS, *FORMS]:
        assert llama.token_ids(text, add_bos=True) == ref.ids(text)
        assert llama.tokenize(text) == hf.tokenize(text)


def test_the_gguf_holds_the_checkpoint(gguf_path, ref, expected):
    """With float32 keys and values and no flash attention, llama.cpp computes what the forward pass
    does (measured: 1.6e-5 at most over these pairs)."""
    import llama_cpp

    f32 = llama_cpp.GGML_TYPE_F32
    got = _plain_llama_cpp(gguf_path, PAIRS, ref.ids, flash_attn=False, type_k=f32, type_v=f32)
    np.testing.assert_allclose(got, [expected[p][1] for p in PAIRS], atol=1e-4, rtol=0)


def test_llama_cpp_scores_every_script_as_llama_cpp_does(llama, gguf_path, expected):
    """LocalModel's settings (flash attention, whose keys and values are float16) against llama.cpp's own
    Llama at the same settings; the forward pass is 0.023 nats away at most there, a token more or
    less would be several nats."""
    got = llama.continuation_logprobs(PAIRS)
    want = _plain_llama_cpp(gguf_path, PAIRS, lambda t: llama.token_ids(t, add_bos=True), flash_attn=True,
                            n_batch=llama.n_batch, n_ubatch=llama.n_batch)
    np.testing.assert_allclose([g.logprob for g in got], want, atol=1e-9, rtol=0)
    _assert_continuations(got, expected, PAIRS, atol=0.05)


def test_llama_cpp_through_serve_scores_every_script_as_in_process(gguf_path, llama, tmp_path_factory):
    srv = _serve("local", f"bbpe={gguf_path}", tmp_path_factory.mktemp("serve-bbpe-gguf"))
    try:
        with ck.Client(srv.base, model="bbpe", cache=False) as c:
            remote = c.continuation_logprobs(PAIRS)
    finally:
        srv.stop()
    assert "Traceback" not in srv.stderr(), srv.stderr()[-3000:]
    local = llama.continuation_logprobs(PAIRS)
    assert [len(r.tokens) for r in remote] == [len(m.tokens) for m in local]
    np.testing.assert_allclose([r.logprob for r in remote], [m.logprob for m in local], atol=ATOL, rtol=0)
