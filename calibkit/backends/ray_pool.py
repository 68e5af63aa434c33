"""A pool of Ray actors behind the seam: one backend's questions spread over many processes or machines.

:class:`RayPool` is a :class:`~calibkit.Backend`, so everything that takes a backend
takes it (:func:`~calibkit.score`, the estimators, the command line). Each actor holds
one backend built from a picklable recipe (a :class:`~calibkit.LocalModel` is a path
and its settings; a :class:`~calibkit.Client` its URLs) and keeps no cache: the
answers come back to the driver, in input order, and the pool's own cache (the
driver's) stores each chunk as it returns. A run that stops (an actor or a node
died, an endpoint failed) has cached what finished, so a rerun asks only the rest.

>>> import calibkit as ck
>>> from calibkit.backends.ray_pool import RayPool
>>> pool = RayPool(ck.LocalModel(n_threads=1), workers=2, cache=False)   # starts nothing yet
>>> s = ck.score(["a gorgeous film", "a dull mess"], "Review: {text}\\nSentiment:",
...              {0: " negative", 1: " positive"}, pool)                  # doctest: +SKIP
>>> pool.close()                                                           # doctest: +SKIP

The answers equal a single-process run of the same backend, and share its cache
entries: the pool's :attr:`~RayPool.identity` is the recipe's.

On a real cluster
-----------------
Start Ray on the head node with ``ray start --head`` and on each other node with
``ray start --address=HEAD:6379`` (every node needs calibkit installed, and the model
file where a LocalModel's recipe says), then, on the head node::

    pool = RayPool(ck.LocalModel(n_threads=8), workers=N, address="auto")
    # or one client per vLLM server node; their identity is a Client over all the URLs
    pool = RayPool([ck.Client(f"http://gpu-node-{i}:8000/v1", model=M) for i in range(4)], address="auto")
    # or one model per GPU: RayPool(TransformersModel(...), workers=8, num_gpus=1, address="auto")
    scores = ck.score(texts, template, verbalizer, pool)

The results come back to the driver in input order, equal to a single-process run,
and the driver's cache holds every answer (the actors keep none).
"""

from __future__ import annotations

import collections
import itertools
import math
import os
import socket
from typing import Any, Callable, Sequence

from ..cache import ResponseCache
from .base import MISSING, Backend, Continuation, IncompleteAnswers, Keep, SharedOnCopy, TopK, check_int

__all__ = ["RayPool"]


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("RayPool needs Ray: pip install 'calibkit[ray]'") from e
    return ray


class _Worker:
    """What one actor runs: the recipe's backend, without a cache, answering chunks."""

    def __init__(self, cls: type, state: dict[str, Any]):
        backend = cls.__new__(cls)
        backend.__setstate__(state)
        if backend.cache is not None:  # a recipe whose __setstate__ opened one anyway
            backend.cache.close()
        backend.cache = None
        self.backend = backend

    def ask(self, question: str, items: list[Any], k: int | None) -> list[Any] | IncompleteAnswers:
        """The answers, or the IncompleteAnswers of a chunk that failed part way, sent back as it is
        (rather than raised, which Ray would wrap); any other exception travels as Ray's RayTaskError."""
        try:
            if question == "top_k":
                assert k is not None
                return self.backend._answer_top_k(items, k)
            return self.backend._answer_continuations(items)
        except IncompleteAnswers as e:
            return e


def _recipe(backend: Backend) -> tuple[type, dict[str, Any]]:
    """The backend's pickled state with no cache to open: the actor answers, the driver caches."""
    state = backend.__getstate__()
    if not isinstance(state, dict):
        raise TypeError(f"RayPool needs backends that pickle their state as a dict ({type(backend).__name__} does not)")
    state = dict(state, _cache_arg=False, cache=None)
    return type(backend), state


