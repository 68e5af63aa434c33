"""The wheel carries the bundled data sets, and the loader finds them in its layout with nothing else installed."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["sentiment", "topic", "truefalse"]



def _can_build() -> bool:
    # --no-build-isolation builds with this environment's setuptools, which must read pyproject.toml's
    # SPDX license string (77 and later; those make wheels without the wheel package too).
    if importlib.util.find_spec("setuptools") is None:
        return False
    major = int(importlib.metadata.version("setuptools").split(".")[0])
    return major >= 77


pytestmark = pytest.mark.skipif(not _can_build(), reason="building the wheel needs setuptools >= 77 here")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy of the sources, so the checkout gets no build/ or egg-info from the test.
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("calibkit", "datasets"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    # -v: pip passes on what setuptools says while it builds (-q hides it; make's pip install shows it)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-v", "-w", str(out), str(src)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (out / "build.log").write_text(r.stdout + r.stderr)
    (whl,) = out.glob("calibkit-*.whl")
    return whl


def test_the_build_warns_of_no_deprecated_setuptools_config_and_the_license_is_spdx(wheel: Path) -> None:
    log = (wheel.parent / "build.log").read_text()
    assert "running bdist_wheel" in log  # the build's own output is in the log, so the check can fail
    # pip hands setuptools' SetuptoolsDeprecationWarning on as a BuildBackendWarning
    warned = [line for line in log.splitlines() if re.search(r"SetuptoolsDeprecationWarning|BuildBackendWarning", line)]
    assert not warned, "\n".join(warned[:20])
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        headers = z.read(meta).decode().split("\n\n", 1)[0].splitlines()
    assert "License-Expression: Apache-2.0" in headers, headers


def test_the_wheel_carries_each_set_with_its_card(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for name in NAMES:
            for f in ("data.csv", "README.md"):
                inside = f"calibkit/datasets/bundled/{name}/{f}"
                assert inside in names, inside
                assert z.read(inside) == (ROOT / "datasets" / name / f).read_bytes(), inside
    # Nothing at the wheel's top level but calibkit: a top-level datasets/ would shadow Hugging Face's library.
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert tops == {"calibkit"}, tops
    # Every subpackage of the sources is in the wheel (pyproject.toml lists them by hand).
    for init in (ROOT / "calibkit").rglob("__init__.py"):
        inside = init.relative_to(ROOT).as_posix()
        assert inside in names, f"{inside} is not in the wheel: add its package to [tool.setuptools] packages"


def test_the_loader_reads_the_wheels_layout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = ("import calibkit.datasets as d\n"
            "print(d.__file__)\nprint(d.bundled_root())\nprint(d.list_datasets())\n"
            "ds = d.load_dataset('topic')\nprint(len(ds), ds.classes, ds.source)\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    file, root, listed, topic = run.stdout.splitlines()[-4:]
    assert Path(file).is_relative_to(site), file  # this wheel's copy, not the checkout's
    assert Path(root) == site / "calibkit" / "datasets" / "bundled"
    assert listed == str(NAMES)
    assert topic == "400 ['World', 'Sports', 'Business', 'Sci/Tech'] bundled"
    # Without its data the loader says so, and where it looked.
    shutil.rmtree(site / "calibkit" / "datasets" / "bundled")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0 and "bundled data sets are missing" in run.stderr, run.stderr[-3000:]
