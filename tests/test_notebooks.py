"""The notebooks, as stored and as run.

- Stored executed, as a reader sees them on GitHub: every code cell has run, in order,
  without errors or progress bars, the diagrams are embedded, the outputs come from the
  code the notebook holds (notebooks/execute.py records its digest: a notebook edited and
  not executed again fails), and the lines that matter are there.
- They read well: ECE is defined (its bins, reduction and norm) where it first appears,
  and each notebook ends with what it found.
- Run again from top to bottom on small subsets (``CALIBKIT_NOTEBOOK_N=30``, a fresh cache):
  no errors, a diagram, the same lines, and each table's ECE is the ECE its reliability
  diagram prints.
- The API notebook's ``calibkit serve`` is gone after a run that fails, whether the kernel
  is shut down or killed; the study says so when SST-2 is absent.

Re-store the notebooks with ``.venv/bin/python notebooks/execute.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat, nbclient and ipykernel (dev extra)")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need nbclient (dev extra)")
pytest.importorskip("ipykernel", reason="the notebook tests need ipykernel (dev extra)")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["quickstart.ipynb", "calibration_study.ipynb", "acs_api.ipynb", "study.ipynb"]

_spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOKS / "execute.py")
execute_py = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute_py)

#: Per notebook, lines its outputs hold, stored or re-run (regular expressions).
KEY_LINES = {
    "quickstart.ipynb": [
        r"accuracy \d\.\d{3}",
        r"median label mass 0\.\d{4}",
        r"\d+ examples to calibrate on, \d+ to test on",
        r"contextual\+temperature: accuracy \d\.\d\d, NLL \d\.\d{3}, ECE \d\.\d{3}",
        r"Lowest ECE: [\w+]+\.",
    ],
    "calibration_study.ipynb": [
        r"Data: (SST-2 dev, read from \S+dev\.txt\.|SST-2 is not here .*the bundled `sentiment` set stands in)",
        r"\d+ to calibrate on, \d+ to test on; median label mass 0\.\d{4}",
        r"contextual +accuracy \d\.\d{3} \(Δ interval (in|ex)cludes 0\)",
        r"Lowest NLL: \w+; lowest ECE: \w+\.",
    ],
    "acs_api.ipynb": [
        r"LocalServer\(http://127\.0\.0\.1:\d+/v1, pid \d+, running\)",
        r"InvalidRequestError: logprobs must be an integer",
        r"\d+ examples: accuracy \d\.\d{3}; \d+ questions asked",
        r"through the API vs in-process: \d+ exact label log-probabilities differ by at most \S+ nats; "
        r"the \d+ censored ones are all upper bounds",
        r"LocalServer\(http://127\.0\.0\.1:\d+/v1, pid \d+, stopped",
    ],
    "study.ipynb": [
        r"^\d+ examples to choose label words on, \d+ for the study",
        r"^found: Verbalizer\(\{'World': \[' \w+'\]",
        r"^\d+ to calibrate on, \d+ held out; baseline: t1 · given · gemma-3-270m · uncalibrated",
        r"^lac: coverage \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\], mean set size \d\.\d\d",
        r"^target 0\.10: (threshold \d\.\d{3} answers \d+% of the test half|no threshold passed)",
        r"^AURC by confidence \d\.\d{4}, by label mass \d\.\d{4}",
        r"^Lowest NLL: t\d · \w+ · gemma-3-270m · [\w+]+: accuracy \d\.\d{3}, NLL \d\.\d{3} \(Δ interval (in|ex)cludes 0\)\.",
    ],
}
#: What the stored notebooks show at full size.
FULL_SIZE = {
    "quickstart.ipynb": r"^300 examples;",
    "calibration_study.ipynb": r"^150 to calibrate on, 150 to test on",
    "acs_api.ipynb": r"^100 examples: accuracy",
    "study.ipynb": r"^160 examples to choose label words on, 240 for the study",
}
PROGRESS_BAR = re.compile(r"\d+%\|[^|]*\|\s*\d+/\d+|\b(it|ex|form|prompt)/s\]")


def _read(name: str):
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def _output_text(nb) -> str:
    """What a reader sees as text: streams, and the plain text of results and errors."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for o in cell.outputs:
            if o.output_type == "stream":
                parts.append(o.text)
            elif o.output_type in ("execute_result", "display_data"):
                parts.append(o.get("data", {}).get("text/plain", ""))
            elif o.output_type == "error":
                parts.append(f"{o.ename}: {o.evalue}")
    return "\n".join(parts)


