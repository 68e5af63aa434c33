"""The engine's decode schedule: prefix reuse and the kept last row never change a number."""

from __future__ import annotations

import numpy as np
import pytest

import calibkit as ck

from helpers import sst2

TPL = "Review: {text}\nSentiment:"
VERB = {0: " negative", 1: " positive"}
PROMPT = "Article: The striker scored twice in the final.\nTopic:"
FORMS = [" World news", " Sports", " Science and technology"]


def test_prefix_reuse_never_changes_a_score(local_model) -> None:
    """Few-shot prompts share a long prefix: its cached tokens are reused, bit for bit."""
    X, y = sst2("dev", 6)
    demos = list(zip(*sst2("train", 6)))
    tpl = ck.PromptTemplate(TPL, instructions="Classify the sentiment of each movie review.",
                            demonstrations=[(x, lab) for x, lab in demos])
    eng = local_model.engine
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


def _floats(answers) -> list[tuple[float, ...]]:
    return [c.logprobs for c in answers]


def test_the_kept_last_row_saves_decodes_and_changes_no_number(local_model) -> None:
    eng = local_model.engine
    pairs = [(PROMPT, f) for f in FORMS]
    n_prompt = len(local_model.token_ids(PROMPT, add_bos=True))
    eng.reset()
    alone_top = local_model.top_k([PROMPT], 20)
    after_top = eng.evaluated_tokens
    alone = local_model.continuation_logprobs(pairs)
    # top-k then exact for one prompt: the prompt is decoded once; only the forms'
    # later tokens (1 + 2 of them) are decoded after it.
    assert eng.evaluated_tokens - after_top == 1 + 2

    # The same prompt after others, and its forms split over two batches.
    others = [TPL.format(text=x) for x in sst2("dev", 3)[0]]
    local_model.continuation_logprobs([(p, f) for p in others for f in VERB.values()])
    local_model.top_k(others, 5)
    split = ck.LocalModel(local_model.model_path, name=local_model.name, cache=False)
    split.batch_size = 2
    assert split.engine is eng
    before = eng.evaluated_tokens
    again = split.continuation_logprobs(pairs)
    # one decode of the prompt for both batches (but its BOS, still cached from the others)
    assert eng.evaluated_tokens - before == (n_prompt - 1) + 1 + 2
    assert _floats(again) == _floats(alone) and [c.tokens for c in again] == [c.tokens for c in alone]
    assert local_model.top_k([PROMPT], 20) == alone_top


def test_a_kept_row_whose_prompt_left_the_cache_decodes_the_prompt_again(local_model) -> None:
    eng = local_model.engine
    eng.reset()
    fresh = local_model.continuation_logprobs([(PROMPT, FORMS[2])])
    ids = local_model.token_ids(PROMPT, add_bos=True)
    other = local_model.token_ids("Once upon a time", add_bos=True)
    with eng.lock:
        row = eng.last_row(ids)
        eng.prompt(other, [len(other) - 1], lambda p, r: None)  # what a served request does
        assert eng.last_row(ids) is row and not row.flags.writeable
    assert eng.cached == other
    again = local_model.continuation_logprobs([(PROMPT, FORMS[2])])
    assert _floats(again) == _floats(fresh)
    assert eng.cached[: len(ids)] == ids


AG_FORMS = [" World", " World news", " Sports", " Sports and games", " Business and finance", " Science and technology"]


def test_the_padded_schedule_holds_on_this_machine(local_model) -> None:
    assert local_model.engine.schedule_ok


def test_a_text_cut_into_any_pieces_gives_the_same_numbers(local_model) -> None:
    """Token-level prefix reuse: whatever prefix is cached, every position's logits are a fresh decode's."""
    eng = local_model.engine
    text = TPL.format(text=" ".join(sst2("dev", 6)[0]))
    ids = local_model.token_ids(text, add_bos=True)
    assert len(ids) > 2 * eng.n_batch

    def rows(cached_first: int) -> np.ndarray:
        eng.reset()
        if cached_first:
            eng.prompt(ids[:cached_first], [cached_first - 1], lambda p, r: None)
        out: dict[int, np.ndarray] = {}
        eng.prompt(ids, range(cached_first, len(ids)), lambda p, r: out.__setitem__(p, r.copy()))
        return np.array([out[p] for p in range(len(ids) - 5, len(ids))])

    fresh = rows(0)
    for cut in (1, 3, 17, eng.n_batch - 1, eng.n_batch + 5, len(ids) - 6):
        np.testing.assert_array_equal(rows(cut), fresh)


