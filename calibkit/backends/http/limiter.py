"""How many requests may be in flight at once: :class:`AdaptiveLimiter`, paced by the server's answers."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any, AsyncIterator

from ..base import check_int

__all__ = ["AdaptiveLimiter", "Slot"]

log = logging.getLogger("calibkit.http")


class AdaptiveLimiter:
    """How many requests may be in flight at once, adapted to what the server sustains.

    AIMD, as TCP paces its sending window: ``limit`` starts at ``maximum``; a request
    that meets a sign of overload (a timeout, a 429, 503 or 504) halves it, down to 1; ``limit``
    answers in a row grow it by one, back up to ``maximum``. Requests sent before the
    last cut went out under the old limit: their overload is the same burst and does
    not cut again, nor do their answers count towards growing back.

    A request holds a :class:`Slot` while in flight (``async with limiter.slot() as
    s:``, waiting in arrival order while ``limit`` are out) and reports on it with
    :meth:`Slot.succeeded` or :meth:`Slot.overloaded`. It serves one event loop at a
    time; a pickled copy starts with nothing in flight.

    Attributes: ``limit`` (in flight at most, now), ``maximum``, ``in_flight`` and
    ``backoffs`` (how many times ``limit`` was cut).

    >>> import asyncio
    >>> lim = AdaptiveLimiter(8)
    >>> async def burst_then_calm() -> None:
    ...     async with lim.slot() as a, lim.slot() as b:  # two requests in flight
    ...         a.overloaded()                            # a 503: 8 -> 4
    ...         b.overloaded()                            # the same burst: no second cut
    ...     for _ in range(4):                            # four answers in a row: 4 -> 5
    ...         async with lim.slot() as s:
    ...             s.succeeded()
    >>> asyncio.run(burst_then_calm())
    >>> lim.limit, lim.backoffs, lim.in_flight
    (5, 1, 0)
    """

    def __init__(self, maximum: int):
        check_int("maximum", maximum, 1)
        self.maximum = maximum
        self.limit = maximum
        self.in_flight = 0
        self.backoffs = 0
        self._epoch = 0  # bumped at each cut: which slots were sent under the current limit
        self._streak = 0  # answers in a row since the last change of limit
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def __repr__(self) -> str:
        return f"AdaptiveLimiter(limit={self.limit}, maximum={self.maximum}, in_flight={self.in_flight})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "in_flight": 0, "_waiters": collections.deque()}

    async def acquire(self) -> "Slot":
        """Wait for a place (first come, first served) and take it; :meth:`release` gives it back."""
        if self._waiters or self.in_flight >= self.limit:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # granted just as it was cancelled
                    self.in_flight -= 1
                    self._wake()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                raise
        else:
            self.in_flight += 1
        return Slot(self, self._epoch)

    def release(self, slot: "Slot") -> None:
        """Give a place back (once per :meth:`acquire`)."""
        self.in_flight -= 1
        self._wake()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator["Slot"]:
        """``async with limiter.slot() as s:`` holds a place for the block."""
        s = await self.acquire()
        try:
            yield s
        finally:
            self.release(s)

    def _wake(self) -> None:
        # A place is granted on the waiter's behalf, so that none is taken twice.
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def _succeeded(self, epoch: int) -> None:
        if epoch != self._epoch or self.limit >= self.maximum:
            return
        self._streak += 1
        if self._streak >= self.limit:
            self.limit += 1
            self._streak = 0
            log.debug("up to %d requests in flight again", self.limit)
            self._wake()

    def _overloaded(self, epoch: int) -> bool:
        if epoch != self._epoch or self.limit == 1:
            return False
        self.limit = max(1, self.limit // 2)
        self.backoffs += 1
        self._epoch += 1
        self._streak = 0
        return True


class Slot:
    """A place held under an :class:`AdaptiveLimiter`; report how its request went, once."""

    __slots__ = ("_limiter", "_epoch", "_reported")

    def __init__(self, limiter: AdaptiveLimiter, epoch: int):
        self._limiter = limiter
        self._epoch = epoch
        self._reported = False

    def succeeded(self) -> None:
        """The server answered: counts towards growing the limit back."""
        if not self._reported:
            self._reported = True
            self._limiter._succeeded(self._epoch)

    def overloaded(self) -> bool:
        """The server showed overload: halve the limit, unless this burst did already; True if it was cut."""
        if self._reported:
            return False
        self._reported = True
        return self._limiter._overloaded(self._epoch)
