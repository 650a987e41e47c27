"""An encrypted-at-rest keystore folder: one signing key and its credentials.

Layout::

    DIR/key.json                 KDF parameters, passphrase check, sealed seed
    DIR/credentials/<id>.json    one sealed credential each
    DIR/secrets/<name>.json      one sealed named secret each (e.g. the
                                 site's ledger account key)

The passphrase is stretched with scrypt (RFC 7914; N=2**15, r=8, p=1: about
32 MiB and 0.1 s, the interactive-login setting of the scrypt paper) into a
256-bit key. Each secret is sealed with AES-256-GCM (NIST SP 800-38D) under a
fresh 96-bit nonce, with the file's role (and the credential's id or the
secret's name) as associated data so sealed blobs cannot be swapped between
files. A separate check value, derived from the key
by SHA-256, tells a wrong passphrase (check differs) from a damaged file
(check matches, tag fails): the former is refused, the latter reported, and
neither rewrites anything. Every write is atomic: temp file, fsync, rename,
fsync of the folder.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import jcs
from Crypto.Cipher import AES
from Crypto.Protocol.KDF import scrypt
from Crypto.Random import get_random_bytes

from identity.errors import (
    CredentialNotFound,
    KeystoreCorrupt,
    KeystoreExists,
    KeystoreMissing,
    MalformedDocument,
    SecretExists,
    SecretNotFound,
    WrongPassphrase,
)
from identity.keys import SigningKey

logger = logging.getLogger(__name__)

KEY_FILE = "key.json"
CREDENTIALS_DIR = "credentials"
SECRETS_DIR = "secrets"
FORMAT_VERSION = 1
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
_SECRET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_SECRET_BYTES = 64 * 1024


def credential_id(credential: dict[str, Any]) -> str:
    """The local id of a credential: 16 hex digits of SHA-256 of its JCS form."""
    return hashlib.sha256(jcs.canonicalize(credential)).hexdigest()[:16]


class Keystore:
    """An opened keystore: its signing key and sealed credentials on disk."""

    def __init__(self, path: Path, key: bytes, signing_key: SigningKey) -> None:
        # path: the keystore folder; key: the scrypt-derived AES key (secret).
        self.path = path
        self._key = key
        self.signing_key = signing_key

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        passphrase: str,
        *,
        signing_key: SigningKey | None = None,
        scrypt_n: int | None = None,
    ) -> Keystore:
        """Create a keystore folder with a new (or the given) signing key.

        Args:
            path: the keystore folder (created if absent).
            passphrase: the secret the key is sealed under.
            signing_key: the key to keep (default: a new one).
            scrypt_n: scrypt cost (default ``SCRYPT_N``; lower only in tests).

        Raises KeystoreExists if ``path`` already holds a keystore.
        """
        scrypt_n = scrypt_n or SCRYPT_N
        folder = Path(path)
        if (folder / KEY_FILE).exists():
            raise KeystoreExists(f"{folder} already holds a keystore")
        if not passphrase:
            raise MalformedDocument("the keystore passphrase must not be empty")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CREDENTIALS_DIR).mkdir(exist_ok=True)
        signing_key = signing_key or SigningKey.generate()
        salt = get_random_bytes(16)
        key = _derive(passphrase, salt, scrypt_n)
        document = {
            "version": FORMAT_VERSION,
            "did": signing_key.did,
            "kdf": {
                "name": "scrypt",
                "salt": _b64(salt),
                "n": scrypt_n,
                "r": SCRYPT_R,
                "p": SCRYPT_P,
            },
            "check": _b64(_check_value(key)),
            "seed": _seal(key, signing_key.seed, b"paroma-keystore:seed"),
        }
        _atomic_write(folder / KEY_FILE, _dump(document))
        logger.info("created keystore for %s", signing_key.did)
        return cls(folder, key, signing_key)

    @classmethod
    def open(cls, path: str | os.PathLike[str], passphrase: str) -> Keystore:
        """Open an existing keystore; WrongPassphrase or KeystoreCorrupt if not."""
        folder = Path(path)
        key_path = folder / KEY_FILE
        if not key_path.exists():
            raise KeystoreMissing(f"no keystore at {folder} (run 'paroma-wallet init')")
        document = _load_json(key_path)
        try:
            kdf = document["kdf"]
            if document["version"] != FORMAT_VERSION or kdf["name"] != "scrypt":
                raise KeystoreCorrupt(f"{key_path}: unsupported keystore format")
            salt = _unb64(kdf["salt"])
            n = int(kdf["n"])
            check = _unb64(document["check"])
            sealed_seed = document["seed"]
            did = str(document["did"])
        except (KeyError, TypeError, ValueError) as exc:
            raise KeystoreCorrupt(f"{key_path} is damaged (missing {exc})") from None
        if n < 2**10 or n > 2**20 or n & (n - 1):
            raise KeystoreCorrupt(f"{key_path}: scrypt N must be a power of 2")
        key = _derive(passphrase, salt, n)
        if not hmac.compare_digest(_check_value(key), check):
            raise WrongPassphrase(f"wrong passphrase for the keystore at {folder}")
        seed = _open_sealed(key, sealed_seed, b"paroma-keystore:seed", key_path)
        signing_key = SigningKey.from_seed(seed)
        if signing_key.did != did:
            raise KeystoreCorrupt(f"{key_path}: the key does not match its DID")
        return cls(folder, key, signing_key)

    @property
    def did(self) -> str:
        """The DID of the keystore's signing key."""
        return self.signing_key.did

    def add_credential(self, credential: dict[str, Any]) -> str:
        """Store a credential (sealed); returns its local id. Idempotent."""
        if not isinstance(credential, dict):
            raise MalformedDocument("a credential must be a JSON object")
        cid = credential_id(credential)
        sealed = _seal(self._key, _dump(credential), _aad(cid))
        body = _dump({"version": FORMAT_VERSION, "credential": sealed})
        _atomic_write(self._credential_path(cid), body)
        logger.info("stored credential %s", cid)
        return cid

    def list_credentials(self) -> list[tuple[str, dict[str, Any]]]:
        """Every stored credential as ``(id, credential)``, sorted by id."""
        folder = self.path / CREDENTIALS_DIR
        if not folder.exists():
            return []
        ids = sorted(p.stem for p in folder.glob("*.json") if _ID_PATTERN.match(p.stem))
        return [(cid, self.get_credential(cid)) for cid in ids]

    def get_credential(self, cid: str) -> dict[str, Any]:
        """The stored credential ``cid``; CredentialNotFound if absent."""
        path = self._credential_path(cid)
        if not path.exists():
            raise CredentialNotFound(f"no credential {cid!r} in {self.path}")
        document = _load_json(path)
        try:
            sealed = document["credential"]
        except (KeyError, TypeError):
            raise KeystoreCorrupt(f"{path} is damaged (no sealed credential)") from None
        plain = _open_sealed(self._key, sealed, _aad(cid), path)
        credential: dict[str, Any] = json.loads(plain)
        return credential

    def delete_credential(self, cid: str) -> None:
        """Remove the stored credential ``cid``."""
        path = self._credential_path(cid)
        if not path.exists():
            raise CredentialNotFound(f"no credential {cid!r} in {self.path}")
        path.unlink()
        _fsync_dir(path.parent)

    def put_secret(self, name: str, value: bytes, *, replace: bool = False) -> None:
        """Seal a named secret (a key that is not the DID key) into the keystore.

        The value is sealed like the seed, under the keystore's AES-GCM key,
        with the name as associated data (a sealed file renamed to another
        secret's name fails its tag).

        Args:
            name: 1-64 characters, lowercase letters, digits, ``-`` and ``_``,
                starting with a letter or digit (it becomes a file name).
            value: the secret, 1 byte to 64 KiB.
            replace: overwrite a stored secret of that name (default: refuse,
                so a second ``init`` cannot silently lose a key).

        Raises:
            SecretNotFound: ``name`` is not a valid secret name.
            MalformedDocument: ``value`` is not bytes of 1 B to 64 KiB.
            SecretExists: a secret of that name is stored and ``replace`` is False.
        """
        path = self._secret_path(name)
        if not isinstance(value, bytes | bytearray) or not (
            0 < len(value) <= MAX_SECRET_BYTES
        ):
            raise MalformedDocument(
                f"secret {name!r}: expected 1 to {MAX_SECRET_BYTES} bytes"
            )
        if path.exists() and not replace:
            raise SecretExists(f"secret {name!r} is already stored in {self.path}")
        path.parent.mkdir(mode=0o700, exist_ok=True)
        sealed = _seal(self._key, bytes(value), _secret_aad(name))
        _atomic_write(path, _dump({"version": FORMAT_VERSION, "secret": sealed}))
        logger.info("stored secret %s", name)

    def get_secret(self, name: str) -> bytes:
        """The stored secret ``name``; SecretNotFound if absent."""
        path = self._secret_path(name)
        if not path.exists():
            raise SecretNotFound(f"no secret {name!r} in {self.path}")
        document = _load_json(path)
        if document.get("version") != FORMAT_VERSION or "secret" not in document:
            raise KeystoreCorrupt(f"{path} is damaged (no sealed secret)")
        return _open_sealed(self._key, document["secret"], _secret_aad(name), path)

    def has_secret(self, name: str) -> bool:
        """True if a secret named ``name`` is stored (it is not opened)."""
        return self._secret_path(name).exists()

    def delete_secret(self, name: str) -> None:
        """Remove the stored secret ``name``; SecretNotFound if absent."""
        path = self._secret_path(name)
        if not path.exists():
            raise SecretNotFound(f"no secret {name!r} in {self.path}")
        path.unlink()
        _fsync_dir(path.parent)

    def _secret_path(self, name: str) -> Path:
        if not isinstance(name, str) or not _SECRET_NAME.match(name):
            raise SecretNotFound(
                f"{name!r} is not a secret name (1-64 of a-z, 0-9, '-', '_')"
            )
        return self.path / SECRETS_DIR / f"{name}.json"

    def _credential_path(self, cid: str) -> Path:
        if not isinstance(cid, str) or not _ID_PATTERN.match(cid):
            raise CredentialNotFound(f"{cid!r} is not a credential id (16 hex digits)")
        return self.path / CREDENTIALS_DIR / f"{cid}.json"


