"""Loading the served models and running the server (what ``calibkit serve`` calls).

Model specs, as ``--model`` takes them:

- ``llama-8b=path/to/model.gguf``: that file, served as "llama-8b";
- ``llama-8b``: the embedded default model (google/gemma-3-270m), served as "llama-8b",
  so that examples written for the ACS API run unchanged;
- ``path/to/model.gguf`` (an existing file): served under the file's stem;
- no spec at all: the embedded model under its own name, "google/gemma-3-270m".

Two backends serve them (``backend=``, ``calibkit serve --backend``): ``"local"`` (the
default), the embedded llama.cpp model over GGUF files; ``"hf"``, transformers (a
:class:`~calibkit.TransformersModel`), where PATH may be a checkpoint folder, a ``.gguf``
file (dequantized, converted once) or a hub name, and NAME alone serves the bundled
gemma-3-270m GGUF under transformers, in float32, and a checkpoint folder alone is served
under the folder's name.

Example
-------
>>> sorted(load_models(["llama-8b", "tiny=/models/tiny.gguf"]))   # doctest: +SKIP
['llama-8b', 'tiny']
>>> sorted(load_models(["gemma=google/gemma-3-270m"], backend="hf", device="cpu"))   # doctest: +SKIP
['gemma']
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

__all__ = ["BACKENDS", "load_models", "parse_model_spec", "serve"]

#: The backends ``calibkit serve --backend`` takes, and what each is.
BACKENDS = {
    "local": "llama.cpp, as for the embedded model (PATH: a .gguf file)",
    "hf": "transformers, pip install 'calibkit[hf]' (PATH: a checkpoint folder, a .gguf file or a hub name)",
}

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
    specs: Sequence[str] = (), *, n_ctx: int = 2048, n_threads: int | None = None, backend: str = "local",
    device: str | None = None,
) -> dict[str, LocalCompletions]:
    """Served name -> :class:`~calibkit.server.completions.LocalCompletions` for each spec;
    one model per distinct file (or folder, or hub name), however many names serve it.
    Loads them now.

    ``backend``: ``"local"``, the embedded llama.cpp model (a LocalModel, one llama.cpp
    context each), or ``"hf"``, transformers (a TransformersModel on ``device``: "auto",
    the default, is CUDA where there is a GPU, else the CPU; ``n_threads`` sets torch's
    CPU threads). ``n_ctx``: the context in tokens (for hf, at most the model's positions).
    """
    from .completions import LocalCompletions

    check_backend(backend, device)
    pairs = [parse_model_spec(s) for s in specs]
    if backend == "hf":  # a checkpoint folder alone: served under its folder's name
        pairs = [(Path(n).expanduser().resolve().name, n) if p is None and Path(n).expanduser().is_dir() else (n, p)
                 for n, p in pairs]
    if not pairs:
        from ..backends.llamacpp.gguf import DEFAULT_MODEL_NAME

        pairs = [(DEFAULT_MODEL_NAME, None)]
    names = [n for n, _ in pairs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"--model names must be unique; {', '.join(dupes)} given twice")
    by_path: dict[str | None, LocalCompletions] = {}
    out: dict[str, LocalCompletions] = {}
    for name, path in pairs:
        key = None if path is None else _source_key(path) if backend == "hf" else str(Path(path).expanduser().resolve())
        if key not in by_path:
            if backend == "hf":
                by_path[key] = _hf_model(key, n_ctx=n_ctx, n_threads=n_threads, device=device or "auto")
            else:
                from ..backends.llamacpp import LocalModel

                # cache=False: a server must not replay a cached draw as a fresh sample.
                model = LocalModel(key, n_ctx=n_ctx, n_threads=n_threads, cache=False)
                model.n_vocab  # load the weights now, not on the first request
                by_path[key] = LocalCompletions(model)
        out[name] = by_path[key]
    return out


def check_backend(backend: str, device: str | None = None) -> None:
    """Raise ValueError, naming the flag and the fix, for an unknown backend or a flag it does not take."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}: "
                         + "; ".join(f"{k}: {v}" for k, v in BACKENDS.items()))
    if device is not None and backend != "hf":
        raise ValueError(f"--device is for --backend hf (transformers); the {backend} backend runs on the CPU "
                         "llama.cpp was built for: drop --device, or add --backend hf")


def _source_key(path: str) -> str:
    """A path made absolute where it exists (or looks like one); a hub name as it is."""
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() or path.endswith(".gguf") or path.startswith((".", "/", "~")) else path


def _hf_model(source: str | None, *, n_ctx: int, n_threads: int | None, device: str) -> LocalCompletions:
    """A TransformersModel, loaded now, behind LocalCompletions."""
    from .completions import LocalCompletions

    try:
        from ..backends.transformers import TransformersModel
        from ..backends.transformers.checkpoint import import_torch_transformers

        torch, _ = import_torch_transformers()
    except ImportError as e:
        raise ImportError(f"--backend hf needs torch and transformers: pip install 'calibkit[hf]' ({e})") from None
    if n_threads:
        torch.set_num_threads(int(n_threads))
    try:
        torch.device(device if device != "auto" else "cpu")
    except RuntimeError as e:
        raise ValueError(f"--device {device!r} is not a torch device ({e}); give auto, cpu, cuda or cuda:N") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA GPU here; use --device cpu (or auto)")
    # cache=False: a server must not replay a cached draw as a fresh sample.
    model = TransformersModel(source, device=device, cache=False)
    served = LocalCompletions(model, n_ctx=n_ctx)
    try:
        served.engine  # load the weights now, not on the first request
    except OSError as e:
        # a hub name neither cached nor reachable, an unreadable checkpoint: one line naming the flags
        raise ValueError(f"--backend hf --model {source or 'NAME'}: {e}") from None
    return served


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
    backend: str = "local",
    device: str | None = None,
) -> None:
    """Run the server until interrupted; print the base URL once it listens (port 0: any free port).

    Authentication: with ``keys_file`` exactly its keys are accepted. Without one the
    server is open, with a warning, and only on a loopback host (127.0.0.1, localhost,
    ::1); any other host needs a keys file, or ``no_auth=True`` to say you mean it.

    ``models``: served name -> backend, or --model specs (see :func:`load_models`),
    loaded after the arguments are checked, with ``backend`` (``"local"``: the embedded
    llama.cpp model; ``"hf"``: transformers, on ``device``).

    >>> serve(["llama-8b"], port=8000, keys_file="keys.json")   # doctest: +SKIP
    """
    try:
        import uvicorn

        from .app import create_app
        from .protocol import uvicorn_config
    except ImportError as e:
        raise ImportError("calibkit serve needs starlette and uvicorn: pip install 'calibkit[serve]'") from e
    check_backend(backend, device)
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
        models = load_models(list(models), n_ctx=n_ctx, n_threads=n_threads, backend=backend, device=device)
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
