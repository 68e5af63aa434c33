"""API keys for ``calibkit serve``: a JSON file of salted scrypt hashes.

A key looks like ``ck_<id>_<secret>``: the id (8 hex digits) is public and names the
key in ``calibkit keys list`` and ``revoke``; the secret (256 random bits) is shown
once, by ``create``, and only its salted hash is stored. The server looks the entry
up by id and compares the hash in constant time; a key it has verified once is
remembered (as an HMAC under a per-process secret) until the file changes, so the
scrypt cost is paid once per key, not once per request.

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


class KeyFile:
    """The server's view of a keys file: re-read whenever it changes on disk.

    ``verify(key)`` returns the key's id, or None for a key the file does not hold.
    A missing or unreadable file accepts no key at all (and logs why), so deleting
    or breaking the file never opens the server.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[str, dict[str, Any]] = {}
        self._verified: dict[str, bytes] = {}  # id -> HMAC of the key that passed
        self._secret = secrets.token_bytes(32)
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
        self._verified = {}
        try:
            entries = _read(self.path)["keys"]
        except KeyFileError as e:
            log.error("accepting no API key: %s", e)
            self._entries = {}
            return
        self._entries = {str(e["id"]): e for e in entries if isinstance(e, dict) and "id" in e}
        log.info("keys file %s: %d key(s)", self.path, len(self._entries))

    def verify(self, key: str) -> str | None:
        """The id of ``key`` if the file holds it now, else None; constant-time comparisons."""
        kid = _split(key)
        mac = hmac.new(self._secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        with self._lock:
            self._refresh()
            entry = self._entries.get(kid) if kid is not None else None
            if entry is None:
                return None
            seen = self._verified.get(kid)
            if seen is not None:
                return kid if hmac.compare_digest(seen, mac) else None
        try:
            params = {k: int(entry[k]) for k in ("n", "r", "p")}
            ok = hmac.compare_digest(
                _derive(key, bytes.fromhex(entry["salt"]), params), bytes.fromhex(entry["hash"])
            )
        except (KeyError, ValueError, TypeError, UnicodeEncodeError):
            return None
        if not ok:
            return None
        with self._lock:
            self._refresh()
            now = self._entries.get(kid)
            if now is None or now.get("hash") != entry.get("hash"):
                return None  # revoked while we were hashing
            self._verified[kid] = mac
        return kid
