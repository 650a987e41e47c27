"""Bitstring Status List v1.0: revocation and suspension of credentials.

An issuer keeps one bitstring per purpose; a credential's ``credentialStatus``
points at one bit. The list is published as a signed
BitstringStatusListCredential whose ``encodedList`` is the GZIP-compressed
bitstring in base64url multibase (spec §2.1, §3.1). Index 0 is the left-most
(most significant) bit of the first byte (spec §3.1 step 3).

Herd privacy (spec §6.1): a verifier fetching the list learns nothing about
which credential it checks, provided the list is large (at least 131,072
entries, the spec's minimum) and indexes are allocated at random rather than
in issuance order.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import logging
import secrets
import zlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import jcs

from identity.contexts import CREDENTIALS_V2
from identity.errors import MalformedDocument, StatusListError
from identity.keys import SigningKey
from identity.proofs import Cryptosuite, ProofPurpose, add_proof, format_datetime

logger = logging.getLogger(__name__)

MIN_SIZE = 131_072  # entries (bits): spec §6.1 herd privacy minimum, 16 KiB
MAX_SIZE = 1 << 26  # entries: a sanity bound on decoded lists (8 MiB)


class StatusPurpose(StrEnum):
    """What a set bit means (spec §2.1 statusPurpose)."""

    REVOCATION = "revocation"
    SUSPENSION = "suspension"


def _purpose(value: object) -> StatusPurpose:
    try:
        return StatusPurpose(str(value))
    except ValueError:
        raise StatusListError(
            f"status purpose {value!r} is not supported (revocation, suspension)"
        ) from None


class StatusList:
    """One issuer's bitstring of credential statuses, of a single purpose."""

    def __init__(
        self,
        issuer_did: str,
        list_id: str,
        purpose: StatusPurpose,
        bits: bytearray,
        allocated: set[int] | None = None,
    ) -> None:
        # list_id: URL of the BitstringStatusListCredential; the VC's id.
        self.issuer_did = issuer_did
        self.list_id = list_id
        self.purpose = purpose
        # _bits: size/8 bytes, bit i is (byte i//8) >> (7 - i%8).
        self._bits = bits
        # _allocated: indexes handed to credentials; never handed out twice.
        self._allocated = allocated if allocated is not None else set()

    @classmethod
    def create(
        cls,
        issuer: SigningKey,
        list_id: str,
        purpose: str = StatusPurpose.REVOCATION,
        size: int = MIN_SIZE,
    ) -> StatusList:
        """A new, all-clear list of ``size`` entries (a multiple of 8, >= 131,072)."""
        if size < MIN_SIZE or size % 8 or size > MAX_SIZE:
            raise StatusListError(
                f"status list size {size} must be a multiple of 8 between "
                f"{MIN_SIZE} and {MAX_SIZE}"
            )
        if not list_id.startswith(("https://", "http://", "urn:")):
            raise StatusListError(f"status list id {list_id!r} must be a URL")
        return cls(issuer.did, list_id, _purpose(purpose), bytearray(size // 8))

    @property
    def size(self) -> int:
        """The number of entries (bits)."""
        return len(self._bits) * 8

    def allocate(self) -> int:
        """A fresh random index for a new credential (random for herd privacy)."""
        if len(self._allocated) >= self.size:
            raise StatusListError(f"status list {self.list_id} is full")
        while True:
            index = secrets.randbelow(self.size)
            if index not in self._allocated:
                self._allocated.add(index)
                return index

    def entry(self, index: int) -> dict[str, Any]:
        """The ``credentialStatus`` object for the credential at ``index``."""
        self._check(index)
        return {
            "id": f"{self.list_id}#{index}",
            "type": "BitstringStatusListEntry",
            "statusPurpose": self.purpose.value,
            "statusListIndex": str(index),
            "statusListCredential": self.list_id,
        }

    def revoke(self, index: int) -> None:
        """Set the bit: revoked (or suspended, for a suspension list)."""
        self._check(index)
        self._bits[index // 8] |= 0x80 >> (index % 8)

    def suspend(self, index: int) -> None:
        """Set the bit of a suspension list."""
        if self.purpose is not StatusPurpose.SUSPENSION:
            raise StatusListError(f"{self.list_id} is a {self.purpose} list")
        self.revoke(index)

    def reinstate(self, index: int) -> None:
        """Clear a suspension; revocation is final (spec §2.1) and refused."""
        if self.purpose is not StatusPurpose.SUSPENSION:
            raise StatusListError(f"{self.list_id}: a revocation cannot be undone")
        self._check(index)
        self._bits[index // 8] &= ~(0x80 >> (index % 8)) & 0xFF

    def is_set(self, index: int) -> bool:
        """Whether the bit at ``index`` is set."""
        self._check(index)
        return bool(self._bits[index // 8] & (0x80 >> (index % 8)))

    def encoded_list(self) -> str:
        """GZIP (mtime 0, reproducible) then base64url multibase, ``u...``."""
        compressed = gzip.compress(bytes(self._bits), mtime=0)
        return "u" + base64.urlsafe_b64encode(compressed).rstrip(b"=").decode()

    def to_credential(
        self,
        issuer_key: SigningKey,
        *,
        cryptosuite: str = Cryptosuite.EDDSA_RDFC_2022,
        valid_from: datetime | None = None,
    ) -> dict[str, Any]:
        """The signed BitstringStatusListCredential publishing this list."""
        if issuer_key.did != self.issuer_did:
            raise StatusListError(f"{self.list_id} belongs to {self.issuer_did}")
        credential = {
            "@context": [CREDENTIALS_V2],
            "id": self.list_id,
            "type": ["VerifiableCredential", "BitstringStatusListCredential"],
            "issuer": self.issuer_did,
            "validFrom": format_datetime(valid_from or datetime.now(UTC)),
            "credentialSubject": {
                "id": f"{self.list_id}#list",
                "type": "BitstringStatusList",
                "statusPurpose": self.purpose.value,
                "encodedList": self.encoded_list(),
            },
        }
        return add_proof(
            credential,
            issuer_key,
            purpose=ProofPurpose.ASSERTION_METHOD,
            cryptosuite=cryptosuite,
        )

    @classmethod
    def from_credential(cls, credential: dict[str, Any]) -> StatusList:
        """Decode a BitstringStatusListCredential (its proof is not checked
        here: :func:`identity.credentials.verify_credential` does that)."""
        subject = credential.get("credentialSubject")
        if (
            not isinstance(subject, dict)
            or subject.get("type") != "BitstringStatusList"
        ):
            raise MalformedDocument("not a BitstringStatusList credentialSubject")
        issuer = credential.get("issuer")
        issuer = issuer.get("id") if isinstance(issuer, dict) else issuer
        bits = decode_encoded_list(subject.get("encodedList"))
        return cls(
            str(issuer),
            str(credential.get("id")),
            _purpose(subject.get("statusPurpose")),
            bits,
        )

    def to_state(self) -> dict[str, Any]:
        """The issuer's private state (bits and allocated indexes) as JSON."""
        return {
            "issuer": self.issuer_did,
            "id": self.list_id,
            "statusPurpose": self.purpose.value,
            "encodedList": self.encoded_list(),
            "allocated": sorted(self._allocated),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> StatusList:
        """Rebuild from :meth:`to_state` output."""
        try:
            allocated = {int(i) for i in state["allocated"]}
            result = cls(
                str(state["issuer"]),
                str(state["id"]),
                _purpose(state["statusPurpose"]),
                decode_encoded_list(state["encodedList"]),
                allocated,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedDocument(
                f"status list state lacks or mangles {exc}"
            ) from exc
        if any(not 0 <= i < result.size for i in allocated):
            raise MalformedDocument("status list state has an index out of range")
        return result

    def _check(self, index: int) -> None:
        if not isinstance(index, int) or not 0 <= index < self.size:
            raise StatusListError(
                f"status index {index!r} is outside 0..{self.size - 1} "
                f"of {self.list_id}"
            )


def decode_encoded_list(value: object) -> bytearray:
    """The bitstring of an ``encodedList`` (multibase base64url of GZIP)."""
    if not isinstance(value, str) or not value.startswith("u"):
        raise MalformedDocument("encodedList must be base64url multibase ('u...')")
    body = value[1:]
    try:
        compressed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        # Bound the output so a small "zip bomb" cannot exhaust memory.
        inflater = zlib.decompressobj(wbits=31)
        bits = inflater.decompress(compressed, MAX_SIZE // 8 + 1)
    except (ValueError, zlib.error) as exc:
        raise MalformedDocument(f"encodedList is not GZIP in base64url: {exc}") from exc
    if len(bits) * 8 < MIN_SIZE or len(bits) * 8 > MAX_SIZE:
        raise MalformedDocument(
            f"encodedList holds {len(bits) * 8} entries, expected {MIN_SIZE} or more"
        )
    return bytearray(bits)


def status_bit(
    status_credential: dict[str, Any], entry: dict[str, Any]
) -> tuple[StatusPurpose, bool]:
    """The purpose and the bit that ``entry`` points at in ``status_credential``.

    Raises StatusListError if the entry's purpose differs from the list's or
    its index is out of range.
    """
    status = StatusList.from_credential(status_credential)
    purpose = _purpose(entry.get("statusPurpose"))
    if purpose is not status.purpose:
        raise StatusListError(
            f"entry purpose {purpose} differs from list purpose {status.purpose}"
        )
    try:
        index = int(str(entry.get("statusListIndex")))
    except ValueError:
        raise StatusListError("statusListIndex must be a decimal integer") from None
    return purpose, status.is_set(index)


def status_list_digest(credential: dict[str, Any]) -> bytes:
    """SHA-256 of the RFC 8785 canonical form of a status list credential;
    the 32 bytes the ledger anchors so verifiers detect a swapped list."""
    return hashlib.sha256(jcs.canonicalize(credential)).digest()
