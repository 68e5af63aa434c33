"""The server's worker: one thread, a bounded queue, batches run one request at a time."""

from __future__ import annotations

import threading

import pytest

from calibkit.server.engine import QueueFull, Worker


def _blocked_worker(queue_size: int, batch_size: int = 8):
    """A worker whose first job waits for ``release``; ``entered`` is set once it runs."""
    w = Worker(queue_size=queue_size, batch_size=batch_size)
    entered, release = threading.Event(), threading.Event()

    def hold() -> str:
        entered.set()
        assert release.wait(60)
        return "held"

    first = w.submit(hold)
    assert entered.wait(60)
    return w, first, release


def test_a_full_queue_refuses_at_once_and_recovers():
    w, first, release = _blocked_worker(queue_size=2)
    try:
        queued = [w.submit(lambda i=i: i) for i in range(2)]
        assert w.pending == 2
        with pytest.raises(QueueFull, match="2 requests are queued"):
            w.submit(lambda: "one too many")
        release.set()
        assert first.result(60) == "held"
        assert [f.result(60) for f in queued] == [0, 1]
        assert w.submit(lambda: "again").result(60) == "again"
    finally:
        release.set()
        w.close()


def test_a_batch_runs_in_prompt_order_one_job_at_a_time():
    w, first, release = _blocked_worker(queue_size=16, batch_size=8)
    order: list[str] = []
    running = []
    lock = threading.Lock()

    def job(p: str) -> str:
        with lock:
            running.append(p)
            assert len(running) == 1, "two jobs ran at once"
        order.append(p)
        with lock:
            running.remove(p)
        return p

    try:
        prompts = ["b: few-shot 2", "a: few-shot 1", "b: few-shot 2", "a: other"]
        futs = [w.submit(lambda p=p: job(p), sort_key=p) for p in prompts]
        release.set()
        assert [f.result(60) for f in futs] == prompts  # each answer goes to its own request
        assert order == sorted(prompts)
    finally:
        release.set()
        w.close()


def test_errors_reach_the_caller_and_the_worker_goes_on():
    w = Worker(queue_size=4)
    try:
        with pytest.raises(ZeroDivisionError):
            w.submit(lambda: 1 / 0).result(60)
        assert w.submit(lambda: "fine").result(60) == "fine"
    finally:
        w.close()


def test_close_finishes_queued_jobs_then_refuses():
    w, first, release = _blocked_worker(queue_size=4)
    later = w.submit(lambda: "queued before close")
    release.set()
    w.close()
    assert later.result(0) == "queued before close"
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(lambda: None)
