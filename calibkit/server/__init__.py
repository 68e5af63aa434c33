"""``calibkit serve``: the ACS completions API, offline, over the embedded model or any GGUF.

Code written for the real API (its curl and Python examples, the openai package,
calibkit's own :class:`~calibkit.backends.Client`) runs against it unchanged:

    calibkit keys create --keys-file keys.json          # prints the key on its last line
    calibkit serve --model llama-8b --keys-file keys.json --port 8000
    export ACS_API_BASE=http://127.0.0.1:8000/v1 ACS_API_KEY=ck_...

Needs the ``serve`` extra (starlette, uvicorn) and, for the embedded model, ``local``.

>>> from calibkit.server import ServerConfig, create_app, load_models
>>> models = load_models(["llama-8b"])                       # doctest: +SKIP
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
