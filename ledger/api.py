"""The ledger's public interface: one ``Ledger`` ABC, its data types, two backends.

Every site, the explorer, governance tools and the simulator talk to the
federation's ledger through :class:`Ledger`. Two backends implement it:

* ``embedded``: an in-process chain (eth-tester on py-evm) persisted in a
  folder; the default for one machine, tests and the simulator.
* ``rpc``: any Ethereum JSON-RPC endpoint (anvil for multi-process trials,
  Hyperledger Besu with QBFT for a real consortium).

Open one with :func:`ledger.open_ledger` (or :func:`deploy_federation` for the
founders, who deploy the contract once). Writes are made by the ledger
account given as ``account_key`` (a secp256k1 key, separate from the member's
Ed25519 DID key); only accounts linked to a current member can write. Reads go
through a local SQLite event index, never a block-by-block scan of the chain.

No personal data goes on chain: the registries hold only 32-byte digests and
salted commitments (see :mod:`ledger.commitments`), purpose codes, roles,
member DIDs of institutions and timestamps.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, NewType

__all__ = [
    "Did",
    "Event",
    "EventKind",
    "Ledger",
    "Member",
    "OfferKind",
    "Proposal",
    "TxReceipt",
]

Did = NewType("Did", str)
"""A member's DID, e.g. ``did:key:z6Mk...`` (an institution, never a patient)."""


class EventKind(StrEnum):
    """The kind of every event the contract emits (one per Solidity event)."""

    MEMBER_PROPOSED = "member_proposed"
    MEMBER_VOTED = "member_voted"
    MEMBER_ADMITTED = "member_admitted"
    MEMBER_REMOVED = "member_removed"
    ATTESTATION = "attestation"
    CONSENT_REGISTERED = "consent_registered"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    ERASURE_REQUESTED = "erasure_requested"
    ERASURE_COMPLETED = "erasure_completed"
    MODEL_RECORDED = "model_recorded"
    OFFER_PUBLISHED = "offer_published"
    OFFER_WITHDRAWN = "offer_withdrawn"
    STATUS_LIST_PUBLISHED = "status_list_published"


class OfferKind(IntEnum):
    """What a catalogue offer describes (stored on chain as a uint8)."""

    DATA = 0
    SERVICE = 1


@dataclass(frozen=True)
class Member:
    """A current or former member of the federation, as the contract holds it.

    Attributes:
        did: the member's DID (an institution's ``did:key``).
        account: its ledger account, a checksummed ``0x`` Ethereum address.
        roles: its roles, e.g. ``("site",)`` or ``("auditor",)``.
        admitted_at: block timestamp of its admission, seconds since the epoch.
        removed: True once a removal vote passed (removed members stay listed).
    """

    did: str
    account: str
    roles: tuple[str, ...]
    admitted_at: int
    removed: bool


@dataclass(frozen=True)
class Proposal:
    """A pending or executed admission/removal proposal.

    Attributes:
        id: the proposal number the contract gave it (starts at 1).
        did: the DID to admit or remove.
        account: the account to link (admission) or the member's account (removal).
        roles: the roles to grant (empty for a removal).
        removal: True for a removal, False for an admission.
        votes: how many distinct current members voted for it so far.
        executed: True once it reached the threshold and took effect.
    """

    id: int
    did: str
    account: str
    roles: tuple[str, ...]
    removal: bool
    votes: int
    executed: bool


@dataclass(frozen=True)
class Event:
    """One contract event, as the local index stores it.

    Attributes:
        kind: which event.
        block: block number.
        tx_hash: the transaction's hash, ``0x`` hex.
        log_index: position of the log in its block.
        timestamp: the block timestamp, seconds since the epoch.
        member: DID of the member whose account sent the transaction (for the
            founders' admissions at deployment, the deployer's DID when it is a
            founder, else its account address).
        commitment: the commitment, digest or id the event is about, ``0x``
            hex of 32 bytes (consent/erasure commitment, attestation
            measurement digest, model digest, offer id, status list digest),
            or None for membership events.
        data: the event's other fields, JSON-friendly (bytes as ``0x`` hex).
    """

    kind: EventKind
    block: int
    tx_hash: str
    log_index: int
    timestamp: int
    member: str
    commitment: str | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TxReceipt:
    """What a mined write returns.

    Attributes:
        tx_hash: ``0x`` hex hash.
        block: block number it was mined in.
        events: the events it emitted (already in the index).
    """

    tx_hash: str
    block: int
    events: tuple[Event, ...]


