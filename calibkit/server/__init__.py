"""``calibkit serve``: the ACS completions API, offline, over the embedded model, any GGUF, or any transformers model.

Code written for the real API (its curl and Python examples, the openai package,
calibkit's own :class:`~calibkit.backends.Client`) runs against it unchanged:

    calibkit keys create --keys-file keys.json          # prints the key on its last line
    calibkit serve --model llama-8b --keys-file keys.json --port 8000
    export ACS_API_BASE=http://127.0.0.1:8000/v1 ACS_API_KEY=ck_...

Two backends serve the same protocol (echo with per-token logprobs, top-k, prompt
logprobs, seeded sampling, ``n``/``best_of``, stop, usage, cancellation):

- ``--backend local`` (the default): the embedded llama.cpp model, over GGUF files;
- ``--backend hf``: transformers (a :class:`~calibkit.TransformersModel`), over a
  checkpoint folder, a GGUF file (dequantized, converted once) or a hub name, on
  ``--device`` (auto: CUDA where there is a GPU, else the CPU); ``--model NAME`` alone
  serves the bundled gemma-3-270m under transformers, in float32:

    calibkit serve --backend hf --model gemma=google/gemma-3-270m --device cuda

Needs the ``serve`` extra (starlette, uvicorn) and, for the embedded model, ``local``;
for ``--backend hf``, ``hf`` (torch, transformers).

>>> from calibkit.server import ServerConfig, create_app, load_models
>>> models = load_models(["llama-8b"])                       # doctest: +SKIP
>>> models = load_models(["gemma"], backend="hf")           # doctest: +SKIP
>>> app = create_app(models, keys="keys.json", config=ServerConfig(max_tokens_limit=64))  # doctest: +SKIP
"""

from __future__ import annotations

from .engine import QueueFull, Worker
from .keys import KeyFile, KeyFileError, create_key, list_keys, revoke_key

__all__ = [
    "KeyFile",
    "KeyFileError",
    "QueueFull",
    "ServerConfig",
    "Worker",
    "create_app",
    "create_key",
    "list_keys",
    "load_models",
    "revoke_key",
    "serve",
]


def __getattr__(name: str):  # the HTTP stack is imported only when an app is made
    if name == "ServerConfig":
        from .config import ServerConfig

        return ServerConfig
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("load_models", "serve"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module 'calibkit.server' has no attribute {name!r}")
