"""Execute the notebooks and store them with their outputs, as a reader sees them.

    .venv/bin/python notebooks/execute.py                      # all of them, at full size
    .venv/bin/python notebooks/execute.py quickstart.ipynb     # one

Each runs top to bottom on this interpreter (the venv's) from the notebooks folder, at
full size (``CALIBKIT_NOTEBOOK_N`` unset), with a fresh model cache (so the counts of
questions asked are a first run's) and without ``ACS_API_BASE``/``ACS_API_KEY`` (the API
notebook serves the embedded model itself). The notebook is written back only if every
cell ran; its metadata records a digest of the code it ran, which tests/test_notebooks.py
compares with the code it holds: a notebook edited and not executed again fails there.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ["quickstart.ipynb", "calibration_study.ipynb", "acs_api.ipynb", "study.ipynb"]


def code_digest(nb) -> str:
    """SHA-256 of the notebook's code cells' sources, in order."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode())
            h.update(b"\0")
    return h.hexdigest()


def kernel_manager():
    """A kernel on this interpreter, whatever python3 kernel is installed system-wide."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str):  # type: ignore[no-untyped-def]
            spec = super().get_kernel_spec(kernel_name)
            spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
            return spec

    return KernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())


def execute(nb, *, timeout: int = 900, **client_options):
    """Run ``nb`` in place from the notebooks folder; raises CellExecutionError naming a failing cell.

    The kernel is shut down at the end either way (``shutdown_kernel="graceful"``, nbclient's
    default: a shutdown request, then a kill if it lingers; ``"immediate"``: killed at once).
    """
    import nbclient

    options = {"timeout": timeout, "record_timing": False, **client_options}
    client = nbclient.NotebookClient(nb, km=kernel_manager(), resources={"metadata": {"path": str(HERE)}}, **options)
    client.execute(cleanup_kc=True)  # the kernel is shut down afterwards, also when a cell failed
    return nb


def main(names: list[str]) -> int:
    import nbformat

    os.environ.pop("CALIBKIT_NOTEBOOK_N", None)
    for var in ("ACS_API_BASE", "ACS_API_KEY", "MPLBACKEND"):
        os.environ.pop(var, None)
    for name in names or NOTEBOOKS:
        path = HERE / Path(name).name
        nb = nbformat.read(path, as_version=4)
        with tempfile.TemporaryDirectory() as cache:
            os.environ["CALIBKIT_CACHE_DIR"] = cache
            from calibkit.backends.llamacpp.gguf import default_model_path

            default_model_path()  # the model file goes to the cache folder too: put it there before the run
            started = time.monotonic()
            execute(nb)
        nb.metadata["calibkit"] = {"executed_code_sha256": code_digest(nb)}
        nbformat.write(nb, path)
        print(f"{path.name}: executed in {time.monotonic() - started:.0f} s and stored")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
