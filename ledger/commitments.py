"""Salted commitments: how a consent or erasure is logged without personal data.

A commitment is ``SHA-256(DOMAIN ‖ len(salt) ‖ salt ‖ len(p) ‖ p ‖ purpose)``
where ``p`` is the UTF-8 pseudonym, lengths are 4-byte big-endian and the
purpose code is 2 bytes big-endian. The length prefixes make the encoding
injective (no two (salt, pseudonym) pairs share bytes), and the domain tag
keeps these digests apart from every other SHA-256 use in the project.

Crypto-shredding: the site keeps the 32-byte random salt in its own store and
only the commitment goes on chain. Erasing a patient deletes the data *and the
salt*; without the salt, nobody (the site included) can recompute the
commitment from the pseudonym, and 256 bits of salt make guessing it hopeless,
so the commitment left on the immutable ledger can no longer be linked to
anyone. That is why the salt must never be logged, copied to the ledger or put
in an error message.
"""

from __future__ import annotations

import hmac
import secrets
from hashlib import sha256

from ledger.errors import MalformedDigest

DOMAIN = b"paroma-med/consent-commitment/v1\x00"
"""Domain separation tag hashed before every commitment."""

SALT_BYTES = 32
"""Salt length in bytes (256 bits)."""

MAX_PURPOSE = 0xFFFF
"""Purpose codes are uint16 on chain."""


def new_salt() -> bytes:
    """A fresh 32-byte salt from the OS's CSPRNG (``secrets``)."""
    return secrets.token_bytes(SALT_BYTES)


def commit(salt: bytes, pseudonym: str, purpose: int) -> bytes:
    """The 32-byte commitment to ``(salt, pseudonym, purpose)``.

    Args:
        salt: the secret salt, at least 16 bytes (use :func:`new_salt`).
        pseudonym: the site's pseudonym of the patient (never a clear identifier).
        purpose: purpose code, 0..65535.

    Raises:
        MalformedDigest: the salt is too short, the pseudonym empty or the
            purpose out of range (the message never repeats the salt).
    """
    if not isinstance(salt, bytes | bytearray) or len(salt) < 16:
        raise MalformedDigest("salt: expected at least 16 random bytes")
    if not isinstance(pseudonym, str) or not pseudonym:
        raise MalformedDigest("pseudonym: expected a non-empty string")
    if not isinstance(purpose, int) or not 0 <= purpose <= MAX_PURPOSE:
        raise MalformedDigest(f"purpose: expected an integer 0..{MAX_PURPOSE}")
    p = pseudonym.encode("utf-8")
    h = sha256(DOMAIN)
    h.update(len(salt).to_bytes(4, "big") + bytes(salt))
    h.update(len(p).to_bytes(4, "big") + p)
    h.update(purpose.to_bytes(2, "big"))
    return h.digest()


def verify_commitment(
    commitment: bytes | str, salt: bytes, pseudonym: str, purpose: int
) -> bool:
    """True if ``commitment`` was made from these inputs (constant-time compare).

    Raises:
        MalformedDigest: the commitment is not 32 bytes / 64 hex digits.
    """
    expected = commit(salt, pseudonym, purpose)
    return hmac.compare_digest(parse_commitment(commitment), expected)


def parse_commitment(value: bytes | bytearray | str, name: str = "commitment") -> bytes:
    """A 32-byte digest from bytes or ``0x``-prefixed (or bare) hex.

    Used for every commitment, digest and id before a transaction is built,
    so a malformed value never reaches the chain.

    Raises:
        MalformedDigest: wrong length, not hex, or another type; the message
            names ``name``.
    """
    if isinstance(value, bytes | bytearray):
        if len(value) != 32:
            raise MalformedDigest(f"{name}: expected 32 bytes, got {len(value)}")
        return bytes(value)
    if isinstance(value, str):
        text = value[2:] if value[:2] in ("0x", "0X") else value
        if len(text) != 64:
            raise MalformedDigest(
                f"{name}: expected 64 hex digits (32 bytes), got {len(text)} characters"
            )
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise MalformedDigest(f"{name}: expected hex digits") from None
    raise MalformedDigest(f"{name}: expected 32 bytes or a hex string")
