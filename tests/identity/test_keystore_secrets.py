"""Named secrets sealed in the keystore: round trip, no clear text, tampering."""

import json
import os
from pathlib import Path

import pytest

from identity.errors import (
    KeystoreCorrupt,
    MalformedDocument,
    SecretExists,
    SecretNotFound,
    WrongPassphrase,
)
from identity.keystore import Keystore

FAST_N = 2**10  # scrypt cost for tests only; the default is 2**15
SECRET = bytes.fromhex(
    "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
)


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_secret_round_trip_survives_reopen(tmp_path):
    store = Keystore.create(tmp_path / "ks", "pw", scrypt_n=FAST_N)
    assert not store.has_secret("ledger-account")
    store.put_secret("ledger-account", SECRET)
    assert store.has_secret("ledger-account")
    assert store.get_secret("ledger-account") == SECRET
    reopened = Keystore.open(tmp_path / "ks", "pw")
    assert reopened.get_secret("ledger-account") == SECRET
    # Secrets and credentials live apart: no credential appears.
    assert reopened.list_credentials() == []
    reopened.delete_secret("ledger-account")
    assert not reopened.has_secret("ledger-account")
    with pytest.raises(SecretNotFound, match="ledger-account"):
        reopened.get_secret("ledger-account")
    with pytest.raises(SecretNotFound):
        reopened.delete_secret("ledger-account")


def test_secret_is_not_stored_in_clear_and_file_is_private(tmp_path):
    store = Keystore.create(tmp_path, "pw", scrypt_n=FAST_N)
    store.put_secret("ledger-account", SECRET)
    blob = _all_bytes(tmp_path)
    assert SECRET not in blob
    assert SECRET.hex().encode() not in blob
    assert SECRET.hex().upper().encode() not in blob
    path = tmp_path / "secrets" / "ledger-account.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_second_put_is_refused_unless_replacing(tmp_path):
    store = Keystore.create(tmp_path, "pw", scrypt_n=FAST_N)
    store.put_secret("k", SECRET)
    with pytest.raises(SecretExists, match="'k'"):
        store.put_secret("k", b"other")
    assert store.get_secret("k") == SECRET
    store.put_secret("k", b"other", replace=True)
    assert store.get_secret("k") == b"other"


def test_wrong_passphrase_cannot_read_secrets(tmp_path):
    Keystore.create(tmp_path, "right", scrypt_n=FAST_N).put_secret("k", SECRET)
    with pytest.raises(WrongPassphrase):
        Keystore.open(tmp_path, "wrong")


def test_secret_moved_to_another_name_fails_its_tag(tmp_path):
    store = Keystore.create(tmp_path, "pw", scrypt_n=FAST_N)
    store.put_secret("a", SECRET)
    folder = tmp_path / "secrets"
    (folder / "b.json").write_bytes((folder / "a.json").read_bytes())
    with pytest.raises(KeystoreCorrupt, match="integrity"):
        store.get_secret("b")


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: {
            **d,
            "secret": {**d["secret"], "tag": "AAAA" + d["secret"]["tag"][4:]},
        },
        lambda d: {**d, "secret": "not an object"},
        lambda d: {"version": 1},
        lambda d: {**d, "version": 99},
    ],
    ids=["tag flipped", "not an object", "no secret", "unknown version"],
)
def test_damaged_secret_is_reported_never_rewritten(tmp_path, damage):
    store = Keystore.create(tmp_path, "pw", scrypt_n=FAST_N)
    store.put_secret("k", SECRET)
    path = tmp_path / "secrets" / "k.json"
    path.write_text(json.dumps(damage(json.loads(path.read_text()))))
    before = path.read_bytes()
    with pytest.raises(KeystoreCorrupt) as info:
        store.get_secret("k")
    assert SECRET.hex() not in str(info.value)
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", ["", "../key", "a/b", "A", "-x", "x" * 65, 5])
def test_bad_secret_names_are_refused(tmp_path, name):
    store = Keystore.create(tmp_path, "pw", scrypt_n=FAST_N)
    with pytest.raises(SecretNotFound, match="not a secret name"):
        store.put_secret(name, SECRET)
    with pytest.raises(SecretNotFound, match="not a secret name"):
        store.get_secret(name)
    assert not (tmp_path / "secrets").exists() or not os.listdir(tmp_path / "secrets")


@pytest.mark.parametrize("value", [b"", "text", b"x" * (64 * 1024 + 1)])
def test_bad_secret_values_are_refused(tmp_path, value):
    store = Keystore.create(tmp_path, "pw", scrypt_n=FAST_N)
    with pytest.raises(MalformedDocument, match="1 to 65536 bytes"):
        store.put_secret("k", value)
    assert not store.has_secret("k")
