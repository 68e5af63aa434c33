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

Under pressure:

- several processes may write one file at once: each waits for the others' write
  lock (sqlite's busy timeout, and a retry with backoff where sqlite answers
  "database is locked" without waiting), so no answer is lost and none fails;
- a file that is not a readable cache of this layout (random bytes, cut short, an
  ``answers_v2`` table of other columns) is checked for when it is opened, set aside
  as ``<name>.corrupt-<UTC time>`` and replaced by an empty cache, with one logged
  warning: its answers are asked again rather than read into wrong scores;
- a full disk stops the run with :class:`CacheFullError`, which says that the
  answers written before it are kept.

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
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

__all__ = ["CacheError", "CacheFullError", "ResponseCache", "default_cache_path", "resolve_cache"]

_T = TypeVar("_T")

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
_COLUMNS = ["key", "value", "created"]
_log = logging.getLogger("calibkit.cache")

#: Seconds a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_S = 60.0

# sqlite's primary result codes (the low byte of an extended code).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 5, 6, 11, 13, 26


class CacheError(OSError):
    """The cache file cannot be used: corrupt while in use, or a disk that is full.

    >>> raise CacheError("the cache c.sqlite is corrupt")
    Traceback (most recent call last):
    ...
    calibkit.cache.CacheError: the cache c.sqlite is corrupt
    """


class CacheFullError(CacheError):
    """The disk (or sqlite's size limit) is full; the answers committed before it are kept."""


class _Unusable(Exception):
    """Raised while opening: the file is not a cache of this layout (why in the message)."""


def _code(e: sqlite3.Error) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _is_busy(e: sqlite3.Error) -> bool:
    code = _code(e)
    if code is not None:
        return code in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(e) or "busy" in str(e)


def _is_corrupt(e: sqlite3.Error) -> bool:
    code = _code(e)
    if code is not None:
        return code in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return type(e) is sqlite3.DatabaseError  # OperationalError (locked, full) is a subclass: not corrupt


def _is_full(e: sqlite3.Error) -> bool:
    code = _code(e)
    return code == _SQLITE_FULL if code is not None else "is full" in str(e)