def _merged_identity(identities: list[dict[str, Any]]) -> dict[str, Any]:
    """One identity for replicas of one model: equal, or different only in ``endpoint`` (merged, sorted)."""
    first = identities[0]
    if all(i == first for i in identities):
        return dict(first)
    keys = sorted({k for i in identities for k in i if any(j.get(k, MISSING) != i.get(k, MISSING) for j in identities)},
                  key=str)
    if keys != ["endpoint"] or not all("endpoint" in i for i in identities):
        raise ValueError(
            "backends must be replicas of one model (equal identities, or differing only in 'endpoint'); "
            f"they differ in {keys}: {[{k: i.get(k) for k in keys} for i in identities]}"
        )
    urls: set[Any] = set()
    for i in identities:
        e = i["endpoint"]
        urls.update([e] if isinstance(e, str) else e)
    return {**first, "endpoint": sorted(urls)}


def _chunks(items: list[Any], size: int, key: Callable[[Any], Any] | None) -> list[list[int]]:
    """Positions of ``items`` in chunks of at most ``size``; with ``key``, a run of consecutive
    items with equal keys (one prompt's forms) stays in one chunk unless it alone is larger."""
    runs: list[list[int]] = []
    if key is None:
        runs = [[i] for i in range(len(items))]
    else:
        for _, group in itertools.groupby(range(len(items)), key=lambda i: key(items[i])):
            g = list(group)
            runs += [g[s : s + size] for s in range(0, len(g), size)]
    chunks: list[list[int]] = []
    for run in runs:
        if chunks and len(chunks[-1]) + len(run) <= size:
            chunks[-1].extend(run)
        else:
            chunks.append(list(run))
    return chunks


