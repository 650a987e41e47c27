"""The encrypted keystore: round trip, wrong passphrase, corruption."""

import json
from pathlib import Path

import pytest

from identity.errors import (
    CredentialNotFound,
    KeystoreCorrupt,
    KeystoreExists,
    KeystoreMissing,
    WrongPassphrase,
)
from identity.keys import SigningKey
from identity.keystore import Keystore

from .conftest import clinician_credential

FAST_N = 2**10  # scrypt cost for tests only; the default is 2**15


def _snapshot(folder: Path) -> dict[Path, bytes]:
    return {
        p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_round_trip(tmp_path, issuer, holder):
    store = Keystore.create(
        tmp_path / "w", "correct horse", signing_key=holder, scrypt_n=FAST_N
    )
    vc = clinician_credential(issuer, holder)
    cid = store.add_credential(vc)
    assert store.add_credential(vc) == cid
    reopened = Keystore.open(tmp_path / "w", "correct horse")
    assert reopened.signing_key.seed == holder.seed
    assert reopened.list_credentials() == [(cid, vc)]
    assert reopened.get_credential(cid) == vc
    reopened.delete_credential(cid)
    assert reopened.list_credentials() == []
    with pytest.raises(CredentialNotFound):
        reopened.get_credential(cid)


def test_secrets_are_not_stored_in_clear(tmp_path, issuer, holder):
    store = Keystore.create(tmp_path, "pw", signing_key=holder, scrypt_n=FAST_N)
    store.add_credential(clinician_credential(issuer, holder))
    blob = b"".join(_snapshot(tmp_path).values())
    assert holder.seed not in blob and holder.seed.hex().encode() not in blob
    assert b"cardiologist" not in blob


def test_wrong_passphrase_leaves_keystore_untouched(tmp_path):
    Keystore.create(tmp_path, "right", scrypt_n=FAST_N)
    before = _snapshot(tmp_path)
    with pytest.raises(WrongPassphrase) as info:
        Keystore.open(tmp_path, "hunter2")
    assert "hunter2" not in str(info.value)
    assert _snapshot(tmp_path) == before


def _flip_ciphertext(path):
    document = json.loads(path.read_text())
    text = document["seed"]["ciphertext"]
    document["seed"]["ciphertext"] = ("B" if text[0] == "A" else "A") + text[1:]
    path.write_text(json.dumps(document))


CORRUPTIONS = [
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:40])),
    ("not an object", lambda p: p.write_text("[1, 2]")),
    (
        "missing salt",
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "kdf": {}})),
    ),
    ("ciphertext flipped", _flip_ciphertext),
]


@pytest.mark.parametrize(
    ("name", "damage"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS]
)
def test_corrupt_keystore_is_reported_never_overwritten(tmp_path, name, damage):
    Keystore.create(tmp_path, "pw", scrypt_n=FAST_N)
    damage(tmp_path / "key.json")
    before = _snapshot(tmp_path)
    with pytest.raises(KeystoreCorrupt):
        Keystore.open(tmp_path, "pw")
    with pytest.raises(KeystoreExists):
        Keystore.create(tmp_path, "pw", scrypt_n=FAST_N)
    assert _snapshot(tmp_path) == before


def test_corrupt_credential_is_reported(tmp_path, issuer, holder):
    store = Keystore.create(tmp_path, "pw", signing_key=holder, scrypt_n=FAST_N)
    cid = store.add_credential(clinician_credential(issuer, holder))
    path = tmp_path / "credentials" / f"{cid}.json"
    # A sealed credential moved to another id fails its associated data.
    other = tmp_path / "credentials" / ("0" * 16 + ".json")
    other.write_bytes(path.read_bytes())
    with pytest.raises(KeystoreCorrupt):
        store.get_credential("0" * 16)


def test_missing_keystore_and_bad_ids(tmp_path):
    with pytest.raises(KeystoreMissing):
        Keystore.open(tmp_path / "none", "pw")
    store = Keystore.create(
        tmp_path, "pw", signing_key=SigningKey.generate(), scrypt_n=FAST_N
    )
    with pytest.raises(CredentialNotFound, match="16 hex digits"):
        store.get_credential("../key")


def test_no_temp_files_left(tmp_path, issuer, holder):
    store = Keystore.create(tmp_path, "pw", signing_key=holder, scrypt_n=FAST_N)
    store.add_credential(clinician_credential(issuer, holder))
    assert not [p for p in tmp_path.rglob("*.tmp")]
