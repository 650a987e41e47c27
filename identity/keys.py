"""Ed25519 signing keys (RFC 8032) on pycryptodome, named by their did:key.

A site's libp2p peer key and its DID key are the same Ed25519 key pair (see
docs/identity.md), so this class is what the node loads from its keystore.
"""

from __future__ import annotations

import logging

from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

from identity.errors import InvalidKey

logger = logging.getLogger(__name__)

SEED_LENGTH = 32  # bytes, RFC 8032 §5.1.5 private key
PUBLIC_KEY_LENGTH = 32  # bytes, RFC 8032 §5.1.2 encoded point
SIGNATURE_LENGTH = 64  # bytes, RFC 8032 §5.1.6


class SigningKey:
    """An Ed25519 private key; its public half names it as a ``did:key``."""

    def __init__(self, key: ECC.EccKey) -> None:
        # _key: a private Ed25519 EccKey (has a 32-byte seed).
        self._key = key
        self._public = key.public_key().export_key(format="raw")

    @classmethod
    def generate(cls) -> SigningKey:
        """Make a new key from the operating system's random source."""
        return cls(ECC.generate(curve="Ed25519"))

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """Rebuild a key from its 32-byte RFC 8032 seed."""
        if not isinstance(seed, bytes) or len(seed) != SEED_LENGTH:
            raise InvalidKey(f"an Ed25519 seed must be {SEED_LENGTH} bytes")
        # pycryptodome stubs type seed as str|int; it takes the 32 seed bytes.
        return cls(ECC.construct(curve="Ed25519", seed=seed))  # type: ignore[arg-type]

    @property
    def seed(self) -> bytes:
        """The 32-byte private seed: keep it secret, never log it."""
        seed: bytes = self._key.seed
        return seed

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte raw public key (RFC 8032 §5.1.2 encoding)."""
        return bytes(self._public)

    @property
    def did(self) -> str:
        """This key's ``did:key`` identifier."""
        from identity.did import did_key_from_public_key

        return did_key_from_public_key(self._public)

    @property
    def verification_method(self) -> str:
        """The did:key verification method id, ``did:key:z...#z...``."""
        did = self.did
        return f"{did}#{did.removeprefix('did:key:')}"

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` (pure Ed25519, RFC 8032 §5.1.6); 64 bytes."""
        signature: bytes = eddsa.new(self._key, "rfc8032").sign(message)
        return signature

    def __repr__(self) -> str:
        # Never print the seed.
        return f"SigningKey({self.did})"


def verify_signature(public_bytes: bytes, message: bytes, signature: bytes) -> bool:
    """Check an Ed25519 signature; False for any bad key, length or signature."""
    if len(public_bytes) != PUBLIC_KEY_LENGTH or len(signature) != SIGNATURE_LENGTH:
        return False
    try:
        public = eddsa.import_public_key(public_bytes)
        eddsa.new(public, "rfc8032").verify(message, signature)
    except ValueError:
        logger.debug("Ed25519 signature did not verify")
        return False
    return True
