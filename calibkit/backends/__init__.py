"""The model half's seam: backends answer top-k and continuation questions (:mod:`.base`),
over HTTP (:class:`Client`) or in-process (:class:`LocalModel`)."""

from .base import Backend, Continuation, TopK
from .http import Client
from .llamacpp import LocalModel

__all__ = ["Backend", "Client", "Continuation", "LocalModel", "TopK"]