def _retry_busy(fn: Callable[[], _T], timeout: float = BUSY_TIMEOUT_S) -> _T:
    """Call ``fn`` again, with backoff, while sqlite says another connection holds the lock.

    sqlite's busy handler covers most waits, but not all (changing the journal mode,
    a write transaction whose snapshot went stale): those fail at once with
    "database is locked", and are retried here for up to ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if not _is_busy(e) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


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
    """Key -> JSON answer, in one sqlite file in WAL mode; safe across threads and processes.

    Opening a file that is not a readable cache of this layout sets it aside (one
    warning) and starts an empty one; see the module's docstring.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        checked = self._inode()
        try:
            self._open()
        except _Unusable as why:
            self.close()
            aside = self._set_aside(checked)
            # WARNING reaches stderr as one line even where logging is not configured.
            _log.warning(
                "calibkit: the cache %s is not readable as a calibkit cache (%s); set it aside as %s "
                "and started an empty one: its answers will be asked again",
                self.path, why, aside or "(already replaced by another process)",
            )
            self._open()

    def _open(self) -> None:
        """Connect, create the table and check the file; _Unusable if it is not a cache of this layout."""
        try:
            conn = self._conn()
            _retry_busy(lambda: conn.execute(_SCHEMA))
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({_TABLE})")]
            if columns != _COLUMNS:
                raise _Unusable(f"its table {_TABLE} has columns {columns}, not {_COLUMNS}")
            # quick_check reads every page: a file cut short or overwritten fails it here
            # rather than half-way through a run (or, worse, never).
            (verdict,) = conn.execute("PRAGMA quick_check(1)").fetchone()
            if verdict != "ok":
                raise _Unusable(f"sqlite's quick_check: {verdict}")
            others = [
                name
                for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if name != _TABLE and not name.startswith("sqlite_")
            ]
        except sqlite3.OperationalError as e:
            if _is_full(e):
                raise self._full_error(e, 0) from e
            raise
        except sqlite3.DatabaseError as e:
            if _is_corrupt(e):
                raise _Unusable(str(e)) from e
            raise
        if others:
            _log.warning(
                "calibkit: the cache %s also holds answers of another layout (%s); they are ignored",
                self.path, ", ".join(sorted(others)),
            )

    def _inode(self) -> int | None:
        try:
            return os.stat(self.path).st_ino
        except FileNotFoundError:
            return None

    def _set_aside(self, checked: int | None) -> Path | None:
        """Rename the file (and its -wal) to ``<name>.corrupt-<UTC time>``; None if another
        process already did (the file at the path is no longer the one found unusable)."""
        if self._inode() != checked:
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        i = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{i}")
            i += 1
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:  # another process set it aside first
            return None
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            try:
                if suffix == "-wal":
                    os.replace(side, Path(f"{aside}{suffix}"))
                else:
                    side.unlink()
            except FileNotFoundError:
                pass
        return aside

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # timeout= is sqlite's busy timeout: how long a statement waits for another
            # process's lock before "database is locked".
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                _retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL"))
                conn.execute("PRAGMA synchronous=NORMAL")
            except BaseException:
                conn.close()
                raise
            self._local.conn = conn
        return conn

    def _full_error(self, e: sqlite3.Error, batch: int) -> CacheFullError:
        try:
            kept = f"the {len(self)} answers written before it are kept in it"
        except sqlite3.Error:
            kept = "the answers written before it are kept in it"
        what = f"this batch of {batch} answers was not written; " if batch else ""
        return CacheFullError(
            f"the cache {self.path} cannot grow: {e} ({what}{kept}). Free some space, or put "
            f"the cache on a disk with room (CALIBKIT_CACHE_DIR), and run again: the questions "
            f"already answered are read from the cache, not asked again."
        )

    def _corrupt_error(self, e: Exception) -> CacheError:
        return CacheError(
            f"the cache {self.path} is corrupt ({e}); no answer is read from it. Open it again "
            f"(a new run does) and calibkit sets it aside and starts an empty one, or delete it."
        )

    @staticmethod
    def key(identity: Mapping[str, Any], question: Mapping[str, Any]) -> str:
        """The cache key of one question to one backend (identity carries no secret)."""
        return hashlib.sha256(
            _canonical({"backend": identity, "question": question}).encode("utf-8")
        ).hexdigest()

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The answers stored under ``keys`` (those found), decoded."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        conn = self._conn()
        for i in range(0, len(keys), 500):  # sqlite's bound-parameter limit
            chunk = keys[i : i + 500]
            sql = f"SELECT key, value FROM {_TABLE} WHERE key IN ({','.join('?' * len(chunk))})"
            try:
                rows = _retry_busy(lambda: conn.execute(sql, chunk).fetchall())
                for k, v in rows:
                    found[k] = json.loads(v, object_hook=_decode_hook)
            except json.JSONDecodeError as e:
                raise CacheError(
                    f"the cache {self.path} holds an answer that is not valid JSON ({e}); no answer "
                    f"is read from it. Delete the file (or move it aside) and run again: its answers "
                    f"are asked again."
                ) from e
            except sqlite3.DatabaseError as e:
                if _is_corrupt(e):
                    raise self._corrupt_error(e) from e
                raise
        return found

    def put_many(self, items: Mapping[str, Any]) -> None:
        """Store answers, all of them in one transaction (all or none are written).

        Raises :class:`CacheFullError` when the disk is full; what was committed before stays.
        """
        if not items:
            return
        rows = [(k, _encode_value(v)) for k, v in items.items()]
        conn = self._conn()

        def write() -> None:
            # IMMEDIATE takes the write lock up front, through the busy timeout, instead of
            # upgrading a read lock later (which fails at once when another writer got there).
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(f"INSERT OR REPLACE INTO {_TABLE} (key, value) VALUES (?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        try:
            _retry_busy(write)
        except sqlite3.OperationalError as e:
            if _is_full(e):
                raise self._full_error(e, len(rows)) from e
            raise
        except sqlite3.DatabaseError as e:
            if _is_corrupt(e):
                raise self._corrupt_error(e) from e
            raise

    def __len__(self) -> int:
        return self._conn().execute(f"SELECT COUNT(*) FROM {_TABLE}").fetchone()[0]

    def clear(self) -> None:
        conn = self._conn()
        _retry_busy(lambda: conn.execute(f"DELETE FROM {_TABLE}"))

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
