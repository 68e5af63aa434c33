"""Shared fixtures: the embedded model (loaded once), an in-memory backend and a
scripted HTTP server on 127.0.0.1 (both in helpers.py)."""

from __future__ import annotations

import pytest

from helpers import ScriptedServer, TableBackend


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Backends made with the default cache write under a test folder, never ~/.cache.
    monkeypatch.setenv("CALIBKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def local_model():
    from calibkit import LocalModel

    return LocalModel(cache=False)


@pytest.fixture
def table_backend() -> type[TableBackend]:
    return TableBackend


@pytest.fixture
def scripted_server():
    s = ScriptedServer()
    yield s
    s.close()
