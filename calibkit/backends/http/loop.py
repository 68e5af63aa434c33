"""An event loop on a background thread of its own, for a synchronous API over async connections.

Async connections belong to the loop that opened them, so a pool kept for a client's
life needs a loop kept as long; running it on a thread of its own also serves callers
that are inside a running loop themselves (Jupyter).

>>> import asyncio
>>> loop = LoopThread()
>>> async def answer() -> int:
...     await asyncio.sleep(0)
...     return 42
>>> loop.run(answer())
42
>>> loop.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, Coroutine, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An event loop running on a daemon thread (named ``calibkit-http``) until :meth:`close`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="calibkit-http", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop; the concurrent future of its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (from any thread but the loop's)."""
        fut = self.submit(coro)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()  # Ctrl-C or an error here: stop what is still under way on the loop
            raise

    def close(self, cleanup: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Run ``cleanup()`` on the loop (closing its connections), then stop the loop and its thread."""
        if self.loop.is_closed():
            return
        if threading.current_thread() is self.thread:  # dropped on the loop's own thread: just stop it
            self.loop.stop()
            return
        try:
            if cleanup is not None:
                self.run(cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()
