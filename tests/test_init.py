"""The package's front door: `import calibkit` and `calibkit --help` load nothing heavy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

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


def test_the_default_install_pulls_neither_torch_nor_ray() -> None:
    from importlib.metadata import requires

    plain = [r for r in requires("calibkit") or [] if "extra ==" not in r]
    names = {re.split(r"[ <>=!~;\[]", r, maxsplit=1)[0].lower() for r in plain}
    assert names and not names & {"torch", "ray", "transformers", "accelerate", "llama-cpp-python"}, names
    extras = {r.split("extra ==")[1].strip(" '\"") for r in requires("calibkit") or [] if "extra ==" in r}
    assert {"hf", "ray", "local"} <= extras


def test_the_statistics_half_imports_nothing_of_the_model_half() -> None:
    stats = ["label_scores", "calibration", "metrics", "selective", "conformal", "diagrams", "report", "comparison"]
    code = (f"import importlib\nfor m in {stats!r}:\n    importlib.import_module('calibkit.' + m)\n"
            "import sys, json\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('calibkit.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.splitlines()[-1])
    model_half = ("calibkit.backends", "calibkit.scoring", "calibkit.templates", "calibkit.api", "calibkit.cache")
    assert not [m for m in loaded if m.startswith(model_half)], loaded


ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_calibkit_version_is_pyprojects_and_newer_than_the_readmes_older_versions() -> None:
    from packaging.version import Version

    wanted = _pyproject()["project"]["version"]
    script = Path(sys.executable).with_name("calibkit")  # the command a user types, as pip installed it
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "calibkit.cli"]
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, check=True).stdout.split()
    # the installed metadata: a stale egg-info/dist-info (pyproject bumped, pip install -e . not rerun) fails here
    assert out == ["calibkit", wanted], f"calibkit --version says {out}; pyproject.toml says {wanted}"
    older = re.findall(r"calibkit (\d+(?:\.\d+)+)", (ROOT / "README.md").read_text())
    assert older, "the README names no older version of calibkit"
    assert all(Version(v) < Version(wanted) for v in older), (older, wanted)