def _check_outputs(name: str, nb) -> str:
    """The checks a stored and a re-run notebook share; returns the output text."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, f"{name}: error outputs {errors}"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} shows no diagram"
    text = _output_text(nb)
    assert "Traceback" not in text
    bars = PROGRESS_BAR.findall(text)
    assert not bars, f"{name}: progress bars in the outputs: {bars[:3]}"
    for pattern in KEY_LINES[name]:
        assert re.search(pattern, text, re.MULTILINE), f"{name}: no output line matches {pattern!r}"
    return text


# -- the stored notebooks ------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_is_executed(name: str) -> None:
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{name}: execution counts {counts}; store it executed from top to bottom: "
        f".venv/bin/python notebooks/execute.py {name}")
    silent = [i for i, c in enumerate(code) if not c.outputs and not c.source.rstrip().endswith(";")]
    # A cell may print nothing (an assignment), but most show something.
    assert len(silent) <= len(code) // 2, f"{name}: code cells {silent} have no outputs"
    text = _check_outputs(name, nb)
    assert re.search(FULL_SIZE[name], text, re.MULTILINE), f"{name} is not stored at full size"
    recorded = nb.metadata.get("calibkit", {}).get("executed_code_sha256")
    assert recorded == execute_py.code_digest(nb), (
        f"{name}: its code changed since its outputs were made; run .venv/bin/python notebooks/execute.py {name}")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_defines_ece_where_it_first_appears_and_ends_with_findings(name: str) -> None:
    nb = _read(name)
    for cell in nb.cells:
        seen = cell.source if cell.cell_type == "markdown" else cell.source + _output_text(
            nbformat.v4.new_notebook(cells=[cell]))
        if re.search(r"\bECE\b", seen):
            assert cell.cell_type == "markdown", f"{name}: ECE appears in a code cell before it is defined"
            for words in ("15 equal-width", "top-label", "L1"):
                assert words in cell.source, f"{name}: the first mention of ECE does not say {words!r}"
            break
    else:
        pytest.fail(f"{name} never mentions ECE")
    headings = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## What we found")]
    assert headings, f"{name} has no 'What we found' section"
    assert nb.cells[-1].cell_type == "markdown" and len(nb.cells[-1].source.split()) > 40, (
        f"{name} does not end with what it found, in words")


# -- run again, on small subsets -----------------------------------------------------------------
_ECE_CHECK = '''
import json as _json, re as _re
# a panel's title is its row's name, wrapped over lines, marked ⚠ when the row is flagged
_plot = {" ".join(ax.get_title().split()).removesuffix(" ⚠"):
         float(_re.search(r"ECE (\\d+\\.\\d+)", t.get_text()).group(1))
         for ax in fig.axes for t in ax.texts if t.get_text().startswith("ECE")}
_table = {str(k): float(str(v).split()[0]) for k, v in table["ECE"].items()}
print("ECE CHECK " + _json.dumps({"plot": _plot, "table": _table}))
'''


@pytest.fixture
def notebook_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _models_folder: Path) -> Path:
    monkeypatch.setenv("CALIBKIT_NOTEBOOK_N", "30")
    monkeypatch.setenv("CALIBKIT_CACHE_DIR", str(tmp_path / "cache"))  # a fresh cache: nothing is replayed
    # ... but the session's models folder (conftest.py): the GGUF is assembled once, not per notebook
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(_models_folder, target_is_directory=True)
    for var in ("ACS_API_BASE", "ACS_API_KEY", "CALIBKIT_SST2_DEV"):  # the API notebook uses its own server
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # calibkit's CLI, run in-process by other tests, sets Agg
    return tmp_path


@pytest.mark.model
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_its_tables_and_diagrams_agree(name: str, notebook_env: Path) -> None:
    nb = _read(name)
    nb.cells.append(nbformat.v4.new_code_cell(_ECE_CHECK))
    execute_py.execute(nb, timeout=300)  # raises CellExecutionError, naming the cell, if any cell fails
    text = _check_outputs(name, nb)
    check = json.loads(re.search(r"^ECE CHECK (.*)$", text, re.MULTILINE).group(1))
    assert check["plot"] and set(check["plot"]) == set(check["table"]), check
    for panel, shown in check["plot"].items():
        assert abs(shown - round(check["table"][panel], 3)) <= 0.001 + 1e-9, (
            f"{name}: the diagram's ECE for {panel} is {shown}, the table's {check['table'][panel]}")


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie, done but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):  # gone meanwhile, or no /proc here
        return not Path("/proc").is_dir()


@pytest.mark.model
@pytest.mark.parametrize("shutdown", ["graceful", "immediate"])
def test_api_notebook_server_stops_when_a_cell_fails(shutdown: str, notebook_env: Path) -> None:
    """A cell fails after the server started; the kernel is then shut down (graceful: the
    kernel's exit runs the finalizer) or killed (immediate: the parent-death signal)."""
    nb = _read("acs_api.ipynb")
    start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "LocalServer(" in c.source)
    nb.cells = nb.cells[: start + 1] + [
        nbformat.v4.new_code_cell('print("SERVER PID", server.proc.pid)\nraise RuntimeError("a cell fails")'),
        *nb.cells[start + 1:],
    ]
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="a cell fails"):
        execute_py.execute(nb, timeout=300, shutdown_kernel=shutdown)
    pid = int(re.search(r"SERVER PID (\d+)", _output_text(nb)).group(1))
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), f"calibkit serve (pid {pid}) still runs after the failing notebook's kernel ended"


@pytest.mark.model
def test_study_says_when_the_bundled_set_stands_in_for_sst2(notebook_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALIBKIT_SST2_DEV", str(notebook_env / "no-sst2" / "dev.txt"))
    nb = _read("calibration_study.ipynb")
    nb.cells = [c for c in nb.cells if "load_dataset(" in c.source or c.cell_type == "markdown"][:3]
    execute_py.execute(nb, timeout=120)
    text = _output_text(nb)
    assert "SST-2 is not here" in text and "the bundled `sentiment` set stands in" in text, text
    assert re.search(r"^sentiment 30 ", text, re.MULTILINE), text
