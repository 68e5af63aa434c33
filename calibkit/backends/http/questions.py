"""From the answers to requests to the answers to questions, handed to the caller's thread as they come.

A question (a prompt's top-k, a continuation) needs the answers of one or more
requests; once they have all come, it is answered, and the answers of a group of
questions go to ``keep`` on the caller's thread, which owns its connection to the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from typing import Any, Callable, Coroutine

from ...api import CompletionResponse
from ..base import MISSING, IncompleteAnswers
from .dispatch import Answered, set_kept
from .loop import LoopThread

__all__ = ["answer_questions"]

#: Sends the requests: ``send(report, gated)``, as :func:`~calibkit.backends.http.dispatch.run_packs` takes them.
Send = Callable[[Callable[[list[Answered]], None] | None, bool], Coroutine[Any, Any, list[CompletionResponse]]]


def answer_questions(thread: LoopThread, send: Send, read: Callable[[list[Any], list[int]], list[Any]],
                     questions_of: list[list[int]], n: int, keep: Callable[[dict[int, Any]], None] | None = None,
                     gated: bool = False) -> list[Any]:
    """Send requests for ``n`` questions on ``thread``'s loop; ``read(answers, js)`` turns the requests'
    answers (MISSING where none came) into the answers to questions ``js``, and
    ``questions_of[i]`` are the questions that need request ``i``'s answer.

    A call that fails part way raises IncompleteAnswers with the answers to the questions
    whose requests all came, the questions of the failed request first. With ``keep``,
    the answers to questions are handed to it, in groups, as soon as the requests each
    needs have come (see ``report`` of :func:`~calibkit.backends.http.dispatch.run_packs`),
    on this thread. ``gated`` (where the answers are cached): a request is not sent while
    ``max_in_flight`` others are sent and not yet kept, so that a run killed at any point
    loses at most that many requests' answers, while the requests in flight never wait for
    a batch's slowest.
    """
    if keep is None:
        try:  # the requests come from make_request: CompletionRequest checked each when it was made
            return read(thread.run(send(None, False)), list(range(n)))
        except IncompleteAnswers as e:
            failed = sorted({q for i in e.failed for q in questions_of[i]})
            raise IncompleteAnswers(read(e.answers, list(range(n))), e.cause, failed=failed) from None

    came: queue.SimpleQueue[Any] = queue.SimpleQueue()
    got: list[Any] = [MISSING] * n
    resps: list[Any] = [MISSING] * len(questions_of)
    waiting = [0] * n  # requests each question still waits for
    for qs in questions_of:
        for j in qs:
            waiting[j] += 1

    async def run() -> list[CompletionResponse]:
        try:
            return await send(came.put, gated)
        finally:
            came.put(None)  # the end: nothing more comes

    fut = thread.submit(run())
    try:
        ended = False
        while not ended:
            groups = [came.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    groups.append(came.get_nowait())
            ready: list[int] = []
            kept: list[asyncio.Future[None]] = []
            for group in groups:
                if group is None:
                    ended = True
                    continue
                for pack, answers, done in group:
                    for i, r in zip(pack, answers):
                        resps[i] = r
                        for j in questions_of[i]:
                            waiting[j] -= 1
                            if waiting[j] == 0:
                                ready.append(j)
                    if done is not None:
                        kept.append(done)
            if ready:
                answered = dict(zip(ready, read(resps, ready)))
                for j, a in answered.items():
                    got[j] = a
                keep(answered)
            if kept:
                thread.loop.call_soon_threadsafe(set_kept, kept)
        fut.result()
    except IncompleteAnswers as e:
        failed = sorted({q for i in e.failed for q in questions_of[i]})
        raise IncompleteAnswers(got, e.cause, failed=failed) from None
    except BaseException:
        fut.cancel()  # an answer that does not read, the cache, Ctrl-C: stop what is under way
        raise
    return got

