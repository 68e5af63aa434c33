"""The one context-length rule of the in-process engines (llama.cpp, and transformers under calibkit serve)."""

from __future__ import annotations

import pytest

from calibkit.api import InvalidRequestError
from calibkit.backends.context import check_context


def test_a_request_within_the_context_passes_and_one_past_it_names_the_tokens_and_the_remedy() -> None:
    check_context(16, 16)
    with pytest.raises(InvalidRequestError) as e:
        check_context(17, 16, "prompt with its longest continuation")
    assert e.value.message.startswith(
        "the prompt with its longest continuation is 17 tokens, longer than the model's context of 16; shorten it")
    assert e.value.param == "prompt" and "(calibkit serve: --n-ctx)" in str(e.value)
    with pytest.raises(InvalidRequestError, match=r"--n-ctx, at most 32768\)"):
        check_context(40000, 2048, max_ctx=32768)


def test_the_embedded_engine_checks_with_it(local_model) -> None:
    with pytest.raises(InvalidRequestError) as mine:
        local_model.engine.check_len(local_model.n_ctx + 1, "prompt")
    with pytest.raises(InvalidRequestError) as rule:
        check_context(local_model.n_ctx + 1, local_model.n_ctx)
    assert str(mine.value) == str(rule.value)
