"""One persistent cache of the model's answers in sqlite (WAL), in front of every backend.

The key is a SHA-256 of the canonical JSON of the backend's identity (model,
endpoint, the settings that change numbers) and of the question (top-k after one
prompt, or one continuation's log-probabilities), never of the API key, so that a
rerun after an interruption, or the same example scored twice, asks the model nothing
that already finished. Answers are committed batch by batch as they arrive
(:class:`~calibkit.backends.base.Backend` does that).

Answers are kept in a table named for their layout (``answers_v2``). A file that also
holds answers of another layout (calibkit 0.1 kept whole responses in ``responses``)
is used as it is, the other table ignored with a one-line message: never misread.

Example
-------
>>> import tempfile, os
>>> cache = ResponseCache(os.path.join(tempfile.mkdtemp(), "c.sqlite"))
>>> key = cache.key({"model": "m"}, {"prompt": "hi", "max_tokens": 1})
>>> cache.get_many([key])
{}
>>> cache.put_many({key: {"text": " there"}})
>>> cache.get_many([key])[key]
{'text': ' there'}
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["ResponseCache", "default_cache_path", "resolve_cache"]

#: The layout of keys and values this version reads and writes.
LAYOUT = 2
_TABLE = f"answers_v{LAYOUT}"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_TABLE} (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now'))
)
"""
_log = logging.getLogger("calibkit.cache")


def _canonical(obj: Any) -> str:
    # allow_nan=False keeps the key well defined; -inf never appears in requests.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _encode_value(obj: Any) -> str:
    # Answers carry -inf log-probabilities: keep them exact through JSON.
    def fix(o: Any) -> Any:
        if isinstance(o, float) and math.isinf(o):
            return {"__float__": "inf" if o > 0 else "-inf"}
        if isinstance(o, dict):
            return {k: fix(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [fix(v) for v in o]
        return o

    return json.dumps(fix(obj), separators=(",", ":"), ensure_ascii=False)


def _decode_hook(d: dict) -> Any:
    if len(d) == 1 and "__float__" in d:
        return float(d["__float__"])
    return d


def default_cache_path() -> Path:
    """``$CALIBKIT_CACHE_DIR/responses.sqlite``, else ``~/.cache/calibkit/responses.sqlite``."""
    base = os.environ.get("CALIBKIT_CACHE_DIR")
    if base:
        root = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "calibkit"
    return root / "responses.sqlite"


class ResponseCache:
    """Key -> JSON answer, in one sqlite file in WAL mode; safe across threads and processes."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        conn = self._conn()
        conn.execute(_SCHEMA)
        others = [
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if name != _TABLE and not name.startswith("sqlite_")
        ]
        if others:
            # WARNING reaches stderr as one line even where logging is not configured.
            _log.warning(
                "calibkit: the cache %s also holds answers of another layout (%s); they are ignored",
                self.path, ", ".join(sorted(others)),
            )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @staticmethod
    def key(identity: Mapping[str, Any], question: Mapping[str, Any]) -> str:
        """The cache key of one question to one backend (identity carries no secret)."""
        return hashlib.sha256(
            _canonical({"backend": identity, "question": question}).encode("utf-8")
        ).hexdigest()

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        conn = self._conn()
        for i in range(0, len(keys), 500):  # sqlite's bound-parameter limit
            chunk = keys[i : i + 500]
            rows = conn.execute(
                f"SELECT key, value FROM {_TABLE} WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            for k, v in rows:
                found[k] = json.loads(v, object_hook=_decode_hook)
        return found

    def put_many(self, items: Mapping[str, Any]) -> None:
        if not items:
            return
        conn = self._conn()
        with conn:
            conn.execute("BEGIN")
            conn.executemany(
                f"INSERT OR REPLACE INTO {_TABLE} (key, value) VALUES (?, ?)",
                [(k, _encode_value(v)) for k, v in items.items()],
            )

    def __len__(self) -> int:
        return self._conn().execute(f"SELECT COUNT(*) FROM {_TABLE}").fetchone()[0]

    def clear(self) -> None:
        self._conn().execute(f"DELETE FROM {_TABLE}")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __getstate__(self) -> dict:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"


def resolve_cache(cache: "ResponseCache | str | os.PathLike[str] | bool | None") -> ResponseCache | None:
    """``True``/``None``: the default file; ``False``: no cache; a path or a ResponseCache: that one."""
    if cache is False:
        return None
    if cache is None or cache is True:
        return ResponseCache(default_cache_path())
    if isinstance(cache, ResponseCache):
        return cache
    return ResponseCache(cache)
