"""The model half's seam: backends answer top-k and continuation questions (:mod:`.base`;
:class:`VocabularyBackend` also the whole-vocabulary question of the label-word search),
over HTTP (:class:`Client`), in-process (:class:`LocalModel` over llama.cpp,
:class:`TransformersModel` over transformers), or spread over a Ray cluster (:class:`RayPool`).

They load on first use, so that a module needing only :mod:`.base` (the server's
settings, the command line's help) imports none of httpx, llama.cpp, torch or Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Backend, Continuation, TopK, VocabularyBackend

__all__ = ["Backend", "Client", "Continuation", "LocalModel", "RayPool", "TopK", "TransformersModel",
           "VocabularyBackend"]

_LAZY = {"Client": ".http", "LocalModel": ".llamacpp", "RayPool": ".ray_pool", "TransformersModel": ".transformers"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
