"""API keys for ``calibkit serve``: a JSON file of salted scrypt hashes.

A key looks like ``ck_<id>_<secret>``: the id (8 hex digits) is public and names the
key in ``calibkit keys list`` and ``revoke``; the secret (256 random bits) is shown
once, by ``create``, and only its salted hash is stored. The server looks the entry
up by id and compares the hash in constant time; a key it has checked once, passed or
failed, is remembered (as an HMAC under a per-process secret) until the file changes,
so the scrypt cost is paid once per key, not once per request, and it is the same for
a wrong secret as for an unknown id.

Example
-------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "keys.json"
>>> key, entry = create_key(path, name="laptop")
>>> KeyFile(path).verify(key) == entry["id"]
True
>>> revoke_key(path, entry["id"])["name"]
'laptop'
>>> KeyFile(path).verify(key) is None
True
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

__all__ = ["KeyFile", "KeyFileError", "create_key", "list_keys", "revoke_key"]

log = logging.getLogger("calibkit.server")

_FORMAT = "calibkit-keys"
_PREFIX = "ck"
# scrypt at n=2**14, r=8 takes 16 MiB and tens of milliseconds: paid once per key
# by the server (then remembered), and once by `keys create`.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class KeyFileError(ValueError):
    """The keys file is missing, unreadable or not a calibkit keys file."""


def _derive(key: str, salt: bytes, params: dict[str, int]) -> bytes:
    return hashlib.scrypt(
        key.encode("utf-8"), salt=salt, n=params["n"], r=params["r"], p=params["p"],
        maxmem=256 * params["n"] * params["r"], dklen=32,
    )


def _split(key: str) -> str | None:
    """The id of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX or len(parts[1]) != 8 or not parts[2]:
        return None
    return parts[1]


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise KeyFileError(
            f"no keys file at {str(path)!r}; create one with: calibkit keys create --keys-file {path}"
        ) from e
    except OSError as e:
        raise KeyFileError(f"cannot read the keys file {str(path)!r}: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise KeyFileError(f"the keys file {str(path)!r} is not JSON ({e}); was it edited by hand?") from e
    if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("keys"), list):
        raise KeyFileError(
            f"{str(path)!r} is not a calibkit keys file (expected a JSON object with "
            f'"format": "{_FORMAT}" and a "keys" list)'
        )
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    # Write a new file and rename it over the old one: a reader (the server) never
    # sees half a file, and the new inode tells it that the file changed.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[dict[str, Any]]:
    """Read-modify-write under an exclusive lock, so two `keys create` never lose one."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name("." + path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = _read(path) if path.exists() else {"format": _FORMAT, "version": 1, "keys": []}
            yield data
            _write(path, data)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def create_key(path: str | os.PathLike[str], name: str = "") -> tuple[str, dict[str, Any]]:
    """Add a new key to the file (created if missing); return (key, public entry).

    The key itself is returned only here: the file keeps its salted hash.

    >>> key, entry = create_key(path, name="ci")       # doctest: +SKIP
    >>> key                                             # doctest: +SKIP
    'ck_3f9a0c1e_...'
    """
    path = Path(path)
    with _locked(path) as data:
        taken = {e.get("id") for e in data["keys"]}
        kid = secrets.token_hex(4)
        while kid in taken:
            kid = secrets.token_hex(4)
        key = f"{_PREFIX}_{kid}_{secrets.token_urlsafe(32)}"
        salt = secrets.token_bytes(16)
        entry = {
            "id": kid,
            "name": str(name),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "kdf": "scrypt",
            **_SCRYPT,
            "salt": salt.hex(),
            "hash": _derive(key, salt, _SCRYPT).hex(),
        }
        data["keys"].append(entry)
    return key, _public(entry)


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in ("id", "name", "created")}


def list_keys(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The keys in the file as {id, name, created}; never a key nor its hash."""
    return [_public(e) for e in _read(Path(path))["keys"]]


def revoke_key(path: str | os.PathLike[str], key_id: str) -> dict[str, Any]:
    """Remove the key with this id from the file; return its public entry.

    A server reading the file stops accepting the key at its next request.
    """
    path = Path(path)
    if not path.exists():
        _read(path)  # raises the helpful "no keys file" error
    with _locked(path) as data:
        for i, e in enumerate(data["keys"]):
            if e.get("id") == key_id:
                del data["keys"][i]
                return _public(e)
        ids = ", ".join(str(e.get("id")) for e in data["keys"]) or "none"
        raise KeyError(f"no key with id {key_id!r} in {str(path)!r} (ids there: {ids}); see calibkit keys list")


class _Pending:
    """One verification under way; requests presenting the same key wait for it."""

    def __init__(self) -> None:
        self.done = threading.Event()


