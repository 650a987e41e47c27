"""The one implementation of :class:`ledger.api.Ledger`, over either chain backend.

Transactions are built with web3's contract encoder, signed locally with the
member's account key (eth-account) and sent raw, so the same code drives the
embedded chain, anvil and Besu; only :mod:`ledger.chains` differs.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_tester.exceptions import TransactionFailed
from eth_utils.abi import event_abi_to_log_topic, function_abi_to_4byte_selector
from eth_utils.address import to_checksum_address
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.types import TxParams

from contracts.build import load_artifact
from ledger.api import Event, EventKind, Ledger, Member, OfferKind, Proposal, TxReceipt
from ledger.chains import Chain, EmbeddedChain, faucet_account, release_embedded
from ledger.commitments import parse_commitment
from ledger.errors import (
    LedgerConfigError,
    LedgerError,
    LedgerUnreachable,
    MalformedDigest,
    TransactionReverted,
)
from ledger.index import EventIndex

log = logging.getLogger(__name__)

GAS_LIMIT = 3_000_000
"""Gas limit of every write (the costliest, an admission, uses about 250k).
Unused gas is not charged."""

_KINDS = {
    "MemberProposed": EventKind.MEMBER_PROPOSED,
    "MemberVoted": EventKind.MEMBER_VOTED,
    "MemberAdmitted": EventKind.MEMBER_ADMITTED,
    "MemberRemoved": EventKind.MEMBER_REMOVED,
    "Attestation": EventKind.ATTESTATION,
    "ConsentRegistered": EventKind.CONSENT_REGISTERED,
    "ConsentWithdrawn": EventKind.CONSENT_WITHDRAWN,
    "ErasureRequested": EventKind.ERASURE_REQUESTED,
    "ErasureCompleted": EventKind.ERASURE_COMPLETED,
    "ModelRecorded": EventKind.MODEL_RECORDED,
    "OfferPublished": EventKind.OFFER_PUBLISHED,
    "OfferWithdrawn": EventKind.OFFER_WITHDRAWN,
    "StatusListPublished": EventKind.STATUS_LIST_PUBLISHED,
}

# The event field copied into Event.commitment, per kind.
_SUBJECT_FIELD = {
    EventKind.ATTESTATION: "measurementDigest",
    EventKind.CONSENT_REGISTERED: "commitment",
    EventKind.CONSENT_WITHDRAWN: "commitment",
    EventKind.ERASURE_REQUESTED: "commitment",
    EventKind.ERASURE_COMPLETED: "commitment",
    EventKind.MODEL_RECORDED: "modelDigest",
    EventKind.OFFER_PUBLISHED: "offerId",
    EventKind.OFFER_WITHDRAWN: "offerId",
    EventKind.STATUS_LIST_PUBLISHED: "digest",
}

_REVERT_RE = re.compile(r"execution reverted:?\s*(.*)", re.IGNORECASE | re.DOTALL)


def revert_reason(exc: BaseException) -> str | None:
    """The contract's revert reason in a backend exception, None if not a revert.

    eth-tester raises ``TransactionFailed('execution reverted: X')``, web3
    ``ContractLogicError`` (``.message``), anvil a JSON-RPC error whose message
    starts with ``execution reverted``; all come out as ``X``.
    """
    if isinstance(exc, ContractLogicError):
        text = exc.message or str(exc)
    elif isinstance(exc, TransactionFailed | Web3RPCError):
        text = str(exc)
    else:
        return None
    match = _REVERT_RE.search(text)
    if match:
        reason = match.group(1).strip().strip("'\"") or "unknown"
        return reason
    if isinstance(exc, ContractLogicError | TransactionFailed):
        return text.strip() or "unknown"
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class _EventLayout:
    """How to decode one event's log (all indexed fields are static types)."""

    kind: EventKind
    indexed: list[tuple[str, str]]  # (name, type) carried in topics 1..n
    plain: list[tuple[str, str]]  # (name, type) ABI-encoded in the data

    def decode(self, log: Any) -> dict[str, Any]:
        """The event's fields, JSON-friendly (bytes as 0x hex)."""
        args: dict[str, Any] = {}
        for (name, typ), topic in zip(self.indexed, log["topics"][1:], strict=True):
            (args[name],) = abi_decode([typ], bytes(topic))
        values = abi_decode([t for _, t in self.plain], bytes(log["data"]))
        args.update(zip((n for n, _ in self.plain), values, strict=True))
        for name, typ in (*self.indexed, *self.plain):
            if typ == "address":  # eth_abi gives lower case; show EIP-55
                args[name] = to_checksum_address(args[name])
        return {k: _jsonable(v) for k, v in args.items()}


