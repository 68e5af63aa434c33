"""The response cache: keys from the canonical request and backend identity, never the key."""

from __future__ import annotations

import math
import pickle

from calibkit.cache import ResponseCache, default_cache_path, resolve_cache


def test_round_trip_keeps_infinities(tmp_path) -> None:
    c = ResponseCache(tmp_path / "c.sqlite")
    k = c.key({"model": "m"}, {"prompt": "x"})
    c.put_many({k: {"lp": [-math.inf, -1.5], "nested": {"a": -math.inf}}})
    got = c.get_many([k, "missing"])
    assert got == {k: {"lp": [-math.inf, -1.5], "nested": {"a": -math.inf}}}
    assert len(c) == 1


def test_key_is_canonical_and_depends_on_identity(tmp_path) -> None:
    a = ResponseCache.key({"model": "m", "endpoint": ["u"]}, {"prompt": "x", "max_tokens": 1})
    b = ResponseCache.key({"endpoint": ["u"], "model": "m"}, {"max_tokens": 1, "prompt": "x"})
    assert a == b
    assert a != ResponseCache.key({"model": "other", "endpoint": ["u"]}, {"prompt": "x", "max_tokens": 1})
    assert a != ResponseCache.key({"model": "m", "endpoint": ["u"]}, {"prompt": "y", "max_tokens": 1})


def test_persists_across_objects_and_pickles_by_path(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    c = ResponseCache(path)
    c.put_many({"k": {"v": 1}})
    c.close()
    again = pickle.loads(pickle.dumps(ResponseCache(path)))
    assert again.get_many(["k"]) == {"k": {"v": 1}}


def test_resolve(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CALIBKIT_CACHE_DIR", str(tmp_path))
    assert default_cache_path() == tmp_path / "responses.sqlite"
    assert resolve_cache(False) is None
    assert resolve_cache(None).path == tmp_path / "responses.sqlite"
    assert resolve_cache(str(tmp_path / "x.sqlite")).path == tmp_path / "x.sqlite"
