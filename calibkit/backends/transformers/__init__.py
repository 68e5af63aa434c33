"""The Hugging Face backend: a causal language model run in-process by transformers (checkpoint, engine, backend)."""

from .backend import TransformersModel
from .checkpoint import converted_gguf_folder

__all__ = ["TransformersModel", "converted_gguf_folder"]