@dataclass
class _Write:
    """A signed write waiting to be mined."""

    label: str  # the contract function, for messages
    raw: bytes  # signed raw transaction
    tx: dict[str, Any]  # the unsigned transaction, to replay a revert as a call
    tx_hash: str | None = None  # set once the chain accepted it
    claimed: bool = False  # a flush is waiting for its receipt


class Web3Ledger(Ledger):
    """:class:`ledger.api.Ledger` over a :class:`ledger.chains.Chain`."""

    def __init__(
        self,
        chain: Chain,
        contract_address: str,
        index: EventIndex,
        *,
        account_key: bytes | None = None,
        deploy_block: int = 0,
        owns_index: bool = True,
    ) -> None:
        """Bind to a deployed federation contract.

        Args:
            chain: the backend.
            contract_address: the federation contract.
            index: the event index for this deployment.
            account_key: the secp256k1 key that signs writes (None: read-only).
            deploy_block: the deployment's block (sync starts there).
            owns_index: close the index on :meth:`close`.
        """
        artifact = load_artifact("Federation")
        self._chain = chain
        self._w3 = chain.w3
        self._address = to_checksum_address(contract_address)
        self._contract = self._w3.eth.contract(
            address=self._address, abi=artifact["abi"]
        )
        self._index = index
        self._owns_index = owns_index
        self._deploy_block = deploy_block
        self._account = None if account_key is None else Account.from_key(account_key)
        # Guards the queue, nonce and batch state. Never held while waiting
        # for receipts: reads (which take only _guard) and other writes of
        # this handle go on while a write waits to be mined (a block period,
        # 2 s on QBFT).
        self._lock = threading.RLock()
        # Serialises use of the chain: eth-tester is not thread-safe, and the
        # handles of one embedded folder share it (taken after _lock, never
        # before it). On JSON-RPC it is not held while polling for receipts:
        # web3's HTTP provider keeps one session per thread.
        self._guard = (
            chain.lock if isinstance(chain, EmbeddedChain) else threading.RLock()
        )
        self._queue: list[_Write] = []  # signed writes not yet mined, in nonce order
        self._nonce: int | None = None  # next nonce to use, None: read from chain
        self._batch: list[TxReceipt] | None = None  # receipts of the open batch
        self._dids: dict[str, str] = {}  # account (lower) -> member DID cache
        # eth-tester charges a call's gas to its sender, so calls on the
        # embedded chain come from the funded faucet; JSON-RPC nodes do not.
        self._call_from: TxParams = (
            {"from": to_checksum_address(faucet_account())}
            if isinstance(chain, EmbeddedChain)
            else {}
        )
        # Why our own ABI tables: web3's encoder re-validates the whole ABI
        # and re-hashes every selector on each call (9 ms a write), and its
        # event decoder is as slow; eth_abi with the types looked up once
        # does the same encoding.
        self._functions = {
            abi["name"]: (
                function_abi_to_4byte_selector(abi),
                [i["type"] for i in abi["inputs"]],
            )
            for abi in artifact["abi"]
            if abi["type"] == "function"
        }
        self._topics = {
            event_abi_to_log_topic(abi): _EventLayout(
                _KINDS[abi["name"]],
                [(i["name"], i["type"]) for i in abi["inputs"] if i["indexed"]],
                [(i["name"], i["type"]) for i in abi["inputs"] if not i["indexed"]],
            )
            for abi in artifact["abi"]
            if abi["type"] == "event"
        }
        try:
            self._threshold = int(
                self._contract.functions.threshold().call(self._call_from)
            )
        except (ContractLogicError, Web3RPCError, TransactionFailed) as exc:
            raise LedgerConfigError(
                f"no federation contract at {self._address}: {exc}"
            ) from exc
        except Exception as exc:
            if type(exc).__name__ in ("BadFunctionCallOutput",):
                raise LedgerConfigError(
                    f"no federation contract at {self._address}"
                ) from exc
            raise

    # ----- properties --------------------------------------------------------------

    @property
    def account(self) -> str | None:
        return None if self._account is None else str(self._account.address)

    @property
    def contract_address(self) -> str:
        return str(self._address)

    @property
    def threshold(self) -> int:
        return self._threshold

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    # ----- sending -----------------------------------------------------------------

    def _next_nonce(self) -> int:
        assert self._account is not None
        if self._nonce is None:
            self._nonce = int(
                self._w3.eth.get_transaction_count(self._account.address, "pending")
            )
        nonce = self._nonce
        self._nonce += 1
        return nonce

    def _send(self, label: str, call: Any) -> TxReceipt | None:
        """Sign ``call`` and queue it; outside a batch, send and wait now."""
        if self._account is None:
            raise LedgerConfigError(
                f"{label}: this ledger handle is read-only (open it with account_key)"
            )
        # Why no gas estimate or dry run: on eth-tester an estimate costs 0.4 s
        # (a binary search of EVM runs), 25x the write itself. A fixed limit
        # costs nothing extra (unused gas is not charged), and a refused
        # write is reported from its receipt, its reason recovered by
        # re-running it as a call on its parent block.
        selector, types = self._functions[call.fn_name]
        data = "0x" + (selector + abi_encode(types, list(call.args))).hex()
        with self._lock:
            with self._guard:
                tx: dict[str, Any] = {
                    "type": 2,
                    "to": self._address,
                    "value": 0,
                    "data": data,
                    "gas": GAS_LIMIT,
                    "nonce": self._next_nonce(),
                    "chainId": self._chain.chain_id,
                    **self._chain.fee_fields(),
                }
            raw = bytes(self._account.sign_transaction(tx).raw_transaction)
            tx["from"] = self._account.address
            write = _Write(label, raw, tx)
            self._queue.append(write)
            if self._batch is not None:
                return None
            claimed = self._dispatch()
        receipts = self._settle(claimed)
        return receipts[claimed.index(write)]

    def flush(self) -> list[TxReceipt]:
        with self._lock:
            claimed = self._dispatch()
            batch = self._batch  # set only when flushed inside a batch's body
        receipts = self._settle(claimed)
        if batch is not None:
            batch.extend(receipts)
        return receipts

    def _dispatch(self) -> list[_Write]:
        """Send the unsent writes and claim the sent ones no flush waits for.

        Called with ``_lock`` held, so nonces are assigned and transactions
        sent in nonce order by one thread at a time; the claimed writes are
        then waited for by :meth:`_settle` without the lock. A write claimed
        by a concurrent flush is left to it.

        Raises:
            LedgerUnreachable: the node did not answer; every write stays
                queued, signed, for the next flush (a write that did reach the
                node is recognised when sent again).
            LedgerError: the node refused a write outright (bad nonce, fee):
                the unsent writes' nonces are void; they are dropped.
        """
        todo = [w for w in self._queue if w.tx_hash is None]
        if todo:
            try:
                with self._guard:
                    hashes = self._chain.submit([w.raw for w in todo])
            except LedgerUnreachable:
                raise
            except LedgerError:
                self._queue = [w for w in self._queue if w.tx_hash is not None]
                self._nonce = None  # re-read from the chain's pending count
                raise
            for write, tx_hash in zip(todo, hashes, strict=True):
                write.tx_hash = tx_hash
        claimed = [w for w in self._queue if not w.claimed]
        for write in claimed:
            write.claimed = True
        return claimed

    def _settle(self, claimed: list[_Write]) -> list[TxReceipt]:
        """Wait for the claimed writes' receipts (without ``_lock``), index them.

        Raises:
            LedgerUnreachable, LedgerError: no receipts (outage, timeout); the
                writes stay queued and the next flush waits for them again.
            TransactionReverted: a write was mined as failed (the first one's
                reason); the others were mined and indexed.
        """
        if not claimed:
            return []
        hashes = [str(w.tx_hash) for w in claimed]
        try:
            if isinstance(self._chain, EmbeddedChain):
                # Mined already by submit; eth-tester needs the chain's lock.
                with self._guard:
                    got = self._chain.receipts(hashes)
            else:
                got = self._chain.receipts(hashes)
        except BaseException:
            with self._lock:
                for write in claimed:
                    write.claimed = False
            raise
        with self._lock:
            done = {id(w) for w in claimed}
            self._queue = [w for w in self._queue if id(w) not in done]
        receipts: list[TxReceipt] = []
        failures: list[tuple[_Write, int]] = []
        everything: list[Event] = []
        for write, rcpt in zip(claimed, got, strict=True):
            assert write.tx_hash is not None
            events = self._events_of_logs(rcpt["logs"])
            everything.extend(events)
            receipts.append(
                TxReceipt(write.tx_hash, int(rcpt["blockNumber"]), tuple(events))
            )
            if int(rcpt["status"]) != 1:
                failures.append((write, int(rcpt["blockNumber"])))
        self._index.add(everything)
        if failures:
            # A failed write still used its nonce, so the counter stays right;
            # re-read it from the chain only when no other write holds one.
            with self._lock:
                if not self._queue:
                    self._nonce = None
            write, block = failures[0]
            raise TransactionReverted(
                self._replay_reason(write, block), operation=write.label
            )
        return receipts

    def _replay_reason(self, write: _Write, block: int) -> str:
        """The revert reason of a mined, failed write, recovered by re-running it.

        Receipts carry no reason, so the write is re-run as a call: first on
        its parent block's state (exact when it was alone in its block), then
        on its own block's state (where a conflicting write mined just before
        it in the same block, e.g. of a batch, is visible). Best effort: a
        reason that depended on state between the two gives ``unknown``.
        """
        call = {k: write.tx[k] for k in ("from", "to", "data") if k in write.tx}
        for at in (block - 1, block):
            try:
                self._w3.eth.call(call, block_identifier=at)  # type: ignore[arg-type]
            except Exception as exc:
                reason = revert_reason(exc)
                if reason is not None:
                    return reason
                log.debug("replaying %s failed: %s", write.label, exc)
        return "unknown (out of gas?)"

    @contextlib.contextmanager
    def batch(self) -> Iterator[list[TxReceipt]]:
        # The body runs under _lock, so another thread's write waits for the
        # batch to be sent rather than join it; the receipts are awaited
        # after the lock is released.
        with self._lock:
            if self._batch is not None:
                raise LedgerError("batch: batches do not nest")
            receipts: list[TxReceipt] = []
            self._batch = receipts
            before = {id(w) for w in self._queue}
            try:
                try:
                    yield receipts
                except BaseException:
                    # The body failed: drop its unsent writes rather than send
                    # them later by surprise; writes queued before the batch
                    # (kept from an outage) stay. The dropped ones took the
                    # highest nonces (assigned under the lock), so the counter
                    # goes back to the first of them.
                    dropped = {
                        id(w): int(w.tx["nonce"])
                        for w in self._queue
                        if w.tx_hash is None and id(w) not in before
                    }
                    if dropped:
                        self._queue = [w for w in self._queue if id(w) not in dropped]
                        self._nonce = min(dropped.values())
                    raise
                claimed = self._dispatch()
            finally:
                self._batch = None
        receipts.extend(self._settle(claimed))

    # ----- membership writes -------------------------------------------------------

    @staticmethod
    def _proposal_id(receipt: TxReceipt | None) -> int | None:
        if receipt is None:
            return None
        for event in receipt.events:
            if event.kind == EventKind.MEMBER_PROPOSED:
                return int(event.data["proposalId"])
        raise LedgerError("proposal transaction emitted no MemberProposed event")

    def propose_member(
        self, did: str, account: str, roles: Sequence[str]
    ) -> int | None:
        _check_did(did, "did")
        try:
            checksummed = to_checksum_address(account)
        except ValueError as exc:
            raise LedgerConfigError(
                f"account: expected a 0x Ethereum address, got {account!r}"
            ) from exc
        call = self._contract.functions.proposeAdmission(did, checksummed, list(roles))
        return self._proposal_id(self._send("proposeAdmission", call))

    def propose_removal(self, did: str) -> int | None:
        _check_did(did, "did")
        call = self._contract.functions.proposeRemoval(did)
        return self._proposal_id(self._send("proposeRemoval", call))

    def vote(self, proposal_id: int) -> TxReceipt | None:
        return self._send("vote", self._contract.functions.vote(int(proposal_id)))

    # ----- registry writes ---------------------------------------------------------

    def record_attestation(
        self,
        subject_did: str,
        measurement_digest: bytes,
        evidence_digest: bytes,
        verdict: bool,
    ) -> TxReceipt | None:
        _check_did(subject_did, "subject_did")
        call = self._contract.functions.recordAttestation(
            subject_did,
            parse_commitment(measurement_digest, "measurement_digest"),
            parse_commitment(evidence_digest, "evidence_digest"),
            bool(verdict),
        )
        return self._send("recordAttestation", call)

    def register_consent(
        self, commitment: bytes, purpose: int, expiry: int
    ) -> TxReceipt | None:
        value = parse_commitment(commitment)
        if not 0 <= int(purpose) <= 0xFFFF:
            raise MalformedDigest(f"purpose: expected 0..65535, got {purpose}")
        if not 0 <= int(expiry) < 2**64:
            raise MalformedDigest(
                f"expiry: expected seconds since the epoch, got {expiry}"
            )
        call = self._contract.functions.registerConsent(
            value, int(purpose), int(expiry)
        )
        return self._send("registerConsent", call)

    def withdraw_consent(self, commitment: bytes) -> TxReceipt | None:
        call = self._contract.functions.withdrawConsent(parse_commitment(commitment))
        return self._send("withdrawConsent", call)

    def request_erasure(self, commitment: bytes) -> TxReceipt | None:
        call = self._contract.functions.requestErasure(parse_commitment(commitment))
        return self._send("requestErasure", call)

    def complete_erasure(
        self, commitment: bytes, proof_digest: bytes
    ) -> TxReceipt | None:
        call = self._contract.functions.completeErasure(
            parse_commitment(commitment), parse_commitment(proof_digest, "proof_digest")
        )
        return self._send("completeErasure", call)

    def record_model(
        self,
        round: int,
        model_digest: bytes,
        parents: Sequence[bytes],
        contributors: Sequence[str],
    ) -> TxReceipt | None:
        if not 0 <= int(round) < 2**64:
            raise MalformedDigest(
                f"round: expected a non-negative integer, got {round}"
            )
        for did in contributors:
            _check_did(did, "contributors")
        call = self._contract.functions.recordModel(
            int(round),
            parse_commitment(model_digest, "model_digest"),
            [parse_commitment(p, "parents") for p in parents],
            list(contributors),
        )
        return self._send("recordModel", call)

    def publish_offer(
        self, offer_id: bytes, kind: OfferKind, metadata_digest: bytes, uri: str
    ) -> TxReceipt | None:
        try:
            kind = OfferKind(kind)
        except ValueError as exc:
            raise LedgerConfigError(
                f"kind: expected an OfferKind, got {kind!r}"
            ) from exc
        call = self._contract.functions.publishOffer(
            parse_commitment(offer_id, "offer_id"),
            int(kind),
            parse_commitment(metadata_digest, "metadata_digest"),
            str(uri),
        )
        return self._send("publishOffer", call)

    def withdraw_offer(self, offer_id: bytes) -> TxReceipt | None:
        call = self._contract.functions.withdrawOffer(
            parse_commitment(offer_id, "offer_id")
        )
        return self._send("withdrawOffer", call)

    def publish_status_list(self, issuer_did: str, digest: bytes) -> TxReceipt | None:
        _check_did(issuer_did, "issuer_did")
        call = self._contract.functions.publishStatusList(
            issuer_did, parse_commitment(digest, "digest")
        )
        return self._send("publishStatusList", call)

    # ----- reads -------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> Any:
        try:
            with self._guard:
                fn = getattr(self._contract.functions, name)(*args)
                return fn.call(self._call_from)
        except Exception as exc:
            reason = revert_reason(exc)
            if reason is None:
                raise
            raise TransactionReverted(reason, operation=name) from exc

    def _member_at(self, i: int) -> Member:
        did, account, roles, admitted_at, removed = self._call("memberAt", i)
        return Member(
            str(did), str(account), tuple(roles), int(admitted_at), bool(removed)
        )

    def members(self, *, include_removed: bool = False) -> list[Member]:
        total = int(self._call("memberTotal"))
        everyone = [self._member_at(i) for i in range(total)]
        return [m for m in everyone if include_removed or not m.removed]

    def member(self, did: str) -> Member | None:
        idx = int(self._call("memberIndexOfDid", did))
        return None if idx == 0 else self._member_at(idx - 1)

    def is_member(self, did: str) -> bool:
        return bool(self._call("isMemberDid", did))

    def proposal(self, proposal_id: int) -> Proposal | None:
        if not 1 <= int(proposal_id) <= int(self._call("proposalCount")):
            return None
        did, account, roles, removal, votes, executed = self._call(
            "proposalAt", int(proposal_id)
        )
        return Proposal(
            int(proposal_id),
            str(did),
            str(account),
            tuple(roles),
            bool(removal),
            int(votes),
            bool(executed),
        )

    def consent_active(self, commitment: bytes, *, at: int | None = None) -> bool:
        value = parse_commitment(commitment)
        if at is None:
            with self._guard:
                at = self._chain.latest_timestamp()
        return bool(self._call("consentActive", value, int(at)))

    def erasure_completed(self, commitment: bytes) -> bool:
        return int(self._call("erasureState", parse_commitment(commitment))) == 2

    def current_status_list_digest(self, issuer_did: str) -> bytes | None:
        digest = bytes(self._call("statusListOf", issuer_did))
        return None if digest == bytes(32) else digest

    # ----- index -------------------------------------------------------------------

    def _did_of(self, account: str) -> str:
        key = account.lower()
        did = self._dids.get(key)
        if did is None:
            did = str(self._call("didOfAccount", to_checksum_address(account)))
            if not did:
                return to_checksum_address(account)
            self._dids[key] = did
        return did

    def _events_of_logs(self, logs: Sequence[Any]) -> list[Event]:
        out = []
        for lg in logs:
            if str(lg["address"]).lower() != self._address.lower() or not lg["topics"]:
                continue
            layout = self._topics.get(bytes(lg["topics"][0]))
            if layout is None:
                continue
            kind = layout.kind
            args = layout.decode(lg)
            field = _SUBJECT_FIELD.get(kind)
            out.append(
                Event(
                    kind=kind,
                    block=int(lg["blockNumber"]),
                    tx_hash="0x" + bytes(lg["transactionHash"]).hex(),
                    log_index=int(lg["logIndex"]),
                    timestamp=int(args.pop("timestamp")),
                    member=self._did_of(str(args.pop("by"))),
                    commitment=None if field is None else str(args[field]),
                    data=args,
                )
            )
        return out

    def sync(self) -> int:
        with self._guard:
            head = self._chain.head()
            height = self._index.height
            first = self._deploy_block if height is None else height + 1
            if first <= head:
                logs = self._chain.logs(self._address, first, head)
                added = self._index.add(self._events_of_logs(logs), height=head)
                log.debug("indexed %s new events up to block %s", added, head)
        return head

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
        self.sync()
        return self._index.query(
            _kind(kind), member, since, until, _subject(commitment), offset, limit
        )

    def count_events(
        self,
        kind: EventKind | str | None = None,
        *,
        member: str | None = None,
        since: int | None = None,
        until: int | None = None,
        commitment: bytes | str | None = None,
    ) -> int:
        self.sync()
        return self._index.count(
            _kind(kind), member, since, until, _subject(commitment)
        )

    def close(self) -> None:
        if self._owns_index:
            self._index.close()
        if isinstance(self._chain, EmbeddedChain):
            release_embedded(self._chain)
        else:
            self._chain.close()


def _kind(kind: EventKind | str | None) -> EventKind | None:
    if kind is None:
        return None
    try:
        return EventKind(kind)
    except ValueError:
        raise LedgerConfigError(
            f"kind: expected one of {', '.join(EventKind)}, got {kind!r}"
        ) from None


def _subject(commitment: bytes | str | None) -> str | None:
    if commitment is None:
        return None
    return "0x" + parse_commitment(commitment).hex()


def _check_did(did: str, name: str) -> None:
    if not isinstance(did, str) or not did.startswith("did:") or len(did) > 512:
        raise LedgerConfigError(f"{name}: expected a DID string 'did:...', got {did!r}")