class RayPool(SharedOnCopy, Backend):
    """The seam's questions spread over a pool of Ray actors, each holding one backend from a recipe.

    Parameters
    ----------
    backends : one backend, the recipe, copied to ``workers`` actors; or a list of
        backends, one actor each (one :class:`~calibkit.Client` per server replica).
        A list must be replicas of one model: equal identities, or identities that
        differ only in ``endpoint``.
    workers : actors for one recipe (default 2); with a list, None or its length.
    address : the Ray cluster to join where Ray is not started yet (``"auto"``: the
        one ``ray start`` runs on this node); None starts a local instance.
    num_cpus, num_gpus : Ray resources each actor holds.
    max_retries : times a chunk whose actor died is asked again, on another actor.
    batch_size : questions in one chunk handed to an actor; None takes the recipe's
        (the embedded model: 16; a Client: enough to fill its requests in flight).
        It is also the most questions one actor's death can lose.
    cache : the driver's cache, as for every backend; the actors keep none.

    Ray starts, and the actors with it, on the first question (or :meth:`start`); an
    actor that died is replaced at the start of the next call. :meth:`close` kills them.
    An actor waits until the cluster has its ``num_cpus`` and ``num_gpus`` free (a local
    instance this pool starts has CPUs for all its actors), and so do the questions
    handed to it.
    """

    streams_answers = True

    def __init__(
        self,
        backends: Backend | Sequence[Backend],
        *,
        workers: int | None = None,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        max_retries: int = 2,
        batch_size: int | None = None,
        cache: ResponseCache | str | bool | None = None,
    ):
        if isinstance(backends, Backend):
            if workers is None:
                workers = 2
            check_int("workers", workers, 1)
            recipes = [backends] * workers
        else:
            recipes = list(backends) if isinstance(backends, Sequence) and not isinstance(backends, str) else []
            if not recipes or not all(isinstance(b, Backend) for b in recipes):
                raise TypeError(f"backends must be a Backend or a non-empty list of them (got {backends!r})")
            if workers is not None and workers != len(recipes):
                raise ValueError(
                    f"workers={workers!r} but {len(recipes)} backends were given (one actor each): "
                    f"pass workers=None, or one backend as the recipe for workers={workers!r} actors"
                )
        if any(isinstance(b, RayPool) for b in recipes):
            raise TypeError("backends must not be RayPools; give the backend the pool should copy")
        for name, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
                raise ValueError(f"{name} must be a non-negative number of Ray resources per actor (got {v!r})")
        check_int("max_retries", max_retries, 0)
        if batch_size is not None:
            check_int("batch_size", batch_size, 1)
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a Ray address such as 'auto' or 'HOST:6379', or None (got {address!r})")
        # Before the cache opens: a pool of backends that are not replicas fails here.
        self._identity = _merged_identity([b.identity for b in recipes])
        super().__init__(cache=cache)
        self.recipes = recipes
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.max_retries = max_retries
        self.batch_size = batch_size if batch_size is not None else min(b.batch_size for b in recipes)
        caps = [b.logprobs_cap for b in recipes if b.logprobs_cap is not None]
        self.logprobs_cap = min(caps) if caps else None
        self.exact_is_cheap = all(b.exact_is_cheap for b in recipes)
        self._states = [_recipe(b) for b in recipes]
        #: The actor of each recipe, None before it starts and after it died.
        self._slots: list[Any] = [None] * len(recipes)
        #: Questions each slot's actors answered (slot i: recipe i), over this object's life.
        self.answered_by: list[int] = [0] * len(recipes)
        #: Chunks asked again on another actor after their actor died.
        self.retried = 0

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    @property
    def workers(self) -> int:
        return len(self.recipes)

    @property
    def actors(self) -> list[Any]:
        """The live actors' handles (started ones; see :meth:`start`)."""
        return [a for a in self._slots if a is not None]

    def __repr__(self) -> str:
        return f"RayPool({self.recipes[0]!r}, workers={self.workers}, address={self.address!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_slots"] = [None] * len(self._slots)  # a copy starts its own actors
        return state

    # -- actors ---------------------------------------------------------------------
    def start(self) -> "RayPool":
        """Start Ray (where it is not) and an actor for each slot that has none."""
        ray = _ray()
        if not ray.is_initialized():
            extra: dict[str, Any] = {}
            if self.address is None and not os.environ.get("RAY_ADDRESS"):
                # A local instance of its own: room for every actor, which would otherwise
                # wait for a CPU forever (Ray counts CPUs per actor, not load).
                extra["num_cpus"] = max(os.cpu_count() or 1, math.ceil(self.num_cpus * self.workers))
            _check_reachable(self.address)
            try:
                ray.init(address=self.address, include_dashboard=False, ignore_reinit_error=True, **extra)
            except ValueError as e:
                if not extra or "existing cluster" not in str(e):
                    raise
                # `ray start` runs on this machine, and ray.init joins it: its CPUs are its own
                ray.init(include_dashboard=False, ignore_reinit_error=True)
            except ConnectionError as e:
                raise _no_cluster(self.address, str(e)) from None
        if any(a is None for a in self._slots):
            actor_cls = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=0)(_Worker)
            for i, a in enumerate(self._slots):
                if a is None:
                    self._slots[i] = actor_cls.remote(*self._states[i])
        return self

    def close(self) -> None:
        """Kill the actors and close the driver's cache."""
        if any(a is not None for a in self._slots):
            ray = _ray()
            for i, a in enumerate(self._slots):
                if a is not None:
                    try:
                        ray.kill(a)
                    except Exception:  # noqa: BLE001 - already gone, or Ray shut down
                        pass
                    self._slots[i] = None
        super().close()

    # -- the two questions ------------------------------------------------------------
    def _answer_top_k(self, prompts: list[str], k: int, *, keep: Keep | None = None) -> list[TopK]:
        return self._spread("top_k", prompts, k, None, keep)

    def _answer_continuations(self, pairs: list[tuple[str, str]], *,
                              keep: Keep | None = None) -> list[Continuation | None]:
        return self._spread("continuation", pairs, None, lambda pc: pc[0], keep)

    def _spread(self, question: str, items: list[Any], k: int | None,
                key: Callable[[Any], Any] | None, keep: Keep | None) -> list[Any]:
        """Each chunk to the next idle actor; each answer kept as its chunk returns, all in input order."""
        ray = _ray()
        from ray.exceptions import RayError, RayTaskError

        self.start()
        chunks = _chunks(items, self.batch_size, key)
        answers: list[Any] = [MISSING] * len(items)
        pending = collections.deque(range(len(chunks)))
        tries = [0] * len(chunks)
        idle = [i for i, a in enumerate(self._slots) if a is not None]
        running: dict[Any, tuple[int, int]] = {}  # object ref -> (slot, chunk)
        cause: BaseException | None = None
        failed: list[int] = []

        while running or (pending and idle and cause is None):
            while pending and idle and cause is None:
                slot, c = idle.pop(0), pending.popleft()
                ref = self._slots[slot].ask.remote(question, [items[i] for i in chunks[c]], k)
                running[ref] = (slot, c)
            (ref,), _ = ray.wait(list(running), num_returns=1)
            slot, c = running.pop(ref)
            pos = chunks[c]
            try:
                result = ray.get(ref)
            except RayTaskError as e:  # the backend's own error, raised in the actor
                cause = cause or _unwrap(e)
                failed += pos
                idle.append(slot)
                continue
            except RayError as e:  # the actor died (or its node, or the answer was lost)
                self._drop(slot)
                tries[c] += 1
                if tries[c] > self.max_retries:
                    cause = cause or _lost(e, f"a chunk's actor died {tries[c]} times (max_retries={self.max_retries})")
                    failed += pos
                elif not any(a is not None for a in self._slots):
                    cause = cause or _lost(e, f"every actor of the pool died ({self.workers} started)")
                    failed += pos
                else:
                    self.retried += 1
                    pending.appendleft(c)
                continue
            if isinstance(result, IncompleteAnswers):
                cause = cause or result.cause
                came = result.answers[: len(pos)] + [MISSING] * (len(pos) - len(result.answers))
                failed += [pos[i] for i in result.failed] or [p for p, a in zip(pos, came) if a is MISSING]
                result = came
            elif len(result) != len(pos):
                cause = cause or RuntimeError(f"an actor's backend answered {len(result)} of {len(pos)} questions")
                failed += pos
                idle.append(slot)
                continue
            got = {p: a for p, a in zip(pos, result) if a is not MISSING}
            for p, a in got.items():
                answers[p] = a
            self.answered_by[slot] += len(got)
            if keep is not None and got:
                keep(got)
            idle.append(slot)
        if cause is None and pending:  # every actor died between chunks
            cause = RuntimeError(f"every actor of the pool died ({self.workers} started)")
        if cause is not None:
            failed += [p for c in pending for p in chunks[c]]
            raise IncompleteAnswers(answers, cause, sorted(set(failed)))
        return answers

    def _drop(self, slot: int) -> None:
        """Forget a dead actor (and make sure it is gone); the next call starts a new one there."""
        actor, self._slots[slot] = self._slots[slot], None
        try:
            _ray().kill(actor)
        except Exception:  # noqa: BLE001 - it is already dead
            pass


def _check_reachable(address: str | None) -> None:
    """Fail at once where a HOST:PORT address has nothing listening (ray.init would wait for minutes)."""
    host, sep, port = (address or "").rpartition(":")
    if not sep or not port.isdigit() or address.startswith(("ray://", "auto", "local")):  # type: ignore[union-attr]
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise _no_cluster(address, str(e.strerror or e)) from None


def _no_cluster(address: str | None, why: str) -> ConnectionError:
    return ConnectionError(
        f"could not join the Ray cluster at {address!r} ({why}); is `ray start --head` running there? Give the "
        "address it printed (--ray / address=), or none for a Ray instance on this machine"
    )


def _lost(error: BaseException, what: str) -> RuntimeError:
    e = RuntimeError(f"RayPool: {what}; call again to start new actors "
                     f"(pool.start()), or check the Ray cluster (ray status)")
    e.__cause__ = error
    return e


def _unwrap(error: Any) -> BaseException:
    """The exception the backend raised in the actor, as its own type with its message."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    try:
        return error.as_instanceof_cause()
    except Exception:  # noqa: BLE001 - a cause Ray cannot rebuild: its own error then
        return error