class KeyFile:
    """The server's view of a keys file: re-read whenever it changes on disk.

    ``verify(key)`` returns the key's id, or None for a key the file does not hold.
    A missing or unreadable file accepts no key at all (and logs why), so deleting
    or breaking the file never opens the server.

    Cost: every presented key is looked up by its HMAC under a per-process secret.
    The first time a key is seen, one scrypt runs, on the same path whatever the key
    (an unknown id or a malformed key is checked against a dummy hash, so a wrong
    secret costs what a wrong id costs and timing does not tell whether an id exists);
    its outcome is remembered, passes until the file changes and failures too (the
    newest ``max_failures`` of them), so repeating a key never runs scrypt again.
    Concurrent first requests with the same key share one scrypt, and at most
    ``kdf_slots`` scrypts run at a time (each takes 16 MiB). ``kdf_calls`` counts the
scrypts run, ``kdf_peak`` the most that ran at once.

    >>> kf = KeyFile(path)                                   # doctest: +SKIP
    >>> kf.verify(key), kf.verify(key), kf.kdf_calls         # doctest: +SKIP
    ('3f9a0c1e', '3f9a0c1e', 1)
    """

    def __init__(self, path: str | os.PathLike[str], *, kdf_slots: int = 2, max_failures: int = 4096):
        if kdf_slots < 1 or max_failures < 0:
            raise ValueError(f"kdf_slots must be >= 1 and max_failures >= 0 (got {kdf_slots}, {max_failures})")
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[str, dict[str, Any]] = {}
        self._secret = secrets.token_bytes(32)
        self._passed: dict[bytes, str] = {}  # HMAC of a key that passed -> its id
        self._failed: collections.OrderedDict[bytes, None] = collections.OrderedDict()  # HMACs that failed
        self._max_failures = max_failures
        self._pending: dict[bytes, _Pending] = {}
        self._generation = 0  # bumped whenever the file is re-read: outcomes from before are dropped
        self._slots = threading.BoundedSemaphore(kdf_slots)
        salt = secrets.token_bytes(16)
        self._dummy = {"id": None, **_SCRYPT, "salt": salt.hex(), "hash": secrets.token_bytes(32).hex()}
        self.kdf_calls = 0  # scrypt runs, for tests and monitoring
        self.kdf_peak = 0  # the most scrypts that ran at once (at most kdf_slots)
        self._kdf_active = 0
        _read(self.path)  # fail at start-up, with a hint, rather than at the first request
        self._refresh()

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._entries)

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp == self._stamp and stamp is not None:
            return
        self._stamp = stamp
        self._generation += 1
        self._passed = {}
        self._failed.clear()
        try:
            entries = _read(self.path)["keys"]
        except KeyFileError as e:
            log.error("accepting no API key: %s", e)
            self._entries = {}
            return
        self._entries = {str(e["id"]): e for e in entries if isinstance(e, dict) and "id" in e}
        log.info("keys file %s: %d key(s)", self.path, len(self._entries))

    def _mac(self, key: str) -> bytes:
        return hmac.new(self._secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def _remembered(self, mac: bytes) -> tuple[bool, str | None]:
        """(True, id or None) when ``mac``'s outcome is known; call with the lock held."""
        kid = self._passed.get(mac)
        if kid is not None:
            return True, kid
        if mac in self._failed:
            return True, None
        return False, None

    def remembered(self, key: str) -> tuple[bool, str | None]:
        """Without running scrypt: (True, id) or (True, None) when ``key``'s outcome is known,
        (False, None) when only :meth:`verify` can tell. Cheap enough for an event loop."""
        mac = self._mac(key)
        with self._lock:
            self._refresh()
            return self._remembered(mac)

    def verify(self, key: str) -> str | None:
        """The id of ``key`` if the file holds it now, else None; constant-time comparisons."""
        mac = self._mac(key)
        while True:
            with self._lock:
                self._refresh()
                known, kid = self._remembered(mac)
                if known:
                    return kid
                pending = self._pending.get(mac)
                if pending is None:
                    pending = self._pending[mac] = _Pending()
                    break
            pending.done.wait()  # another request is checking this key: share its outcome
        try:
            return self._check(key, mac)
        finally:
            with self._lock:
                if self._pending.get(mac) is pending:
                    del self._pending[mac]
            pending.done.set()

    def _check(self, key: str, mac: bytes) -> str | None:
        """One scrypt for ``key``, against its entry or the dummy; remember the outcome."""
        with self._lock:
            generation = self._generation
            kid = _split(key)
            entry = self._entries.get(kid) if kid is not None else None
        target = entry if entry is not None else self._dummy
        with self._slots:
            with self._lock:
                self.kdf_calls += 1
                self._kdf_active += 1
                self.kdf_peak = max(self.kdf_peak, self._kdf_active)
            try:
                params = {k: int(target[k]) for k in ("n", "r", "p")}
                ok = hmac.compare_digest(
                    _derive(key, bytes.fromhex(target["salt"]), params), bytes.fromhex(target["hash"])
                )
            except (KeyError, ValueError, TypeError, UnicodeEncodeError):
                ok = False
            finally:
                with self._lock:
                    self._kdf_active -= 1
        ok = ok and entry is not None
        with self._lock:
            self._refresh()
            if ok:
                now = self._entries.get(kid) if kid is not None else None
                if now is None or now.get("hash") != entry.get("hash"):  # type: ignore[union-attr]
                    return None  # revoked while we were hashing
            if self._generation != generation:
                return kid if ok else None  # the file changed meanwhile: do not remember
            if ok:
                assert kid is not None
                self._passed[mac] = kid
                return kid
            if self._max_failures:
                self._failed[mac] = None
                while len(self._failed) > self._max_failures:
                    self._failed.popitem(last=False)
            return None
