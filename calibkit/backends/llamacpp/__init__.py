"""The embedded backend: a GGUF model run in-process by llama.cpp (gguf, engine, sampler, backend)."""

from .backend import LocalModel
from .gguf import DEFAULT_MODEL_NAME, default_model_path

__all__ = ["DEFAULT_MODEL_NAME", "LocalModel", "default_model_path"]
