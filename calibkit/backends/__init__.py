"""The model half's seam: backends answer top-k and continuation questions (:mod:`.base`),
over HTTP (:class:`Client`) or in-process (:class:`LocalModel`).

Client and LocalModel load on first use, so that a module needing only :mod:`.base`
(the server's settings, the command line's help) does not import httpx or llama.cpp.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Backend, Continuation, TopK

__all__ = ["Backend", "Client", "Continuation", "LocalModel", "TopK"]

_LAZY = {"Client": ".http", "LocalModel": ".llamacpp"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
