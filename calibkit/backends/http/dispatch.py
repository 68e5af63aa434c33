"""Many packs in flight at once: :func:`run_packs`, the client's scheduler.

Packs go out with at most the limiter's ``limit`` in flight, spread over the base URLs;
a pack that times out goes again as two halves, down to one prompt, so that no request
asks more than the server answers within the timeout (each split is logged, logger
``calibkit.http``). Answers may be handed back as they come, to be cached at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Mapping

from ...api import CompletionRequest, CompletionResponse
from ..base import MISSING, IncompleteAnswers
from .packing import packs as packed
from .retries import backoff
from .sender import NotSent, Sender, SplitRequest

__all__ = ["Answered", "run_packs"]

log = logging.getLogger("calibkit.http")

#: What a report hands over for each request answered: its requests' positions, their
#: answers, and (gated) the future to set once they are kept.
Answered = tuple[list[int], list[CompletionResponse], "asyncio.Future[None] | None"]


def set_kept(kept: list[asyncio.Future[None]]) -> None:
    """Say that the answers of these packs are kept (cached): their places go to the next requests."""
    for f in kept:
        if not f.done():
            f.set_result(None)


async def run_packs(sender: Sender, requests: list[CompletionRequest], headers: Mapping[str, str], *,
                    max_prompts_per_request: int, report: Callable[[list[Answered]], None] | None = None,
                    gated: bool = False) -> list[CompletionResponse]:
    """Single-prompt requests, packed, sent with at most ``sender.limiter.limit`` in flight; answers in order.

    When a request fails for good, the others of the call are not sent, and
    IncompleteAnswers carries the answers that came (MISSING elsewhere), the error, and
    the positions of the failed request's prompts.

    ``report``, where given, is called on this loop with the answers as they come, a
    list of ``(positions, answers, kept)``, one for each request answered. ``gated``: each
    has a future ``kept``, to be set once its answers are safe (cached), and at most
    ``max_in_flight`` requests are sent and not yet kept, so that a run killed at any
    point has lost the answers of at most that many requests; the answers of one turn of
    the loop are reported together. Not gated (nothing to keep safe), they are reported
    a round (``max_in_flight`` requests) at a time, or what came in 0.2 s, and at the end.
    """
    max_in_flight = sender.limiter.maximum
    packs = packed(requests, max_prompts_per_request)
    answers: list[Any] = [MISSING] * len(requests)
    failed = asyncio.Event()
    failed_at: list[int] = []
    loop = asyncio.get_running_loop()
    credits = asyncio.Semaphore(max_in_flight) if report is not None and gated else None
    came: list[Answered] = []

    timer: asyncio.TimerHandle | None = None

    def hand_over() -> None:  # what came since the last report, in one
        nonlocal timer
        if timer is not None:
            timer.cancel()
            timer = None
        if came and report is not None:
            got = came[:]
            came.clear()
            report(got)

    async def one(pack: list[int], kept: list[asyncio.Future[None]] | None = None) -> None:
        nonlocal timer
        try:
            resps = await sender.send_pack([requests[i] for i in pack], headers, failed)
        except SplitRequest:
            half = (len(pack) + 1) // 2
            log.warning("no answer within %g s for a request of %d prompts: sending them as requests of %d",
                        sender.timeout, len(pack), half)
            sender.splits += 1
            await asyncio.sleep(backoff(0))  # as before a retry: the server may still be busy
            halves = await asyncio.gather(one(pack[:half], kept), one(pack[half:], kept), return_exceptions=True)
            for r in halves:  # both halves end before this does; the first real error is the pack's
                if isinstance(r, BaseException) and not isinstance(r, NotSent):
                    raise r
            for r in halves:
                if isinstance(r, BaseException):
                    raise r
            return
        except BaseException as e:
            failed.set()  # what has not been sent yet, is not sent at all
            if not isinstance(e, NotSent):
                failed_at.extend(pack)
            raise
        for i, r in zip(pack, resps):
            answers[i] = r
        if report is not None:
            done = None
            if kept is not None:
                done = loop.create_future()
                kept.append(done)
            came.append((pack, resps, done))
            if credits is not None:  # kept as soon as can be: a request waits for it
                if len(came) == 1:
                    loop.call_soon(hand_over)  # with whatever else comes in this turn of the loop
            elif len(came) >= max_in_flight:  # nothing waits: a round of answers at a time ...
                hand_over()
            elif timer is None:  # ... or what came in 0.2 s
                timer = loop.call_later(0.2, hand_over)

    async def gated_one(pack: list[int]) -> None:
        assert credits is not None
        async with credits:  # held until the pack's answers are kept, not only answered
            kept: list[asyncio.Future[None]] = []
            await one(pack, kept)
            await asyncio.gather(*kept)

    send = gated_one if credits is not None else one
    queued = iter(packs)
    errors: list[BaseException] = []

    async def worker() -> None:
        # A few workers take the packs in order, rather than a task for each pack made up
        # front: thousands of those (a window of questions) cost the loop a pause at the start
        # and a place in the limiter's queue each. Twice max_in_flight of them keep the limit's
        # worth out while some wait to retry.
        for pack in queued:
            if failed.is_set():
                return  # the rest are not sent: another request failed for good
            try:
                await send(pack)
            except (NotSent, asyncio.CancelledError):
                raise
            except BaseException as e:
                errors.append(e)

    try:
        results = await asyncio.gather(*(worker() for _ in range(min(len(packs), 2 * max_in_flight))),
                                       return_exceptions=True)
    finally:
        hand_over()  # the last answers
    for r in results:
        if isinstance(r, asyncio.CancelledError):
            raise r
    if errors:
        raise IncompleteAnswers(answers, errors[0], failed=failed_at)
    return answers