def test_forms_are_decoded_side_by_side_in_one_batch_and_score_as_alone(local_model) -> None:
    eng = local_model.engine
    pairs = [(PROMPT, f) for f in AG_FORMS]
    eng.reset()
    local_model.top_k([PROMPT], 1)
    before_tokens, before_decodes = eng.evaluated_tokens, eng.decodes
    together = local_model.continuation_logprobs(pairs)
    # The trie of the later tokens: " news", " and", " and"+" games", " and"+" finance", " and"+" technology"
    # (" Sports and" shares nothing with " Business and": their first tokens differ).
    tails = {tuple(local_model.token_ids(f)[1:j + 1]) + (local_model.token_ids(f)[0],)
             for f in AG_FORMS for j in range(1, len(local_model.token_ids(f)))}
    assert eng.evaluated_tokens - before_tokens == len(tails)
    assert eng.decodes - before_decodes == 1
    for f, c in zip(AG_FORMS, together):
        eng.reset()
        assert local_model.continuation_logprobs([(PROMPT, f)]) == [c]
    # Asked first, the prompt's tokens go in the same batch as the forms': one decode in all.
    eng.reset()
    before_decodes = eng.decodes
    assert local_model.continuation_logprobs(pairs) == together
    assert eng.decodes - before_decodes == 1
    reordered = local_model.continuation_logprobs(pairs[::-1])[::-1]
    after_others = (local_model.continuation_logprobs([(TPL.format(text="fine"), " positive")] + pairs))[1:]
    assert reordered == together and after_others == together


def test_a_build_that_breaks_the_schedule_is_named_in_a_warning(local_model, monkeypatch, caplog) -> None:
    import logging

    from calibkit.backends.llamacpp.engine import Engine, EngineKey

    monkeypatch.setattr(Engine, "schedule_holds", lambda self: False)
    with caplog.at_level(logging.WARNING, logger="calibkit.llama_cpp"):
        eng = Engine(EngineKey(local_model.model_path, n_ctx=64, n_threads=1, n_batch=8))
    assert not eng.schedule_ok
    assert "depending on how its text is batched" in caplog.text


@pytest.mark.parametrize("n_batch", [4, 30, 64, 512])
def test_n_batch_outside_the_padded_schedule_names_the_argument_and_the_fix(n_batch) -> None:
    with pytest.raises(ValueError, match=r"n_batch must be a multiple of 4 from 8 to 60 .*default of 32"):
        ck.LocalModel(n_batch=n_batch, cache=False)


def test_weights_are_never_repacked_and_a_plain_llama_can_load_them_so(local_model) -> None:
    """The engine loads the weights as the file holds them (model_params); within loads_as_the_engine a
    plain llama_cpp.Llama does too, computing the engine's rows bit for bit, and the default comes back."""
    import llama_cpp

    from calibkit.backends.llamacpp.engine import loads_as_the_engine, model_params

    assert model_params(llama_cpp).use_extra_bufts is False
    assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is True
    eng = local_model.engine
    with loads_as_the_engine():
        assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is False
        llm = llama_cpp.Llama(local_model.model_path, n_ctx=256, n_batch=eng.n_batch, n_ubatch=eng.n_batch,
                              flash_attn=True, logits_all=False, verbose=False, n_threads=local_model.n_threads)
    assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is True
    ids = local_model.token_ids("The capital of France is a city", add_bos=True)
    assert len(ids) == 8  # a decode the engine pads with no rows, so both run the same batch
    with eng.lock:
        eng.reset()
        want = eng.last_row(ids).copy()
    llm.eval(ids)
    got = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(eng.n_vocab,)).copy()
    llm.close()
    assert np.array_equal(got, want)