def _aad(cid: str) -> bytes:
    return f"paroma-keystore:credential:{cid}".encode()


def _secret_aad(name: str) -> bytes:
    return f"paroma-keystore:secret:{name}".encode()


def _derive(passphrase: str, salt: bytes, n: int) -> bytes:
    # pycryptodome's stubs say str, but scrypt takes (and returns) bytes; the
    # passphrase is UTF-8 encoded here (its own str handling would be Latin-1).
    password: Any = passphrase.encode("utf-8")
    salt_value: Any = salt
    key = scrypt(password, salt_value, 32, N=n, r=SCRYPT_R, p=SCRYPT_P)
    return bytes(key)  # type: ignore[arg-type]


def _check_value(key: bytes) -> bytes:
    return hashlib.sha256(b"paroma-keystore:check:" + key).digest()


def _seal(key: bytes, plain: bytes, aad: bytes) -> dict[str, str]:
    nonce = get_random_bytes(12)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    cipher.update(aad)
    ciphertext, tag = cipher.encrypt_and_digest(plain)
    return {"nonce": _b64(nonce), "ciphertext": _b64(ciphertext), "tag": _b64(tag)}


def _open_sealed(key: bytes, sealed: object, aad: bytes, path: Path) -> bytes:
    try:
        if not isinstance(sealed, dict):
            raise TypeError("sealed value is not an object")
        cipher = AES.new(key, AES.MODE_GCM, nonce=_unb64(sealed["nonce"]))
        cipher.update(aad)
        plain: bytes = cipher.decrypt_and_verify(
            _unb64(sealed["ciphertext"]), _unb64(sealed["tag"])
        )
    except (KeyError, TypeError, ValueError):
        raise KeystoreCorrupt(
            f"{path} is damaged: it fails its integrity check (left untouched)"
        ) from None
    return plain


def _load_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KeystoreCorrupt(f"{path} is damaged: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise KeystoreCorrupt(f"{path} is damaged: not a JSON object")
    return document


def _dump(value: object) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(text, validate=True)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old or the new file."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Public atomic write (temp file, fsync, rename) for the wallet's files."""
    _atomic_write(Path(path), data)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
