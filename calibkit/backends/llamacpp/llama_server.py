"""llama-cpp-python's own server, its models loaded as calibkit's engine loads them.

``python -m calibkit.backends.llamacpp.llama_server ARGS`` is ``python -m llama_cpp.server
ARGS`` within :func:`~calibkit.backends.llamacpp.engine.loads_as_the_engine`: the same
weight layout as the embedded model's (so the same arithmetic where the other settings
agree; no repacking, so no crash where llama.cpp's AMX kernels are built in). The tests
and benchmarks compare calibkit with it as a reference server.
"""

from __future__ import annotations

import runpy
import sys

from .engine import loads_as_the_engine


def main(argv: list[str] | None = None) -> None:
    sys.argv = ["llama_cpp.server", *(sys.argv[1:] if argv is None else argv)]
    with loads_as_the_engine():
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
