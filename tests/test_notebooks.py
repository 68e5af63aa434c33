"""The notebooks run from top to bottom on small subsets, and their outputs hold the diagrams."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat, nbclient and ipykernel (dev extra)")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need nbclient (dev extra)")
pytest.importorskip("ipykernel", reason="the notebook tests need ipykernel (dev extra)")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (installed with nbclient)
from jupyter_client.manager import KernelManager  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["quickstart.ipynb", "calibration_study.ipynb", "acs_api.ipynb"]

pytestmark = pytest.mark.model


class _ThisPython(KernelSpecManager):
    """Kernels run on the interpreter running the tests (the venv's), whatever is installed system-wide."""

    def get_kernel_spec(self, kernel_name: str):  # type: ignore[no-untyped-def]
        spec = super().get_kernel_spec(kernel_name)
        spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        return spec


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs before committing"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_draws(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALIBKIT_NOTEBOOK_N", "30")
    monkeypatch.setenv("CALIBKIT_CACHE_DIR", str(tmp_path / "cache"))  # a fresh cache: nothing is replayed
    for var in ("ACS_API_BASE", "ACS_API_KEY"):  # the API notebook uses its own local server
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # calibkit's CLI, run in-process by other tests, sets Agg
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=_ThisPython())
    client = nbclient.NotebookClient(nb, km=km, timeout=240, resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} drew no diagram"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "Traceback" not in text
    if name == "acs_api.ipynb":
        assert "InvalidRequestError: logprobs must be an integer" in text
