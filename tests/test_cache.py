"""The response cache: keys from the canonical request and backend identity, never the key;
and the cache under pressure: concurrent writers, damaged files, a full disk."""

from __future__ import annotations

import logging
import math
import os
import pickle
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from calibkit.cache import CacheError, CacheFullError, ResponseCache, default_cache_path, resolve_cache


def test_round_trip_keeps_infinities(tmp_path) -> None:
    c = ResponseCache(tmp_path / "c.sqlite")
    k = c.key({"model": "m"}, {"prompt": "x"})
    c.put_many({k: {"lp": [-math.inf, -1.5], "nested": {"a": -math.inf}}})
    got = c.get_many([k, "missing"])
    assert got == {k: {"lp": [-math.inf, -1.5], "nested": {"a": -math.inf}}}
    assert len(c) == 1


def test_a_whole_vocabulary_answer_of_megabytes_round_trips_across_processes(tmp_path) -> None:
    # The vocabulary question's answer: gemma's 262,144 float64 log-probabilities per group, as text.
    value = {"shape": [2, 262144], "float64": "A" * (2 * 262144 * 8 * 4 // 3)}
    c = ResponseCache(tmp_path / "c.sqlite")
    k = c.key({"model": "m"}, {"question": "mean_next_token_logprobs", "prompts": ["x"], "groups": [0]})
    c.put_many({k: value})
    c.close()
    assert pickle.loads(pickle.dumps(c)).get_many([k]) == {k: value}


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


# --- under pressure: concurrent writers, damaged files, a full disk -----------------------

_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from calibkit.cache import ResponseCache
    path, tag, batches, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    while not os.path.exists(go):  # start together: both open a file that does not exist yet
        time.sleep(0.001)
    cache = ResponseCache(path)
    for i in range(batches):
        cache.put_many({f"{tag}-{i}-{j}": {"lp": [-float(j), float("-inf")], "i": i} for j in range(10)})
        cache.get_many([f"{tag}-{i}-0"])
    """
)


def test_two_processes_writing_at_once_lose_nothing_and_never_lock(tmp_path) -> None:
    path, go = tmp_path / "shared.sqlite", tmp_path / "go"
    batches = 300
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), tag, str(batches), str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for tag in ("a", "b")
    ]
    go.touch()
    results = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert "locked" not in err
    cache = ResponseCache(path)
    assert len(cache) == 2 * batches * 10
    keys = [f"{t}-{i}-{j}" for t in "ab" for i in range(batches) for j in range(10)]
    got = cache.get_many(keys)
    assert len(got) == len(keys)
    assert got["b-299-3"] == {"lp": [-3.0, -math.inf], "i": 299}


def test_a_writer_waits_for_another_connections_lock(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")  # another writer mid-transaction
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    release.start()
    try:
        t0 = time.monotonic()
        cache.put_many({"k": {"v": 1}})  # waits for the lock instead of "database is locked"
        assert time.monotonic() - t0 >= 0.3
    finally:
        release.join()
        other.close()
    assert cache.get_many(["k"]) == {"k": {"v": 1}}


def _damaged_copies(tmp_path):
    """(name, bytes) of files that are not a usable cache of this layout."""
    good = tmp_path / "good.sqlite"
    c = ResponseCache(good)
    c.put_many({f"k{i}": {"text": "x" * 300, "lp": [-1.5, -math.inf]} for i in range(3000)})
    c.close()
    with sqlite3.connect(good) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = good.read_bytes()
    other_layout = tmp_path / "other.sqlite"
    with sqlite3.connect(other_layout) as con:  # an answers_v2 of different columns
        con.execute("CREATE TABLE answers_v2 (key TEXT PRIMARY KEY, scores BLOB)")
        con.execute("INSERT INTO answers_v2 VALUES ('k0', x'00ff')")
    return {
        "random bytes": os.urandom(64 * 1024),
        "cut in half": data[: len(data) // 2],
        "other layout": other_layout.read_bytes(),
    }


@pytest.mark.parametrize("damage", ["random bytes", "cut in half", "other layout"])
def test_a_damaged_file_is_set_aside_and_rebuilt_with_one_warning(tmp_path, caplog, damage) -> None:
    content = _damaged_copies(tmp_path)[damage]
    path = tmp_path / "c.sqlite"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="calibkit.cache"):
        cache = ResponseCache(path)
    warnings = [r for r in caplog.records if r.name == "calibkit.cache"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert str(path) in message and ".corrupt-" in message
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("c.sqlite.corrupt-")]
    (kept,) = [p for p in aside if not p.name.endswith("-wal")]
    if damage == "other layout":  # still sqlite: opening it switched it to WAL, so compare rows
        with sqlite3.connect(kept) as con:
            assert con.execute("SELECT key, scores FROM answers_v2").fetchall() == [("k0", b"\x00\xff")]
    else:
        assert kept.read_bytes() == content
    # the new cache is empty (nothing misread) and works
    assert len(cache) == 0 and cache.get_many(["k0", "k1"]) == {}
    cache.put_many({"k0": {"v": 1}})
    assert ResponseCache(path).get_many(["k0"]) == {"k0": {"v": 1}}


def test_answers_of_the_older_layout_are_kept_and_ignored(tmp_path, caplog) -> None:
    path = tmp_path / "c.sqlite"
    with sqlite3.connect(path) as con:  # calibkit 0.1's table
        con.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, value TEXT)")
        con.execute("INSERT INTO responses VALUES ('k', '{\"v\": 0}')")
    with caplog.at_level(logging.WARNING, logger="calibkit.cache"):
        cache = ResponseCache(path)
    assert len([r for r in caplog.records if "another layout" in r.getMessage()]) == 1
    assert cache.get_many(["k"]) == {}
    assert not [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]


def test_a_value_that_is_not_an_answer_is_an_error_not_a_score(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    ResponseCache(path).put_many({"k": {"v": 1}})
    with sqlite3.connect(path) as con:
        con.execute("UPDATE answers_v2 SET value = '{\"v\": 1' WHERE key = 'k'")
    with pytest.raises(CacheError, match="not valid JSON.*Delete the file"):
        ResponseCache(path).get_many(["k"])


def test_a_full_disk_stops_with_a_clear_error_and_keeps_what_was_written(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    cache.put_many({f"early{i}": {"v": i} for i in range(5)})
    conn = cache._conn()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # sqlite's own limit: SQLITE_FULL past it
    with pytest.raises(CacheFullError) as info:
        cache.put_many({f"late{i}": {"text": "x" * 1000} for i in range(200)})
    message = str(info.value)
    assert "database or disk is full" in message
    assert "5 answers written before it are kept" in message
    assert "run again" in message
    cache.close()
    again = ResponseCache(path)
    assert len(again) == 5  # the failed batch is all or nothing
    assert again.get_many(["early4"]) == {"early4": {"v": 4}}
