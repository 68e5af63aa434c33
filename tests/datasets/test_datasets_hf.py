"""hf:<name> reads through the Hugging Face datasets library, and says clearly when it cannot."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from calibkit.datasets import HFUnavailableError, load_dataset
from calibkit.datasets.hf import _is_offline

ROOT = Path(__file__).resolve().parents[2]


def _hf_installed() -> bool:
    # The distribution, not find_spec: from the repository's root find_spec("datasets") finds the
    # bundled data sets' folder.
    try:
        importlib.metadata.distribution("datasets")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


HF_INSTALLED = _hf_installed()


def test_hf_without_the_library_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError, as when not installed
    with pytest.raises(HFUnavailableError, match=r"pip install 'calibkit\[hf\]'"):
        load_dataset("hf:stanfordnlp/sst2", split="validation")


def test_a_datasets_folder_is_not_taken_for_the_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Without the library, `import datasets` finds a plain folder of that name on sys.path (a namespace
    # package), such as the bundled data sets at the top of a checkout when the tests run from it.
    folder = types.ModuleType("datasets")
    folder.__path__ = [str(tmp_path / "datasets")]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", folder)
    with pytest.raises(HFUnavailableError, match=r"found \[.*datasets'\] instead.*pip install 'calibkit\[hf\]'"):
        load_dataset("hf:stanfordnlp/sst2", split="validation")


@pytest.mark.skipif(HF_INSTALLED, reason="the Hugging Face datasets library is installed")
def test_hf_from_the_checkout_root_without_the_library() -> None:
    # A fresh process in the repository's root, where `import datasets` finds the bundled data sets' folder.
    code = ("from calibkit.datasets import load_dataset, HFUnavailableError\n"
            "try:\n    load_dataset('hf:stanfordnlp/sst2', split='validation')\n"
            "except HFUnavailableError as e:\n    print('UNAVAILABLE', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "UNAVAILABLE reading 'hf:' data sets needs the Hugging Face `datasets` library" in out.stdout, out.stderr[-2000:]
    assert "pip install 'calibkit[hf]'" in out.stdout


@pytest.mark.skipif(not HF_INSTALLED, reason="the Hugging Face datasets library is not installed")
def test_hf_offline_says_so(tmp_path: Path) -> None:
    # A real call in a fresh process with the Hub switched off and an empty cache.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    code = ("from calibkit.datasets import load_dataset, HFUnavailableError\n"
            "try:\n    load_dataset('hf:stanfordnlp/sst2', split='validation')\n"
            "except HFUnavailableError as e:\n    print('OFFLINE', e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "OFFLINE could not reach the Hugging Face Hub for 'stanfordnlp/sst2'" in out.stdout, out.stderr[-2000:]
    assert "HF_HUB_OFFLINE" in out.stdout


def test_offline_errors_are_recognised_through_their_causes() -> None:
    inner = OSError("[Errno -2] Name or service not known")
    outer = RuntimeError("download failed")
    outer.__cause__ = inner
    assert _is_offline(outer)
    assert _is_offline(ConnectionError("Couldn't reach 'x' on the Hub (OfflineModeIsEnabled)"))
    assert not _is_offline(ValueError("BuilderConfig 'foo' not found"))
