"""Backends answer completions requests: over HTTP (:class:`Client`) or in-process (:class:`LocalModel`)."""

from .base import Backend
from .http import Client
from .llamacpp import LocalModel

__all__ = ["Backend", "Client", "LocalModel"]
