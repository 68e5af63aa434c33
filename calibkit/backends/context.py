"""The context-length rule of the in-process engines: one check, one message, for llama.cpp and transformers.

A prompt (with what follows it on the same key/value cache) longer than the context the
model was loaded with is the caller's request at fault, as a completions server says it:
an :class:`~calibkit.api.InvalidRequestError` about the ``prompt``, with the remedy.

>>> check_context(12, 16)
>>> check_context(20, 16, "prompt with max_tokens")
Traceback (most recent call last):
...
calibkit.api.InvalidRequestError: the prompt with max_tokens is 20 tokens, longer than the model's context of 16; ...
"""

from __future__ import annotations

from ..api import InvalidRequestError

__all__ = ["check_context"]


def check_context(n: int, n_ctx: int, what: str = "prompt", *, max_ctx: int | None = None) -> None:
    """Raise :class:`~calibkit.api.InvalidRequestError` where ``n`` tokens exceed a context of ``n_ctx``.

    ``what`` names the tokens counted; ``max_ctx``, where known, is the largest context
    the model takes (its positions), said in the remedy.
    """
    if n > n_ctx:
        most = "" if max_ctx is None else f", at most {max_ctx}"
        raise InvalidRequestError(
            f"the {what} is {n} tokens, longer than the model's context of {n_ctx}; "
            f"shorten it or load the model with a larger n_ctx (calibkit serve: --n-ctx{most})",
            param="prompt",
        )
