"""RayPool's overhead: zero-shot SST-2 with the embedded model spread over Ray actors against plain ck.score.

Scores the first ``--n`` reviews of ../shared/data/sst2/dev.txt ("Review:
{text}\\nSentiment:", " negative" / " positive", ``method="exact"``) on a local Ray
instance this script starts (``ray.init(num_cpus=2, include_dashboard=False)``), in
two phases, since the actors of both pools would hold more than the 2 CPUs:

1. plain ``ck.score`` with ``LocalModel(n_threads=2, cache=False)`` against
   ``RayPool(LocalModel(n_threads=2), workers=1, num_cpus=2, cache=False)``;
2. plain ``LocalModel(n_threads=2)`` and plain ``LocalModel(n_threads=1)`` against
   ``RayPool(LocalModel(n_threads=1), workers=2, num_cpus=1, cache=False)``.

Within a phase the sides take turns (turns.py), ``--round`` examples each. Ray's
startup and each pool's start (actors, their model loads, a first call of two
examples) are timed apart, outside the timed part. It prints each side's time, its
ratio against plain (n_threads = 2, the best one process does with both cores), and
whether a pool's scores are exactly those of the plain run with the same n_threads
(and whether llama.cpp's numbers are the same across thread counts). On 2 cores
the honest expectation is no speed-up: one actor only adds the hand-off, and two
actors of one thread each do the work that one process of two threads does.

    python benchmarks/bench_ray.py [--n 200] [--round 50]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import calibkit as ck
from bench_scoring import DEFAULT_DATA, FORMS, TEMPLATE, load
from rows import row
from turns import take_turns


def scorer(model: ck.Backend):
    def run(texts: list[str]) -> np.ndarray:
        return ck.score(texts, TEMPLATE, FORMS, model, method="exact", progress=False, check=False).form_logprobs

    return run


def start_pool(recipe: ck.LocalModel, workers: int, num_cpus: float, texts: list[str]) -> tuple[ck.RayPool, float]:
    """The pool, started and warmed by a first call of two examples; the seconds that took."""
    t = time.perf_counter()
    pool = ck.RayPool(recipe, workers=workers, num_cpus=num_cpus, cache=False)
    pool.start()
    # One chunk per actor, so that every actor loads its model here.
    ck.score(texts[: 8 * workers], TEMPLATE, FORMS, pool, method="exact", progress=False, check=False)
    return pool, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="SST-2 examples (default 200)")
    ap.add_argument("--round", type=int, default=50, help="examples per turn (default 50)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SST-2 'label sentence' file")
    args = ap.parse_args()
    import ray

    texts = load(args.data, args.n)[0]
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t_ray = time.perf_counter() - t
    plain2 = ck.LocalModel(n_threads=2, cache=False)
    plain1 = ck.LocalModel(n_threads=1, cache=False)
    for m in (plain2, plain1):
        scorer(m)(texts[:2])  # load and warm, as the pools' first call does
    print(f"Ray {ray.__version__}, local instance, num_cpus = 2: ray.init {t_ray:.1f} s")
    print(f"LocalModel: gemma-3-270m Q4_K_M, n_batch {plain2.n_batch} (padded schedule), flash attention on, "
          f"cache=False; RayPool batch_size {plain2.batch_size} questions per chunk; {args.n} examples, turns of {args.round}")

    try:
        pool1, t_pool1 = start_pool(ck.LocalModel(n_threads=2, cache=False), 1, 2, texts)
        print(f"RayPool(LocalModel(n_threads=2), workers=1) start + first call: {t_pool1:.1f} s")
        out1, sec1 = take_turns({"plain n_threads=2": scorer(plain2), "RayPool 1 worker x 2 threads": scorer(pool1)},
                                texts, args.round)
        pool1.close()
        pool2, t_pool2 = start_pool(ck.LocalModel(n_threads=1, cache=False), 2, 1, texts)
        print(f"RayPool(LocalModel(n_threads=1), workers=2) start + first call: {t_pool2:.1f} s")
        out2, sec2 = take_turns({"plain n_threads=2": scorer(plain2), "plain n_threads=1": scorer(plain1),
                                 "RayPool 2 workers x 1 thread": scorer(pool2)}, texts, args.round)
        answered = list(pool2.answered_by)
        pool2.close()
    finally:
        ray.shutdown()

    lp1 = {k: np.concatenate(v) for k, v in out1.items()}
    lp2 = {k: np.concatenate(v) for k, v in out2.items()}
    n = len(texts)
    print("\nphase 1")
    for k, s in sec1.items():
        print(f"  {k:32s} {s:7.2f} s   {n / s:6.1f} examples/s")
    print("phase 2")
    for k, s in sec2.items():
        print(f"  {k:32s} {s:7.2f} s   {n / s:6.1f} examples/s")
    print(f"  (examples answered per actor of the 2-worker pool, warm-up included: {answered})")

    r1 = sec1["RayPool 1 worker x 2 threads"] / sec1["plain n_threads=2"]
    r2 = sec2["RayPool 2 workers x 1 thread"] / sec2["plain n_threads=2"]
    r2_1 = sec2["RayPool 2 workers x 1 thread"] / sec2["plain n_threads=1"]
    same1 = bool(np.array_equal(lp1["RayPool 1 worker x 2 threads"], lp1["plain n_threads=2"]))
    same2 = bool(np.array_equal(lp2["RayPool 2 workers x 1 thread"], lp2["plain n_threads=1"]))
    threads = np.abs(lp2["plain n_threads=1"] - lp2["plain n_threads=2"]).max()
    print(f"\n1 worker (2 threads) / plain (2 threads) time:   {r1:.2f}x")
    print(f"2 workers (1 thread) / plain (2 threads) time:   {r2:.2f}x   (/ plain with 1 thread: {r2_1:.2f}x)")
    print(f"1-worker pool's scores equal plain n_threads=2: {same1}")
    print(f"2-worker pool's scores equal plain n_threads=1: {same2}")
    print(f"plain n_threads=1 vs n_threads=2, largest |difference|: {threads:.3g} nats"
          + ("  (llama.cpp's numbers do not depend on the thread count here)" if threads == 0 else ""))
    rows = [
        row(f"zero-shot SST-2 (n = {n}), RayPool 1 worker vs plain ck.score (2 threads each, 2 cores)",
            f"{r1:.2f}x the time ({n / sec1['RayPool 1 worker x 2 threads']:.1f} vs "
            f"{n / sec1['plain n_threads=2']:.1f} examples/s)", "", None),
        row(f"zero-shot SST-2 (n = {n}), RayPool 2 workers x 1 thread vs plain ck.score with 2 threads (2 cores)",
            f"{r2:.2f}x the time ({n / sec2['RayPool 2 workers x 1 thread']:.1f} vs "
            f"{n / sec2['plain n_threads=2']:.1f} examples/s; {r2_1:.2f}x plain with 1 thread)", "", None),
        row(f"zero-shot SST-2 (n = {n}), RayPool scores equal plain ck.score with the same n_threads",
            "identical" if same1 and same2 else f"DIFFER (1 worker: {same1}, 2 workers: {same2})",
            "identical", same1 and same2),
    ]
    print()
    for line in rows:
        print(line)


if __name__ == "__main__":
    main()
