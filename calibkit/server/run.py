"""Loading the served models and running the server (what ``calibkit serve`` calls).

Model specs, as ``--model`` takes them:

- ``llama-8b=path/to/model.gguf``: that file, served as "llama-8b";
- ``llama-8b``: the embedded default model (google/gemma-3-270m), served as "llama-8b",
  so that examples written for the ACS API run unchanged;
- ``path/to/model.gguf`` (an existing file): served under the file's stem;
- no spec at all: the embedded model under its own name, "google/gemma-3-270m".

Example
-------
>>> sorted(load_models(["llama-8b", "tiny=/models/tiny.gguf"]))   # doctest: +SKIP
['llama-8b', 'tiny']
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from .completions import LocalCompletions

__all__ = ["load_models", "parse_model_spec", "serve"]

log = logging.getLogger("calibkit.server")

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """(served name, GGUF path or None for the embedded model) from one --model value.

    >>> parse_model_spec("llama-8b=/m/llama.gguf")
    ('llama-8b', '/m/llama.gguf')
    >>> parse_model_spec("llama-8b")
    ('llama-8b', None)
    """
    name, sep, path = spec.partition("=")
    name, path = name.strip(), path.strip()
    if sep:
        if not name or not path:
            raise ValueError(f"--model {spec!r}: write NAME=PATH.gguf, or NAME alone for the embedded model")
        return name, path
    if not name:
        raise ValueError("--model needs a name (NAME, or NAME=PATH.gguf)")
    if name.endswith(".gguf") and Path(name).expanduser().is_file():
        return Path(name).stem, name
    return name, None


def load_models(
    specs: Sequence[str] = (), *, n_ctx: int = 2048, n_threads: int | None = None
) -> dict[str, LocalCompletions]:
    """Served name -> :class:`~calibkit.server.completions.LocalCompletions` for each spec;
    one LocalModel (and one llama.cpp context) per distinct file, however many names
    serve it. Loads them now."""
    from ..backends.llamacpp import DEFAULT_MODEL_NAME, LocalModel
    from .completions import LocalCompletions

    pairs = [parse_model_spec(s) for s in specs] or [(DEFAULT_MODEL_NAME, None)]
    names = [n for n, _ in pairs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"--model names must be unique; {', '.join(dupes)} given twice")
    by_path: dict[str | None, LocalCompletions] = {}
    out: dict[str, LocalCompletions] = {}
    for name, path in pairs:
        key = None if path is None else str(Path(path).expanduser().resolve())
        if key not in by_path:
            # cache=False: a server must not replay a cached draw as a fresh sample.
            model = LocalModel(key, n_ctx=n_ctx, n_threads=n_threads, cache=False)
            model.n_vocab  # load the weights now, not on the first request
            by_path[key] = LocalCompletions(model)
        out[name] = by_path[key]
    return out


def serve(
    models: Mapping[str, Any] | Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    keys_file: str | os.PathLike[str] | None = None,
    no_auth: bool = False,
    config: Any = None,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    log_level: str = "info",
) -> None:
    """Run the server until interrupted; print the base URL once it listens (port 0: any free port).

    Authentication: with ``keys_file`` exactly its keys are accepted. Without one the
    server is open, with a warning, and only on a loopback host (127.0.0.1, localhost,
    ::1); any other host needs a keys file, or ``no_auth=True`` to say you mean it.

    ``models``: served name -> backend, or --model specs (see :func:`load_models`),
    loaded after the arguments are checked.

    >>> serve(["llama-8b"], port=8000, keys_file="keys.json")   # doctest: +SKIP
    """
    try:
        import uvicorn

        from .app import create_app
        from .protocol import uvicorn_config
    except ImportError as e:
        raise ImportError("calibkit serve needs starlette and uvicorn: pip install 'calibkit[serve]'") from e
    if keys_file is not None and no_auth:
        raise ValueError("--keys-file and --no-auth contradict each other; give one")
    if keys_file is None and not no_auth and host not in _LOOPBACK:
        raise ValueError(
            f"refusing to serve {host} without authentication: give --keys-file PATH "
            "(make keys with: calibkit keys create --keys-file PATH), or --no-auth if you mean it"
        )
    if keys_file is not None:
        from .keys import KeyFile

        keys_file = KeyFile(keys_file)  # a missing or broken file fails now, before the model loads
    # Take the port before loading the model (a clash fails at once), listen once ready.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port} ({e.strerror}); is a server there already? "
                         "pick another --port, or --port 0 for any free one") from None
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s: %(message)s")
    if not isinstance(models, Mapping):
        models = load_models(list(models), n_ctx=n_ctx, n_threads=n_threads)
    if keys_file is None:
        log.warning("no --keys-file: serving WITHOUT authentication (any API key, or none, is accepted)")
    app = create_app(models, keys=keys_file, config=config)
    sock.listen(128)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"calibkit serve: {', '.join(models)} on http://{shown}:{bound}/v1", flush=True)
    # JSON 400s for malformed HTTP, and no query strings (where keys may hide) in the access log.
    config_ = uvicorn_config(app, log_level=log_level, lifespan="on")
    server = uvicorn.Server(config_)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
