"""A model by the names a study or the command line gives it: a completions API, the
embedded llama.cpp model, a transformers checkpoint, any of them on Ray actors.

>>> open_backend(api_base="http://127.0.0.1:9", model="m", cache=False).model_name
'm'
>>> open_backend(timeout=5)
Traceback (most recent call last):
...
ValueError: timeout= sets how calibkit waits on a completions API; give api_base= too (the embedded model answers in-process)
"""

from __future__ import annotations

import math
import os
from typing import Any

from ..progress import say
from .base import Backend

__all__ = ["check_k", "check_options", "open_backend"]


def open_backend(
    model: str | None = None,
    *,
    api_base: str | None = None,
    api_key: str | None = None,
    backend: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    timeout: float | None = None,
    max_in_flight: int | None = None,
    workers: int | None = None,
    ray: str | None = None,
    cache: Any = None,
) -> Backend:
    """The model ``model`` names, where it runs.

    With ``api_base``: a :class:`~calibkit.Client` of that completions API (``api_key``,
    default ``$ACS_API_KEY``; ``timeout`` and ``max_in_flight`` pace it). Else in-process:
    ``backend="local"`` (the default) the embedded llama.cpp model or a GGUF path
    (``threads``), ``backend="hf"`` a transformers checkpoint (``device``, ``dtype``).
    ``workers`` or ``ray`` score on Ray actors (:class:`~calibkit.RayPool`), each holding
    its own copy, the answers cached here. ``cache``: as the backends take it (False: none).
    """
    check_options(api_base=api_base, backend=backend, device=device, dtype=dtype, threads=threads, timeout=timeout,
                  max_in_flight=max_in_flight, workers=workers)
    pooled = workers is not None or ray is not None
    if pooled:
        workers = workers or 2
    # Pooled, each actor holds the backend without a cache: the answers come back to the
    # pool, whose cache (this machine's) keeps them.
    own_cache = False if pooled else cache
    made: Backend
    if api_base:
        from .http import Client

        pacing = {k: v for k, v in (("timeout", timeout), ("max_in_flight", max_in_flight)) if v is not None}
        made = Client(api_base, api_key or os.environ.get("ACS_API_KEY"), model=model, cache=own_cache, **pacing)
    elif backend == "hf":
        from .transformers import TransformersModel

        say("loading the model with transformers ...")
        made = TransformersModel(model, device=device or "auto", dtype=dtype, cache=own_cache)
    else:
        from .llamacpp import LocalModel

        if threads is None and pooled and ray is None:  # one machine's cores, shared out
            threads = max(1, (os.cpu_count() or 1) // (workers or 1))
        say("loading the embedded model ...")
        made = LocalModel(model, n_threads=threads, cache=own_cache)
    if not pooled:
        return made
    from .ray_pool import RayPool

    say(f"starting {workers} Ray actors" + (f" on {ray}" if ray else " on this machine") + " ...")
    gpus = 1 if backend == "hf" and (device or "").startswith("cuda") else 0
    cpus = getattr(made, "n_threads", 1) if not api_base and backend != "hf" else 1  # Ray places no more than fit
    return RayPool(made, workers=workers, address=ray, num_cpus=cpus, num_gpus=gpus, cache=cache)


def check_options(*, api_base: str | None = None, backend: str | None = None, device: str | None = None,
                  dtype: str | None = None, threads: int | None = None, timeout: float | None = None,
                  max_in_flight: int | None = None, workers: int | None = None, **_: Any) -> None:
    """:func:`open_backend`'s options checked, before anything is loaded (others are ignored)."""
    api_only = [f"{name}=" for name, v in (("timeout", timeout), ("max_in_flight", max_in_flight)) if v is not None]
    if api_only and not api_base:
        raise ValueError(f"{' and '.join(api_only)} set{'s' if len(api_only) == 1 else ''} how calibkit waits on a "
                         "completions API; give api_base= too (the embedded model answers in-process)")
    if backend not in (None, "local", "hf"):
        raise ValueError(f"backend= must be 'local' (llama.cpp over a GGUF) or 'hf' (transformers), not {backend!r}")
    if api_base and backend is not None:
        raise ValueError(f"api_base= and backend={backend} name two models; give api_base= for a completions API, "
                         "or backend= for a model in-process")
    hf_only = [f"{name}=" for name, v in (("device", device), ("dtype", dtype)) if v is not None]
    if hf_only and backend != "hf":
        raise ValueError(f"{' and '.join(hf_only)} set how transformers runs the model; give backend=hf too")
    if threads is not None and (api_base or backend == "hf"):
        raise ValueError("threads= sets the embedded llama.cpp model's CPU threads; drop it, or use backend=local")
    if threads is not None and threads < 1:
        raise ValueError(f"threads= must be at least 1 (got {threads})")
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout= must be a positive number of seconds (got {timeout})")
    if max_in_flight is not None and max_in_flight < 1:
        raise ValueError(f"max_in_flight= must be at least 1 (got {max_in_flight})")
    if workers is not None and workers < 1:
        raise ValueError(f"workers= must be at least 1 (got {workers})")


def check_k(backend: Backend | None, k: int | None) -> None:
    """A top-k size ``k`` checked: at least 1 and, given the backend, within its cap (a
    completions API's; ACS: 20). Call it with None before the model is open."""
    if k is not None and k < 1:
        raise ValueError(f"k= must be at least 1 (got {k})")
    cap = getattr(backend, "logprobs_cap", None)
    if k is not None and cap is not None and k > cap:
        raise ValueError(f"k= must be at most {cap}, the top-k cap of {backend.model_name}'s endpoint (got {k})")
