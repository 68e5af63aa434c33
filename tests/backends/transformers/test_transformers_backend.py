"""TransformersModel over the bundled gemma-3-270m GGUF (dequantized to float32) against a plain
forward pass of the same transformers model, and against the embedded llama.cpp model."""

from __future__ import annotations

import functools
import logging
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import calibkit as ck  # noqa: E402
from calibkit.backends.transformers import converted_gguf_folder  # noqa: E402

from helpers import sst2  # noqa: E402

TPL = "Review: {text}\nSentiment:"
VERB = {0: " negative", 1: " positive"}
FORMS = [" positive", " negative", " very good", " not at all bad!"]
FEW_SHOT = ("Review: a triumph of style and heart\nSentiment: positive\n\n"
            "Review: a tedious, joyless slog\nSentiment: negative\n\n"
            "Review: {text}\nSentiment:")


@functools.cache  # the two padding sides are checked against the same passes
def _reference(model: ck.TransformersModel, prompt: str, form: str) -> list[float]:
    """log P of each of the form's tokens given what precedes it, by one plain forward pass of prompt + form."""
    lm = model.engine
    ids = lm.tokenizer(prompt + form)["input_ids"]
    P = len(lm.tokenizer(prompt)["input_ids"])
    with torch.inference_mode():
        logits = lm.model(torch.tensor([ids])).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1)
    return [float(lp[P - 1 + j, ids[P + j]]) for j in range(len(ids) - P)]


def test_the_first_load_of_a_gguf_says_what_it_does_how_long_and_each_part_as_it_starts(hf_model_load) -> None:
    # The session's one conversion happens in the hf_model fixture (tests/conftest.py), which keeps
    # what the calibkit.steps logger said meanwhile; a second conversion here would cost a minute.
    if not hf_model_load.converted:
        pytest.skip("an earlier test of this run converted the GGUF before the hf_model fixture loaded it")
    steps = hf_model_load.steps
    assert steps, "the conversion said nothing on the calibkit.steps logger"
    # the folder under the session's cache (this test's cache folder is another, its models/ the same)
    kept = f"models/transformers/{converted_gguf_folder(hf_model_load.model.source).name}"
    assert steps[0].startswith("converting gemma-3-270m-q4_k_m.gguf for transformers: reading and dequantizing")
    assert "takes about 30 seconds, once" in steps[0] and kept in steps[0]
    parts = ["reading the tokenizer from gemma-3-270m-q4_k_m.gguf",
             "reading and dequantizing the weights of gemma-3-270m-q4_k_m.gguf",
             "saving the converted checkpoint to "]
    at = [next((i for i, s in enumerate(steps) if s.startswith(p)), None) for p in parts]
    assert None not in at and at == sorted(at), steps  # each part said, in the order they run
    assert steps[at[-1]].endswith(f"{kept} ...")


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_continuations_equal_a_plain_forward_pass(hf_model, padding_side) -> None:
    m = ck.TransformersModel(hf_model.source, cache=False, padding_side=padding_side, max_batch_tokens=160)
    texts = sst2("dev", 10)[0]
    prompts = [TPL.format(text=t) for t in texts[:6]] + [FEW_SHOT.format(text=t) for t in texts[6:]]
    pairs = [(p, f) for p in prompts for f in FORMS]
    before = m.engine.forwards
    got = m.continuation_logprobs(pairs)
    passes = m.engine.forwards - before
    assert {len(c.tokens) for c in got} == {1, 2, 5}  # multi-token forms, several lengths side by side
    for (p, f), c in zip(pairs, got):
        ref = _reference(hf_model, p, f)
        assert len(c.logprobs) == len(ref)
        np.testing.assert_allclose(c.logprobs, ref, rtol=1e-5, atol=1e-5, err_msg=f"{f!r} after {p!r}")
    # prompts of different lengths, and forms, shared forward passes: padding happened
    assert passes < len(pairs) / 2


def test_top_k_is_the_head_of_the_whole_distribution(hf_model) -> None:
    prompt = TPL.format(text="a gorgeous, witty film")
    lm = hf_model.engine
    with torch.inference_mode():
        ref = torch.log_softmax(lm.model(torch.tensor([lm.tokenizer(prompt)["input_ids"]])).logits[0, -1].double(), -1)
    top = hf_model.top_k([prompt], 8)[0]
    assert len(top) == 8
    values = torch.topk(ref, 8)
    assert list(top) == [lm.tokenizer.decode([int(i)]) for i in values.indices]
    np.testing.assert_allclose(list(top.values()), values.values.numpy(), atol=1e-5)
    np.testing.assert_allclose(hf_model.next_token_logprobs(prompt), ref.numpy(), atol=1e-4)
    assert hf_model.top_tokens(prompt, 3) == list(top.items())[:3]


