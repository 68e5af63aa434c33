"""Packing prompts into requests: single-prompt requests that differ only in their prompt travel together.

One completions request may carry many prompts (``"prompt": [...]``); its choices come
back in any order, each naming its prompt by ``index``. :func:`packs` groups requests
into packs, :func:`pack_body` makes a pack's one body and :func:`unpack` routes its answer's
choices back to their requests. :func:`echo_plan` lays out the echo requests that
score continuations.

>>> from calibkit.api import CompletionRequest
>>> reqs = [CompletionRequest(model="m", prompt=p, max_tokens=1) for p in "abc"]
>>> packs(reqs, 2)
[[0, 1], [2]]
>>> pack_body([reqs[0], reqs[1]])["prompt"]
['a', 'b']
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from ...api import CompletionRequest, CompletionResponse, Usage
from .responses import MalformedResponseError

__all__ = ["EchoPlan", "echo_plan", "pack_body", "packs", "unpack"]

# The fields of a CompletionRequest that requests packed together share: all but the prompt.
PACKED_ALIKE = tuple(f.name for f in dataclasses.fields(CompletionRequest) if f.name != "prompt")


def packs(requests: Sequence[CompletionRequest], size: int) -> list[list[int]]:
    """The positions of single-prompt ``requests``, in packs of at most ``size`` that differ only in the prompt."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, r in enumerate(requests):  # the fields but the prompt (a tuple where a list was given: hashable)
        groups.setdefault(tuple(getattr(r, f) for f in PACKED_ALIKE), []).append(i)
    return [idx[s : s + size] for idx in groups.values() for s in range(0, len(idx), size)]


def pack_body(reqs: Sequence[CompletionRequest]) -> dict[str, Any]:
    """The JSON body of one request carrying the prompts of ``reqs`` (one prompt each, alike but for it)."""
    body = reqs[0].to_json()
    body["prompt"] = [r.prompts[0] for r in reqs] if len(reqs) > 1 else reqs[0].prompts[0]
    return body


def unpack(resp: CompletionResponse, reqs: Sequence[CompletionRequest]) -> list[CompletionResponse]:
    """The answer to each of ``reqs`` from the answer ``resp`` to their pack, routed by choice index."""
    n = reqs[0].n or 1
    routed: list[list[Any]] = [[] for _ in reqs]
    for c in resp.choices:
        slot = c.index // n
        if not 0 <= slot < len(reqs):
            raise MalformedResponseError(
                f"the server answered with choice index {c.index} for a request of {len(reqs)} prompts "
                f"and n={n} (indexes 0 to {len(reqs) * n - 1})"
            )
        c.index = c.index % n
        routed[slot].append(c)
    for i, cs in enumerate(routed):
        if len(cs) != n:
            raise MalformedResponseError(
                f"the server sent {len(cs)} choices for prompt {i} of a request of {len(reqs)} prompts "
                f"(expected {n}); set max_prompts_per_request=1 if it takes one prompt per request"
            )
    share = len(reqs)
    usage = Usage(resp.usage.prompt_tokens // share, resp.usage.completion_tokens // share,
                  resp.usage.total_tokens // share)  # a pack's usage, shared out evenly
    return [CompletionResponse(id=resp.id, model=resp.model, choices=cs, usage=usage, created=resp.created)
            for cs in routed]


@dataclasses.dataclass
class EchoPlan:
    """The texts to echo for (prompt, continuation) pairs, and which answers each pair needs.

    ``texts[prompt_at[p]]`` is prompt ``p`` alone, ``texts[pair_at[j]]`` pair ``j``'s
    prompt + continuation; ``questions_of[i]`` are the pairs that need text ``i``'s answer.
    """

    texts: list[str]
    prompt_at: dict[str, int]
    pair_at: list[int]
    questions_of: list[list[int]]


def echo_plan(pairs: Sequence[tuple[str, str]]) -> EchoPlan:
    """Each prompt is echoed alone too, just before its first pair, so that the two travel close together.

    The seam rule of ``Backend.continuation_logprobs`` needs the prompt's own tokens, so
    that a continuation that changes how the prompt tokenizes is seen even where a token
    boundary falls at the seam; ``""`` has no tokens to compare.

    >>> echo_plan([("Say hi", " yes"), ("Say hi", " no")]).texts
    ['Say hi', 'Say hi yes', 'Say hi no']
    """
    plan = EchoPlan([], {}, [], [])
    for j, (p, c) in enumerate(pairs):
        if p and p not in plan.prompt_at:
            plan.prompt_at[p] = len(plan.texts)
            plan.texts.append(p)
            plan.questions_of.append([])
        if p:
            plan.questions_of[plan.prompt_at[p]].append(j)  # a prompt echoed alone stands for each of its pairs
        plan.pair_at.append(len(plan.texts))
        plan.texts.append(p + c)
        plan.questions_of.append([j])
    return plan
