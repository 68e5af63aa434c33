"""Where a transformers checkpoint comes from: a folder, a hub name, or a GGUF converted once and kept.

transformers dequantizes a GGUF on every load (a minute or two on two cores for the
bundled gemma-3-270m); the converted float32 checkpoint is saved once in calibkit's
cache folder (:func:`converted_gguf_folder`) and later loads take seconds. A hub name
that can be neither found in the local hub cache nor downloaded fails at once, in one
line, rather than after the hub client's minute of retries.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

from ...cache import default_cache_path
from ...progress import say

__all__ = ["check_hub_reachable", "checkpoint_source", "conversion_message", "converted_gguf_folder", "hub_error",
           "import_torch_transformers", "keep_converted", "one_gguf_reader", "step"]


def import_torch_transformers() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ImportError(
            "TransformersModel needs torch and transformers: pip install 'calibkit[hf]' "
            f"(missing: {e.name})"
        ) from None
    return torch, transformers


def converted_gguf_folder(gguf: str | os.PathLike[str]) -> Path:
    """Where the float32 checkpoint converted from ``gguf`` is kept (calibkit's cache folder).

    transformers dequantizes a GGUF on every load (a minute or two on two cores); the
    converted checkpoint, saved once, loads in seconds. The folder's name carries the
    file's name, size and the transformers version that converted it.

    >>> converted_gguf_folder("/m/tiny.gguf").parent.name                   # doctest: +SKIP
    'transformers'
    """
    _, transformers = import_torch_transformers()
    p = Path(gguf).expanduser().resolve()
    tag = hashlib.blake2b(f"{p.stat().st_size}:{transformers.__version__}".encode(), digest_size=6).hexdigest()
    return default_cache_path().parent / "models" / "transformers" / f"{p.stem}-{tag}"


def checkpoint_source(source: str) -> tuple[str, str | None]:
    """(folder or hub name, GGUF file name in it or None); a GGUF already converted loads from its folder."""
    p = Path(source).expanduser()
    if p.is_file():
        if p.suffix != ".gguf":
            raise ValueError(f"{source!r} is a file but not a .gguf; give a checkpoint folder, a .gguf file or a hub name")
        done = converted_gguf_folder(p)
        if (done / ".converted").is_file():
            return str(done), None
        return str(p.parent.resolve()), p.name
    if p.is_dir():
        return str(p.resolve()), None
    return source, None


def conversion_message(gguf: str | os.PathLike[str], target: str | os.PathLike[str], size: int | None = None) -> str:
    """The step said before a GGUF is converted: what is done, about how long it takes, and that it is done once.

    ``size`` is the file's size in bytes (None: read from the file). The time is a rough
    rule, half a minute for each 250 MB (the bundled gemma-3-270m, 253 MB, took 27 to 35 s on
    two cores).

    >>> print(conversion_message("/m/gemma.gguf", "/c/models/transformers/gemma-1a2b", size=253_000_000))
    converting gemma.gguf for transformers: reading and dequantizing the GGUF to float32 takes about
    30 seconds, once; the converted checkpoint is kept in /c/models/transformers/gemma-1a2b, from which
    later loads take seconds
    >>> conversion_message("/m/big.gguf", "/c", size=5_000_000_000).split(" takes ")[1][:22]
    'about 10 minutes, once'
    """
    p = Path(gguf)
    size = p.stat().st_size if size is None else size
    seconds = max(10, round(30 * size / 250e6, -1))
    took = f"{seconds:.0f} seconds" if seconds < 90 else f"{round(seconds / 60)} minutes"
    return (f"converting {p.name} for transformers: reading and dequantizing the GGUF to float32 takes about "
            f"{took}, once; the converted checkpoint is kept in {target}, from which later loads take seconds")


def step(message: str) -> None:
    """:func:`calibkit.progress.say` a step, with any progress bar on the terminal cleared
    while the line is written and drawn again after it (a bar already shown, such as
    scoring's ``0/N`` while the model loads, would otherwise run into the line)."""
    from tqdm import tqdm

    with tqdm.external_write_mode(file=sys.stderr):
        say(message)


def hub_error(name: str, why: str) -> FileNotFoundError:
    """The one-line error for a model that is neither on this machine nor to be had from the hub."""
    return FileNotFoundError(
        f"could not load {name!r}: it is not a local folder or .gguf file, and the Hugging Face hub cannot give "
        f"it ({why}); offline, pass the path of a checkpoint folder or a .gguf file"
    )


def check_hub_reachable(name: str) -> None:
    """Fail at once, in one line, where a hub name is neither cached nor downloadable (the hub's
    own client retries for most of a minute before it gives up)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return
    except ValueError as e:  # huggingface_hub's HFValidationError
        raise hub_error(name, f"not a hub name either: {e}") from None
    if constants.HF_HUB_OFFLINE:
        raise hub_error(name, "HF_HUB_OFFLINE is set and it is not in the local hub cache")
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as e:
        raise hub_error(name, f"{host} cannot be resolved: {e.strerror or e}; no network?") from None


def keep_converted(model: Any, tokenizer: Any, gguf: Path) -> None:
    """Save a model dequantized from ``gguf`` to :func:`converted_gguf_folder`, atomically."""
    target = converted_gguf_folder(gguf)
    step(f"saving the converted checkpoint to {target} ...")
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    # transformers refuses to save a model that says it is GGUF-quantized; its weights are
    # plain dequantized tensors, so drop the marker and save them as they are.
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    quantizer = getattr(model, "hf_quantizer", None)
    original = model.config
    try:
        model.config, model.hf_quantizer = config, None
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    except OSError as e:  # no room: loading still works, only the next load is slow again
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"calibkit: could not keep the converted checkpoint in {target} ({e}); the next load converts again",
              file=sys.stderr)
        return
    finally:
        model.config, model.hf_quantizer = original, quantizer
    (tmp / ".converted").write_text(gguf.name + "\n")
    try:
        tmp.rename(target)
    except OSError:  # another process kept it first
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def one_gguf_reader() -> Iterator[None]:
    """Within it, transformers' reads of one GGUF share one ``gguf.GGUFReader``.

    transformers opens a GGUF three times in one load (the tokenizer, the config, the
    weights), and each ``GGUFReader`` parses every metadata array again, one memmap read
    per element: for gemma-3's 262,144-token vocabulary about ten seconds a time on two
    cores. The reader only maps the file (read-only), so one serves all three; its
    ``load_gguf_checkpoint`` looks the class up on the ``gguf`` module at each call, which
    is where this puts a memo for the duration.
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original
