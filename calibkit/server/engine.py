"""The server's engine: a bounded queue in front of one worker thread that owns the models.

llama.cpp contexts are not to be shared between threads, and the embedded model's
numbers depend on how prompts are cut into decode batches, so requests are never
interleaved nor packed into one decode: the worker takes up to ``batch_size`` queued
requests at a time and answers them one after another, in prompt order, so that
requests sharing a prompt prefix reuse its key/value cache. When the queue is full,
:meth:`Worker.submit` raises :class:`QueueFull` at once (the server answers 503).

Example
-------
>>> w = Worker(queue_size=4)
>>> w.submit(lambda: 6 * 7).result()
42
>>> w.close()
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from typing import Any, Callable

__all__ = ["Cancelled", "QueueFull", "Worker"]

log = logging.getLogger("calibkit.server")


class QueueFull(RuntimeError):
    """The request queue holds ``queue_size`` requests already; try again shortly."""


class Cancelled(Exception):
    """A job stopped early because the request it answers was abandoned (its client left).

    Raised by a job (e.g. :meth:`calibkit.server.completions.LocalCompletions.complete`
    when its ``cancel`` event is set); the worker counts these in ``Worker.cancelled``.
    """


_STOP = object()


class Worker:
    """One thread running submitted jobs in order, behind a queue of at most ``queue_size``.

    ``submit(fn, sort_key=...)`` returns a :class:`concurrent.futures.Future`; jobs
    taken in one batch run in ``sort_key`` order (ties keep arrival order).
    """

    def __init__(self, queue_size: int = 64, batch_size: int = 8, name: str = "calibkit-engine"):
        if queue_size < 1 or batch_size < 1:
            raise ValueError(f"queue_size and batch_size must be >= 1 (got {queue_size}, {batch_size})")
        self.queue_size = queue_size
        self.batch_size = batch_size
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._closed = False
        self.batches = 0  # batches taken, for tests and /health
        self.clients_gone = 0  # requests whose client left before the answer (the app counts them)
        self.skipped = 0  # of those, the jobs dropped while still queued
        self.cancelled = 0  # of those, the jobs that stopped early while running (raised Cancelled)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Jobs waiting in the queue (not counting the ones running)."""
        return self._queue.qsize()

    def submit(self, fn: Callable[[], Any], sort_key: Any = "") -> concurrent.futures.Future:
        """Queue ``fn`` for the worker thread; raise QueueFull when the queue is full."""
        if self._closed:
            raise RuntimeError("the worker is closed")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self._queue.put_nowait((sort_key, fn, fut))
        except queue.Full:
            raise QueueFull(
                f"the server is busy: {self.queue_size} requests are queued already; retry shortly"
            ) from None
        return fut

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            jobs = [item for item in batch if item is not _STOP]
            self.batches += 1
            # sorted() is stable: equal prompts keep their arrival order.
            for _, fn, fut in sorted(jobs, key=lambda j: j[0]):
                if not fut.set_running_or_notify_cancel():
                    self.skipped += 1
                    continue
                try:
                    fut.set_result(fn())
                except BaseException as e:  # handed to the waiting request, never lost
                    if isinstance(e, Cancelled):
                        self.cancelled += 1
                    fut.set_exception(e)
            if stop:
                return

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish the queued jobs, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
