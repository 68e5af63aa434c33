"""RayPool: the seam's questions over a pool of real Ray actors on a local Ray instance
(2 CPUs), each holding the embedded model; answers equal a single-process run, actors that
die mid-way are retried elsewhere, and a run every actor of which died resumes from the cache."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import calibkit as ck  # noqa: E402
from calibkit.api import APIError  # noqa: E402
from calibkit.backends.base import MISSING, Backend, Continuation, IncompleteAnswers  # noqa: E402
from calibkit.backends.ray_pool import RayPool, _chunks  # noqa: E402

from helpers import sst2  # noqa: E402

TPL = "Review: {text}\nSentiment:"
VERB = {0: " negative", 1: " positive"}


class Scripted(Backend):
    """A tiny backend for the pool's logic: ``boom`` in a prompt raises ValueError in the actor,
    ``partial`` answers the rest of its batch and fails that one (IncompleteAnswers of an APIError)."""

    batch_size = 2

    def __init__(self, model: str = "m", endpoint: Any = None, cache: Any = False):
        super().__init__(cache=cache)
        self.model = model
        self.endpoint = endpoint

    @property
    def identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {"backend": "scripted", "model": self.model}
        if self.endpoint is not None:
            ident["endpoint"] = self.endpoint
        return ident

    def _answer_top_k(self, prompts: list[str], k: int, *, keep=None) -> list[dict[str, float]]:
        if any("boom" in p for p in prompts):
            raise ValueError(f"the prompt {prompts!r} went boom")
        answers = [{" yes": -0.1 * len(p), " no": math.log(0.5)} for p in prompts]
        if any("partial" in p for p in prompts):
            # this class travels by value; MISSING, pickled by name, is MISSING in the actor
            answers = [MISSING if "partial" in p else a for p, a in zip(prompts, answers)]
            raise IncompleteAnswers(answers, APIError("503 upstream overloaded", status_code=503))
        return answers

    def _answer_continuations(self, pairs: list[tuple[str, str]], *, keep=None) -> list[Continuation | None]:
        return [Continuation((c,), (-float(len(p)),)) for p, c in pairs]


def test_a_ray_address_with_no_cluster_is_one_line_naming_the_flag() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    r = subprocess.run([sys.executable, "-m", "calibkit.cli", "score", "sentiment", "--limit", "2",
                        "--ray", f"127.0.0.1:{port}", "--no-cache"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "could not join the Ray cluster at" in r.stderr, r.stderr
    assert "--ray" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    # The actors unpickle this module's Scripted: by value, since tests/ is no package they can import.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def sst2_pairs(cached_model):
    """200 SST-2 examples, their (prompt, form) pairs, and the in-process answers and scores
    (the embedded model with the machine's threads, while the actors run one each: llama.cpp's
    numbers do not depend on the thread count; through the session's cache, which other tests of
    these examples share)."""
    texts = sst2("dev", 200)[0]
    pairs = [(TPL.format(text=t), f) for t in texts for f in VERB.values()]
    want = cached_model.continuation_logprobs(pairs)
    asked = cached_model.requests_made
    scores = ck.score(texts, TPL, VERB, cached_model)
    assert cached_model.requests_made == asked  # score() read what continuation_logprobs() asked
    return texts, pairs, want, scores


# -- fast logic, no Ray ------------------------------------------------------------------
def test_constructing_a_pool_neither_imports_nor_starts_ray() -> None:
    code = ("import sys; from calibkit.backends.ray_pool import RayPool; import calibkit as ck\n"
            "p = RayPool(ck.LocalModel(n_threads=1, cache=False), workers=3, cache=False)\n"
            "assert p.identity == ck.LocalModel(cache=False).identity and p.exact_is_cheap\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_identity_is_the_recipes_so_a_pool_shares_cache_entries() -> None:
    assert RayPool(Scripted(), workers=3).identity == Scripted().identity
    assert RayPool([Scripted(), Scripted()]).identity == Scripted().identity
    urls = ["http://gpu-2:8000/v1", "http://gpu-1:8000/v1"]
    pool = RayPool([ck.Client(u, model="m", cache=False) for u in urls])
    assert pool.identity == ck.Client(urls, model="m", cache=False).identity
    assert pool.identity["endpoint"] == sorted(urls)
    assert pool.logprobs_cap == ck.Client(urls[0], model="m", cache=False).logprobs_cap
    assert pool.batch_size == ck.Client(urls[0], model="m", cache=False).batch_size


def test_a_list_of_different_models_is_refused_naming_the_keys() -> None:
    with pytest.raises(ValueError, match=r"replicas of one model.*\['model'\]"):
        RayPool([Scripted("a"), Scripted("b")])
    with pytest.raises(ValueError, match=r"\['endpoint', 'model'\]"):
        RayPool([Scripted("a", ["u1"]), Scripted("b", ["u2"])])


@pytest.mark.parametrize(("backends", "kwargs", "match"), [
    ([Scripted(), Scripted()], {"workers": 3}, "workers=3 but 2 backends"),
    (Scripted(), {"workers": 0}, "workers must be an integer >= 1"),
    (Scripted(), {"max_retries": -1}, "max_retries must be"),
    (Scripted(), {"batch_size": 0}, "batch_size must be"),
    (Scripted(), {"num_gpus": -1}, "num_gpus must be"),
])
def test_bad_arguments_fail_at_construction(backends, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        RayPool(backends, **kwargs)
    with pytest.raises(TypeError, match="backends must be"):
        RayPool([])


def test_chunks_keep_one_prompts_forms_together() -> None:
    items = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("b", "z"), ("c", "x")]
    assert _chunks(items, 4, key=lambda pc: pc[0]) == [[0, 1], [2, 3, 4, 5]]
    assert _chunks(items, 2, key=lambda pc: pc[0]) == [[0, 1], [2, 3], [4, 5]]  # a run too long is cut
    assert _chunks(list("abcde"), 2, key=None) == [[0, 1], [2, 3], [4]]


# -- on a local Ray instance --------------------------------------------------------
def test_a_backend_error_in_an_actor_reaches_the_user_as_its_own_type(ray_local, tmp_path) -> None:
    prompts = [f"p{i}" for i in range(12)]
    with RayPool(Scripted(), workers=2, cache=tmp_path / "c.sqlite") as pool:
        with pytest.raises(ValueError, match=r"went boom.*answered and are cached") as e:
            pool.top_k([*prompts, "boom"], 2)
        assert not isinstance(e.value, ray.exceptions.RayError)
        with pytest.raises(APIError, match="upstream overloaded") as e:
            pool.top_k([*prompts, "partial"], 2)
        assert e.value.status_code == 503
        assert pool.top_k(prompts, 2) == Scripted().top_k(prompts, 2)
        # every answer that came was cached, even beside the failures: asked once, then hits
        assert pool.requests_made == len(prompts)
        assert pool.cache_hits == 2 * len(prompts)


def test_200_sst2_examples_score_exactly_as_in_one_process(ray_local, sst2_pairs, tmp_path) -> None:
    texts, pairs, _, reference = sst2_pairs
    with RayPool(ck.LocalModel(n_threads=1), workers=2, cache=tmp_path / "c.sqlite") as pool:
        s = ck.score(texts, TPL, VERB, pool)
        assert all(n > 0 for n in pool.answered_by), pool.answered_by  # both actors did work
        assert sum(pool.answered_by) == pool.requests_made == len(set(pairs))
    np.testing.assert_array_equal(s.logprobs, reference.logprobs)
    assert np.array_equal(s.probs, reference.probs)


def test_an_actor_killed_mid_way_has_its_chunk_retried_elsewhere(ray_local, sst2_pairs) -> None:
    _, pairs, want, _ = sst2_pairs
    pairs, want = pairs[:160], want[:160]
    pool = RayPool(ck.LocalModel(n_threads=1, cache=False), workers=2, cache=False).start()
    victim = pool.actors[0]
    done = []

    def kill_once(n: int) -> None:
        done.append(n)
        if len(done) == 2:
            ray.kill(victim)

    with pool:
        assert pool.continuation_logprobs(pairs, progress=kill_once) == want
        assert len(pool.actors) == 1 and victim not in pool.actors
        assert pool.requests_made == len(set(pairs))


def test_a_run_whose_actors_all_died_resumes_asking_only_the_rest(ray_local, sst2_pairs, tmp_path) -> None:
    """The issue's acceptance: a second run after a kill mid-way recomputes nothing that had finished."""
    _, pairs, want, _ = sst2_pairs
    total = len(set(pairs))
    path = tmp_path / "c.sqlite"
    first = RayPool(ck.LocalModel(n_threads=1, cache=False), workers=2, cache=path).start()
    done = []

    def kill_all(n: int) -> None:
        done.append(n)
        if len(done) == 3:
            for a in first.actors:
                ray.kill(a)

    with first, pytest.raises(RuntimeError, match=r"every actor of the pool died.*answered and are cached"):
        first.continuation_logprobs(pairs, progress=kill_all)
    cached = first.requests_made
    assert 0 < cached < total

    with RayPool(ck.LocalModel(n_threads=1, cache=False), workers=2, cache=path) as second:
        assert second.continuation_logprobs(pairs) == want
        assert second.requests_made == total - cached
        assert second.cache_hits == cached