def test_argmax_agrees_with_the_embedded_model_on_200_sst2_examples(hf_model, cached_model) -> None:
    X, y = sst2("dev", 200)
    hf = ck.score(X, TPL, VERB, hf_model, method="exact", progress=False)
    cpp = ck.score(X, TPL, VERB, cached_model, method="exact", progress=False)  # the Ray test's reference too
    agree = float(np.mean(np.asarray(hf.predict()) == np.asarray(cpp.predict())))
    assert agree >= 0.95, agree
    gap = np.abs(hf.logprobs - cpp.logprobs)
    assert gap.mean() < 0.5  # the same weights: float32 against llama.cpp's Q4_K_M kernels
    assert hf.provenance["backend"] == "transformers" and hf.provenance["dtype"] == "float32"


def test_a_few_shot_prefix_is_run_once_for_the_prompts_that_share_it(hf_model) -> None:
    lm = hf_model.engine
    texts = sst2("dev", 24)[0][12:]
    prompts = [FEW_SHOT.format(text=t) for t in texts]
    before = lm.evaluated_tokens
    first = hf_model.continuation_logprobs([(p, " positive") for p in prompts[:6]])
    middle = lm.evaluated_tokens
    second = hf_model.continuation_logprobs([(p, " positive") for p in prompts[6:]])
    lengths = [len(hf_model.token_ids(p, add_bos=True)) for p in prompts]
    shared = len(hf_model.token_ids(FEW_SHOT.split("{text}")[0], add_bos=True)) - 1
    # the first batch runs the shared block once; the second finds it kept
    assert middle - before <= sum(lengths[:6]) - 5 * shared
    assert lm.evaluated_tokens - middle <= sum(lengths[6:]) - 6 * shared
    # The kept block's rows came from a batch of another shape than the whole prompt's one pass: float32
    # rows that differ in the last digits, up to 2.7e-5 on these prompts on a CPU with AMX.
    for (p, c) in zip(prompts, first + second):
        np.testing.assert_allclose(c.logprobs, _reference(hf_model, p, " positive"), rtol=0, atol=5e-5)


def test_forms_that_merge_with_the_prompt_are_none_and_score_says_so(hf_model) -> None:
    out = hf_model.continuation_logprobs([("Sentiment: pos", "itive"), ("Sentiment:", " positive")])
    assert out[0] is None and out[1].tokens == (" positive",)
    with pytest.raises(ck.TokenizationError, match="'itive' merges with the end of prompt 0"):
        ck.score(["a great film"], "Review: {text}\nSentiment: pos", {"pos": "itive", "neg": "ition"}, hf_model)
    traps = ck.check_traps(ck.PromptTemplate(TPL), ck.Verbalizer({0: " not good", 1: " good"}), hf_model)
    assert [t.kind for t in traps] == ["multi-token"]


def test_bos_and_tokens_match_the_embedded_model(hf_model, local_model) -> None:
    text = "Review: a gorgeous film, naïve and ☃\nSentiment:"
    assert hf_model.token_ids(text, add_bos=True) == local_model.token_ids(text, add_bos=True)
    assert hf_model.token_ids(text) == local_model.token_ids(text)
    assert hf_model.tokenize(text) == local_model.tokenize(text)
    lone_byte = local_model.token_ids("☃")[0]
    assert hf_model.token_text(lone_byte) == local_model.token_text(lone_byte)