class Ledger(abc.ABC):
    """The federation's ledger: membership by k-of-n votes and six registries.

    Writes send one transaction each from this ledger's account and wait for
    it to be mined (inside :meth:`batch`, they are sent at once and waited for
    together). A write by an account that is not a current member, or that
    breaks a contract rule, raises :class:`ledger.errors.TransactionReverted`
    with the contract's ``reason``; an endpoint that cannot be reached raises
    :class:`ledger.errors.LedgerUnreachable` after retries with backoff.
    Digests, commitments and offer ids are exactly 32 bytes; anything else
    raises :class:`ledger.errors.MalformedDigest` before a transaction is sent.
    """

    # ----- identity of this handle -------------------------------------------------

    @property
    @abc.abstractmethod
    def account(self) -> str | None:
        """This handle's ledger account (checksummed address), None if read-only."""

    @property
    @abc.abstractmethod
    def contract_address(self) -> str:
        """The federation contract's address (checksummed)."""

    @property
    @abc.abstractmethod
    def threshold(self) -> int:
        """k: votes of current members needed to admit or remove a member."""

    # ----- membership writes -------------------------------------------------------

    @abc.abstractmethod
    def propose_member(
        self, did: str, account: str, roles: Sequence[str]
    ) -> int | None:
        """Propose admitting ``did`` with ledger ``account`` and ``roles``.

        The proposer's own vote counts. Returns the proposal id (None inside a
        batch, where it is known only once mined: read it from the events).
        """

    @abc.abstractmethod
    def propose_removal(self, did: str) -> int | None:
        """Propose removing the current member ``did``; the proposer's vote counts.

        Returns the proposal id (None inside a batch).
        """

    @abc.abstractmethod
    def vote(self, proposal_id: int) -> TxReceipt | None:
        """Vote for a proposal; at k votes it takes effect in the same transaction.

        A second vote by the same member reverts (``TransactionReverted``).
        Returns the receipt (None inside a batch).
        """

    # ----- registry writes ---------------------------------------------------------

    @abc.abstractmethod
    def record_attestation(
        self,
        subject_did: str,
        measurement_digest: bytes,
        evidence_digest: bytes,
        verdict: bool,
    ) -> TxReceipt | None:
        """Record that this member attested ``subject_did``'s software measurement."""

    @abc.abstractmethod
    def register_consent(
        self, commitment: bytes, purpose: int, expiry: int
    ) -> TxReceipt | None:
        """Register a consent commitment held by this member.

        Args:
            commitment: 32-byte salted commitment (:func:`ledger.commitments.commit`).
            purpose: purpose code (0..65535), the federation's coding.
            expiry: end of validity, seconds since the epoch (0: no expiry).
        """

    @abc.abstractmethod
    def withdraw_consent(self, commitment: bytes) -> TxReceipt | None:
        """Withdraw a consent; only the member that registered it may."""

    @abc.abstractmethod
    def request_erasure(self, commitment: bytes) -> TxReceipt | None:
        """Log an erasure request for a commitment (right to erasure, GDPR Art. 17)."""

    @abc.abstractmethod
    def complete_erasure(
        self, commitment: bytes, proof_digest: bytes
    ) -> TxReceipt | None:
        """Log that the data and the salt behind ``commitment`` were deleted.

        Args:
            commitment: 32-byte commitment whose erasure was requested.
            proof_digest: 32-byte digest of the site's erasure record.
        """

    @abc.abstractmethod
    def record_model(
        self,
        round: int,
        model_digest: bytes,
        parents: Sequence[bytes],
        contributors: Sequence[str],
    ) -> TxReceipt | None:
        """Record a model's provenance: round, digest, parents, contributor DIDs."""

    @abc.abstractmethod
    def publish_offer(
        self, offer_id: bytes, kind: OfferKind, metadata_digest: bytes, uri: str
    ) -> TxReceipt | None:
        """Publish (or replace) a catalogue offer of data or a service."""

    @abc.abstractmethod
    def withdraw_offer(self, offer_id: bytes) -> TxReceipt | None:
        """Withdraw an offer; only the member that published it may."""

    @abc.abstractmethod
    def publish_status_list(self, issuer_did: str, digest: bytes) -> TxReceipt | None:
        """Publish the digest of ``issuer_did``'s current Bitstring Status List."""

    # ----- batching ----------------------------------------------------------------

    @abc.abstractmethod
    def batch(self) -> contextlib.AbstractContextManager[list[TxReceipt]]:
        """Queue writes, send them all on exit and wait once for every receipt.

        Usage::

            with ledger.batch() as receipts:
                for c in commitments:
                    ledger.register_consent(c, purpose=1, expiry=0)
            # receipts now holds one TxReceipt per write, in order

        Nonces are assigned locally in order. On exit, a revert raises
        ``TransactionReverted`` (the other transactions of the batch stay
        mined); an unreachable endpoint raises ``LedgerUnreachable`` after
        retries and leaves the unsent writes in :attr:`pending`, to be sent by
        :meth:`flush`. If the body itself raises, its queued writes are
        dropped, not sent.
        """

    @property
    @abc.abstractmethod
    def pending(self) -> int:
        """How many writes are queued but not yet mined (after a failed flush)."""

    @abc.abstractmethod
    def flush(self) -> list[TxReceipt]:
        """Send every queued write again and wait for their receipts."""

    # ----- reads -------------------------------------------------------------------

    @abc.abstractmethod
    def members(self, *, include_removed: bool = False) -> list[Member]:
        """Every member, in admission order (current ones only by default)."""

    @abc.abstractmethod
    def member(self, did: str) -> Member | None:
        """The member with this DID (current or removed), None if never admitted."""

    @abc.abstractmethod
    def is_member(self, did: str) -> bool:
        """True if ``did`` is a current (not removed) member."""

    @abc.abstractmethod
    def proposal(self, proposal_id: int) -> Proposal | None:
        """A proposal by id, None if there is no such proposal."""

    @abc.abstractmethod
    def consent_active(self, commitment: bytes, *, at: int | None = None) -> bool:
        """True if the consent is registered, not withdrawn and not expired at ``at``.

        ``at`` is seconds since the epoch; None means the latest block's timestamp.
        """

    @abc.abstractmethod
    def erasure_completed(self, commitment: bytes) -> bool:
        """True once an erasure of ``commitment`` was logged as completed."""

    @abc.abstractmethod
    def current_status_list_digest(self, issuer_did: str) -> bytes | None:
        """The digest of the issuer's latest published status list, None if none."""

    @abc.abstractmethod
    def events(
        self,
        kind: EventKind | str | None = None,
        *,
        member: str | None = None,
        since: int | None = None,
        until: int | None = None,
        commitment: bytes | str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[Event]:
        """Events from the local index, oldest first; filters combine with AND.

        Args:
            kind: only this kind.
            member: only events written by this member DID.
            since: only events with ``timestamp >= since`` (seconds).
            until: only events with ``timestamp < until`` (seconds).
            commitment: only events about this 32-byte commitment/digest/id.
            offset: skip this many matching events.
            limit: at most this many (None: all).

        The index is synced with the chain first (see :meth:`sync`).
        """

    @abc.abstractmethod
    def count_events(
        self,
        kind: EventKind | str | None = None,
        *,
        member: str | None = None,
        since: int | None = None,
        until: int | None = None,
        commitment: bytes | str | None = None,
    ) -> int:
        """How many events :meth:`events` would return with the same filters."""

    @abc.abstractmethod
    def sync(self) -> int:
        """Index every new event up to the chain's head; returns the indexed height.

        Idempotent: indexing the same logs twice stores them once, and a deleted
        index file is rebuilt from the chain.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the chain connection and the index (the journal is already saved)."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
