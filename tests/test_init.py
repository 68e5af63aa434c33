"""The package's front door: `import calibkit` and `calibkit --help` load nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["torch", "matplotlib", "llama_cpp", "starlette", "uvicorn", "pandas", "transformers", "ray"]


def loaded_after(code: str) -> list[str]:
    """The heavy top-level packages in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return [m for m in json.loads(out.splitlines()[-1]) if m in HEAVY + ["sklearn", "scipy", "httpx"]]


def test_import_calibkit_loads_no_heavy_library() -> None:
    assert [m for m in loaded_after("import calibkit") if m in HEAVY] == []


def test_help_loads_neither_the_statistics_nor_the_model_libraries() -> None:
    code = ("from calibkit import cli\nimport contextlib, io\n"
            "for argv in (['--help'], ['eval', '--help'], ['serve', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try: cli.main(argv)\n"
            "        except SystemExit: pass")
    assert loaded_after(code) == []


def test_names_load_on_first_use() -> None:
    import calibkit as ck

    assert ck.TemperatureScaling.__module__ == "calibkit.calibration.scaling"
    assert ck.metrics.ece is not None and "score" in dir(ck)
    assert set(ck.__all__) <= set(dir(ck))
    with pytest.raises(AttributeError, match="no attribute 'Scorer'"):
        ck.Scorer  # noqa: B018