def test_the_converted_gguf_is_kept_and_loads_as_a_folder(hf_model, caplog) -> None:
    folder = converted_gguf_folder(hf_model.source)
    assert (folder / ".converted").is_file() and (folder / "config.json").is_file()
    again = ck.TransformersModel(folder, cache=False)
    assert again.name == folder.name
    with caplog.at_level(logging.INFO, logger="calibkit.steps"):
        again.engine
    assert not [r.getMessage() for r in caplog.records if r.name == "calibkit.steps"]  # no conversion to say
    prompt = TPL.format(text="a dull mess")
    a = again.continuation_logprobs([(prompt, " negative")])[0]
    b = hf_model.continuation_logprobs([(prompt, " negative")])[0]
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_copies_and_pickles_share_the_loaded_model(hf_model, tmp_path) -> None:
    m = ck.TransformersModel(hf_model.source, name="google/gemma-3-270m", cache=tmp_path / "c.sqlite")
    clone = pickle.loads(pickle.dumps(m))
    assert clone.engine is m.engine is hf_model.engine
    assert clone.identity == m.identity == {"backend": "transformers", "model": "google/gemma-3-270m",
                                            "source": "gemma-3-270m-q4_k_m.gguf", "dtype": "float32"}
    prompt = TPL.format(text="fine")
    m.top_k([prompt], 3)
    clone.top_k([prompt], 3)
    assert clone.cache_hits == 1 and clone.requests_made == 0


def test_it_answers_the_vocabulary_question_from_its_whole_distribution(hf_model) -> None:
    from calibkit.form_search import sees_vocabulary

    assert sees_vocabulary(hf_model)
    prompts = ["Review: dull\nSentiment:", "Review: witty\nSentiment:"]
    rows = [hf_model.next_token_logprobs(p) for p in prompts]
    np.testing.assert_array_equal(hf_model.mean_next_token_logprobs(prompts), [(rows[0] + rows[1]) / 2])


def test_the_estimator_takes_it(hf_model) -> None:
    X, y = sst2("train", 24)
    clf = ck.LogprobClassifier(hf_model, TPL, VERB, calibration="temperature").fit(X, y)
    assert clf.predict_proba(X[:4]).shape == (4, 2)


def test_bad_arguments_name_the_argument_and_the_fix(tmp_path) -> None:
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left'"):
        ck.TransformersModel(padding_side="middle")
    with pytest.raises(ValueError, match="dtype must be one of"):
        ck.TransformersModel(dtype="int3")
    with pytest.raises(ValueError, match="max_batch_tokens must be an integer >= 1"):
        ck.TransformersModel(max_batch_tokens=0)
    with pytest.raises(FileNotFoundError, match="does not exist; give a checkpoint folder"):
        ck.TransformersModel(tmp_path / "missing.gguf")
    offline = ck.TransformersModel("google/not-a-model-here", cache=False)
    with pytest.raises(OSError, match="not a local folder or .gguf file.*offline, pass the path") as e:
        offline.n_vocab
    assert "\n" not in str(e.value)


def test_a_row_longer_than_max_batch_tokens_is_a_clear_error(hf_model) -> None:
    m = ck.TransformersModel(hf_model.source, cache=False, max_batch_tokens=8)
    with pytest.raises(MemoryError, match="max_batch_tokens=8.*raise max_batch_tokens"):
        m.continuation_logprobs([(TPL.format(text="a long enough review to pass eight tokens"), " positive")])


def test_a_batch_out_of_memory_halves_the_chosen_budget_and_gives_the_same_answers(hf_model, monkeypatch) -> None:
    from calibkit.backends.transformers.engine import OutOfMemory

    lm = hf_model.engine
    real = type(lm).forward

    def small_memory(self, rows, *args, **kwargs):  # a device that holds two rows at a time
        if len(rows) > 2:
            raise OutOfMemory(len(rows), max(map(len, rows)), self.device)
        return real(self, rows, *args, **kwargs)

    prompts = [TPL.format(text=t) for t in sst2("dev", 6)[0]]
    pairs = [(p, f) for p in prompts for f in (" positive", " very good")]
    want = ck.TransformersModel(hf_model.source, cache=False).continuation_logprobs(pairs)
    monkeypatch.setattr(type(lm), "forward", small_memory)
    m = ck.TransformersModel(hf_model.source, cache=False)
    got = m.continuation_logprobs(pairs)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    assert m.batch_tokens < ck.TransformersModel(hf_model.source, cache=False).batch_tokens
    with pytest.raises(MemoryError, match="pass a smaller max_batch_tokens="):
        ck.TransformersModel(hf_model.source, cache=False, max_batch_tokens=4096).continuation_logprobs(pairs)
    monkeypatch.setattr(type(lm), "forward", lambda self, rows, *a, **k: (_ for _ in ()).throw(
        OutOfMemory(len(rows), max(map(len, rows)), self.device)))
    with pytest.raises(MemoryError, match="one row of .* tokens does not fit in the memory of cpu"):
        ck.TransformersModel(hf_model.source, cache=False).top_k([prompts[0]], 3)
