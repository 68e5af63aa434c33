"""The keys file of calibkit serve: salted hashes only, constant-time checks, re-read on change."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

from calibkit.server.keys import KeyFile, KeyFileError, create_key, list_keys, revoke_key


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calibkit.cli", "keys", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_the_file_holds_salted_hashes_never_the_key(tmp_path):
    path = tmp_path / "keys.json"
    k1, e1 = create_key(path, name="one")
    k2, e2 = create_key(path, name="two")
    text = path.read_text()
    assert k1 not in text and k2 not in text
    assert k1.split("_", 2)[2] not in text
    entries = json.loads(text)["keys"]
    assert [e["id"] for e in entries] == [e1["id"], e2["id"]]
    assert entries[0]["salt"] != entries[1]["salt"]
    assert entries[0]["hash"] != entries[1]["hash"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(e1) == {"id", "name", "created"}


def test_verify_accepts_exactly_the_keys_in_the_file(tmp_path):
    path = tmp_path / "keys.json"
    key, entry = create_key(path)
    kf = KeyFile(path)
    assert kf.verify(key) == entry["id"]
    assert kf.verify(key) == entry["id"]  # the remembered path
    head, kid, secret = key.split("_", 2)
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert kf.verify(f"{head}_{kid}_{flipped}") is None
    assert kf.verify(f"{head}_{'0' * 8}_{secret}") is None  # unknown id
    for junk in ("", "ck", "Bearer " + key, key + "x", "ck__x", "sk-" + secret):
        assert kf.verify(junk) is None


def test_a_revoked_key_stops_working_without_a_new_keyfile(tmp_path):
    path = tmp_path / "keys.json"
    k1, e1 = create_key(path, name="keep")
    k2, e2 = create_key(path, name="drop")
    kf = KeyFile(path)
    assert kf.verify(k1) and kf.verify(k2)  # both remembered now
    assert revoke_key(path, e2["id"])["name"] == "drop"
    assert kf.verify(k2) is None
    assert kf.verify(k1) == e1["id"]
    k3, e3 = create_key(path)  # and a new one works at once
    assert kf.verify(k3) == e3["id"]
    assert [e["id"] for e in list_keys(path)] == [e1["id"], e3["id"]]


def test_a_deleted_or_broken_file_accepts_no_key(tmp_path):
    path = tmp_path / "keys.json"
    key, _ = create_key(path)
    kf = KeyFile(path)
    assert kf.verify(key)
    path.write_text("{not json")
    assert kf.verify(key) is None
    path.unlink()
    assert kf.verify(key) is None and len(kf) == 0


def test_missing_or_foreign_files_fail_with_a_hint(tmp_path):
    with pytest.raises(KeyFileError, match="calibkit keys create --keys-file"):
        KeyFile(tmp_path / "absent.json")
    other = tmp_path / "other.json"
    other.write_text('{"keys": []}')
    with pytest.raises(KeyFileError, match="not a calibkit keys file"):
        list_keys(other)
    create_key(tmp_path / "k.json")
    with pytest.raises(KeyError, match="no key with id 'nope'"):
        revoke_key(tmp_path / "k.json", "nope")


def test_cli_create_prints_the_key_once_alone_on_the_last_line(tmp_path):
    path = tmp_path / "keys.json"
    r = _cli("create", "--keys-file", str(path), "--name", "laptop")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.rstrip("\n").split("\n")
    key = lines[-1]
    assert key.startswith("ck_") and " " not in key
    assert sum(key in line for line in lines) == 1
    assert KeyFile(path).verify(key)

    listed = _cli("list", "--keys-file", str(path))
    assert listed.returncode == 0
    kid = key.split("_")[1]
    assert kid in listed.stdout and "laptop" in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout

    gone = _cli("revoke", kid, "--keys-file", str(path))
    assert gone.returncode == 0 and kid in gone.stdout
    assert KeyFile(path).verify(key) is None
    assert kid not in _cli("list", "--keys-file", str(path)).stdout

    again = _cli("revoke", kid, "--keys-file", str(path))
    assert again.returncode == 1 and f"no key with id '{kid}'" in again.stderr
    missing = _cli("list", "--keys-file", str(tmp_path / "none.json"))
    assert missing.returncode == 1 and "calibkit keys create" in missing.stderr


def _wrong_secret(key: str) -> str:
    head, kid, secret = key.split("_", 2)
    return f"{head}_{kid}_{secret[:-1] + ('A' if secret[-1] != 'A' else 'B')}"


def test_a_wrong_secret_costs_what_an_unknown_id_costs_and_each_failure_once(tmp_path):
    path = tmp_path / "keys.json"
    key, entry = create_key(path)
    kf = KeyFile(path)
    unknown = f"ck_{'0' * 8}_{key.split('_', 2)[2]}"
    # Each kind of wrong key runs exactly one scrypt the first time (an unknown id, or a
    # malformed key, is checked against a dummy hash), then none: the outcome is remembered.
    for wrong in (_wrong_secret(key), unknown, "not-a-key"):
        before = kf.kdf_calls
        for _ in range(5):
            assert kf.verify(wrong) is None
            assert kf.remembered(wrong) == (True, None)
        assert kf.kdf_calls == before + 1, wrong
    assert kf.remembered(key) == (False, None)  # never checked yet: only verify can tell
    assert kf.verify(key) == entry["id"] and kf.remembered(key) == (True, entry["id"])
    assert kf.kdf_calls == 4


def test_concurrent_first_requests_with_one_key_share_one_scrypt(tmp_path):
    import threading

    path = tmp_path / "keys.json"
    key, entry = create_key(path)
    kf = KeyFile(path)
    start = threading.Barrier(32)
    got: list = []

    def check() -> None:
        start.wait(60)
        got.append(kf.verify(key))

    threads = [threading.Thread(target=check) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == [entry["id"]] * 32 and kf.kdf_calls == 1


def test_at_most_kdf_slots_scrypts_run_at_once(tmp_path):
    import threading

    path = tmp_path / "keys.json"
    keys = [create_key(path)[0] for _ in range(8)]
    kf = KeyFile(path, kdf_slots=2)
    start = threading.Barrier(len(keys))
    got: list = []

    def check(key: str) -> None:
        start.wait(60)
        got.append(kf.verify(key))

    threads = [threading.Thread(target=check, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert None not in got and len(got) == 8
    assert kf.kdf_calls == 8 and 1 <= kf.kdf_peak <= 2


def test_remembered_failures_are_bounded_and_forgotten_when_the_file_changes(tmp_path):
    path = tmp_path / "keys.json"
    key, entry = create_key(path)
    kf = KeyFile(path, max_failures=2)
    wrong = [f"ck_{i:08x}_nope" for i in range(3)]
    for w in wrong:
        assert kf.verify(w) is None
    assert [kf.remembered(w)[0] for w in wrong] == [False, True, True]  # the oldest fell out
    assert kf.verify(key) == entry["id"]
    revoke_key(path, entry["id"])
    assert kf.remembered(key) == (False, None)  # re-read: nothing remembered from before
    assert kf.verify(key) is None
