"""calibkit serve's generation: the embedded model answering completions requests like a server."""

from __future__ import annotations

import pytest

from calibkit.api import CompletionRequest, InvalidRequestError
from calibkit.backends.llamacpp import DEFAULT_MODEL_NAME
from calibkit.server.completions import LocalCompletions
from calibkit.server.run import load_models


@pytest.fixture(scope="module")
def completions(local_model) -> LocalCompletions:
    return LocalCompletions(local_model)


def _req(prompt, **kw) -> CompletionRequest:
    return CompletionRequest(model=DEFAULT_MODEL_NAME, prompt=prompt, logprobs_cap=None, **kw)


def test_complete_answers_like_a_server(completions, local_model) -> None:
    r = completions.complete(_req("The capital of France is", max_tokens=3, logprobs=5, temperature=0, echo=True))
    c = r.choices[0]
    lp = c.logprobs
    assert c.text.startswith("The capital of France is") and r.id.startswith("cmpl-")
    assert r.model == local_model.name == completions.name
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


@pytest.mark.parametrize("k", [1, 5, 20])
def test_the_greedy_top_logprobs_are_the_backends_top_k(completions, local_model, k) -> None:
    prompts = ["The capital of France is", "Review: a gorgeous film\nSentiment:"]
    r = completions.complete(_req(prompts, max_tokens=1, logprobs=k, temperature=0))
    for prompt, c in zip(prompts, r.choices):
        assert c.logprobs.top_logprobs[0] == local_model.top_k([prompt], k)[0]  # the same floats, same order
        assert list(c.logprobs.top_logprobs[0]) == list(local_model.top_k([prompt], k)[0])


def test_a_list_of_prompts_is_answered_prompt_by_prompt(completions) -> None:
    prompts = ["a", "b", "c"]
    kw = dict(max_tokens=2, n=2, seed=1, temperature=1.0, logprobs=2, echo=True)
    whole = completions.complete(_req(prompts, **kw))
    parts = [completions.complete(_req(p, **kw)) for p in prompts]
    assert [c.index for c in whole.choices] == list(range(6))
    assert [c.text for c in whole.choices] == [c.text for p in parts for c in p.choices]
    assert [c.logprobs for c in whole.choices] == [c.logprobs for p in parts for c in p.choices]
    assert whole.usage.prompt_tokens == sum(p.usage.prompt_tokens for p in parts)
    assert whole.usage.total_tokens == sum(p.usage.total_tokens for p in parts)


def test_sampling_is_seeded_and_stops(completions) -> None:
    a = completions.complete(_req("Once upon a time", max_tokens=8, temperature=1.0, seed=7, n=2))
    b = completions.complete(_req("Once upon a time", max_tokens=8, temperature=1.0, seed=7, n=2))
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    counting = completions.complete(_req("1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[" 7"]))
    assert counting.choices[0].finish_reason == "stop" and " 7" not in counting.choices[0].text
    assert counting.choices[0].text.startswith(" 5, 6")


def test_too_long_a_prompt_is_a_clear_error(completions) -> None:
    with pytest.raises(InvalidRequestError, match="longer than the model's context") as e:
        completions.complete(_req("word " * 3000, max_tokens=1))
    assert e.value.param == "prompt"


def test_extreme_sampler_values_still_give_a_token(completions) -> None:
    for kw in ({"temperature": 5e-324}, {"repetition_penalty": 1e-300, "temperature": 1.0}, {"seed": -5, "temperature": 1.0}):
        r = completions.complete(_req("Hello there, how are", max_tokens=2, **kw))
        assert r.choices[0].finish_reason in ("length", "stop"), kw


def test_load_models_serves_one_model_per_file_under_many_names(local_model) -> None:
    models = load_models(["llama-8b", "gemma"], n_threads=local_model.n_threads)
    assert list(models) == ["llama-8b", "gemma"] and models["llama-8b"] is models["gemma"]
    served = models["llama-8b"]
    assert isinstance(served, LocalCompletions) and served.name == DEFAULT_MODEL_NAME
    assert served.model.cache is None and served.n_ctx == local_model.n_ctx


def test_echoes_of_one_prompt_reuse_its_positions_and_give_a_fresh_decodes_numbers(local_model) -> None:
    """Prefix caching: the K echo requests of one example cost little more than one, in any order."""
    from calibkit.server.prefix import PositionMemo

    prompt = "Article: The striker scored twice in the final.\nTopic:"
    forms = [" World news", " Sports", " Science and technology", " Sports and games"]
    texts = [prompt] + [prompt + f for f in forms]
    eng = local_model.engine

    def echo(gen: LocalCompletions, text: str):
        return gen.complete(_req(text, max_tokens=0, logprobs=1, echo=True)).choices[0].logprobs

    fresh = []
    for text in texts:  # each text alone: no memo, no cached key/value entries
        eng.reset()
        fresh.append(echo(LocalCompletions(local_model, PositionMemo()), text))
    gen = LocalCompletions(local_model, PositionMemo())
    eng.reset()
    before = eng.evaluated_tokens
    shared = [echo(gen, t) for t in texts]
    decoded = eng.evaluated_tokens - before
    P = len(local_model.token_ids(prompt, add_bos=True))
    # The prompt once; then each form from the first position not asked before: the prompt's last
    # token and the form's (3, 2, 4), and for " Sports and games" from " Sports" on (its first
    # position came with " Sports").
    assert [len(local_model.token_ids(f)) for f in forms] == [2, 1, 3, 3]
    assert decoded == P + 3 + 2 + 4 + 3, decoded
    assert gen.memo.hits >= len(forms) * (P - 1)
    reordered = [echo(LocalCompletions(local_model, PositionMemo()), t) for t in texts[::-1]][::-1]
    for a, b, c in zip(fresh, shared, reordered):
        assert a.token_logprobs == b.token_logprobs == c.token_logprobs
        assert a.top_logprobs == b.top_logprobs == c.top_logprobs
    # and the library's multi-token scores are the server's echoed ones
    lib = local_model.continuation_logprobs([(prompt, f) for f in forms])
    for f, c, lp in zip(forms, lib, shared[1:]):
        assert list(c.logprobs) == lp.token_logprobs[P:]
