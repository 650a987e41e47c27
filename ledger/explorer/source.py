"""What the explorer shows, read from a federation ledger and its event index.

A :class:`Source` wraps one read-only :class:`ledger.api.Ledger` handle (for
the contract's current state: members, consent and erasure state, status list
digests) and an :class:`~ledger.explorer.query.IndexReader` on the same
ledger's event index (for history). Every answer is a JSON-friendly dict, the
same for the web page and the command.

Nothing here can write: the handle is opened without an account key.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from identity.credentials import verify_credential
from identity.status_list import status_list_digest
from ledger.api import EventKind, Ledger
from ledger.commitments import MAX_PURPOSE, commit
from ledger.errors import LedgerConfigError, MalformedDigest
from ledger.explorer.auth import offline_fetcher
from ledger.explorer.digest import model_file_digest
from ledger.explorer.errors import BadQuery
from ledger.explorer.query import (
    EventFilter,
    EventPage,
    IndexReader,
    event_json,
    iso_time,
    parse_digest,
)
from ledger.open import open_ledger

log = logging.getLogger(__name__)

SYNC_EVERY = 1.0
"""Seconds between two syncs of the index with the chain (reads in between
use the index as it is)."""

MAX_MODELS = 5000
"""The provenance view draws at most this many model records (newest kept)."""

_LIFECYCLE = (
    EventKind.CONSENT_REGISTERED,
    EventKind.CONSENT_WITHDRAWN,
    EventKind.ERASURE_REQUESTED,
    EventKind.ERASURE_COMPLETED,
)

_MEMBERSHIP = [
    str(k)
    for k in (
        EventKind.MEMBER_PROPOSED,
        EventKind.MEMBER_VOTED,
        EventKind.MEMBER_ADMITTED,
        EventKind.MEMBER_REMOVED,
        EventKind.ATTESTATION,
    )
]


def _is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


class Source:
    """The explorer's read-only view of one ledger (thread-safe)."""

    def __init__(self, ledger: Ledger, index_path: Path, *, label: str) -> None:
        """Wrap an open read-only ledger handle whose index file is ``index_path``."""
        self.ledger = ledger
        self.label = label  # the folder or URL, shown on the page
        self._lock = threading.Lock()  # serialises every call on ledger
        self._synced_at = -SYNC_EVERY  # monotonic time of the last sync
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.sync(force=True)
        self.index = IndexReader(index_path)

    @classmethod
    def open(
        cls,
        spec: str,
        *,
        contract: str | None = None,
        index_path: Path | None = None,
        deploy_block: int = 0,
        retries: int = 2,
        backoff: float = 0.2,
    ) -> Source:
        """Open a ledger read-only: an embedded folder or a JSON-RPC URL.

        Args:
            spec: the embedded ledger's folder, or an ``http(s)://`` URL.
            contract: rpc: the federation contract's address (required).
            index_path: rpc: where to keep the event index (default: a
                temporary file, rebuilt from the chain at each start).
            deploy_block: rpc: the deployment's block, where indexing starts.
            retries: rpc: retries after a connection failure.
            backoff: rpc: first wait between retries, seconds.

        Raises:
            LedgerConfigError: no deployment in the folder, no contract given.
            LedgerUnreachable: the endpoint did not answer.
        """
        tmp = None
        if _is_url(spec):
            if contract is None:
                raise LedgerConfigError(
                    "--contract: required with a JSON-RPC ledger URL (the "
                    "federation contract's address the founders published)"
                )
            if index_path is None:
                tmp = tempfile.TemporaryDirectory(prefix="paroma-explorer-")
                index_path = Path(tmp.name) / "index.sqlite"
            try:
                ledger = open_ledger(
                    spec,
                    contract_address=contract,
                    index_path=index_path,
                    deploy_block=deploy_block,
                    retries=retries,
                    backoff=backoff,
                )
            except BaseException:
                if tmp is not None:
                    tmp.cleanup()
                raise
        else:
            folder = Path(spec)
            if not folder.is_dir():
                raise LedgerConfigError(
                    f"{spec}: not a folder (expected an embedded ledger's folder "
                    "or an http(s):// JSON-RPC URL)"
                )
            ledger = open_ledger(folder, retries=retries, backoff=backoff)
            index_path = folder / "index.sqlite"
        try:
            source = cls(ledger, index_path, label=spec)
        except BaseException:
            ledger.close()
            if tmp is not None:
                tmp.cleanup()
            raise
        source._tmp = tmp
        return source

    def sync(self, *, force: bool = False) -> None:
        """Bring the index up to the chain's head (at most every SYNC_EVERY s)."""
        now = time.monotonic()
        with self._lock:
            if force or now - self._synced_at >= SYNC_EVERY:
                self.ledger.sync()
                self._synced_at = now

    def close(self) -> None:
        """Close the index reader and the ledger handle."""
        self.index.close()
        with self._lock:
            self.ledger.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def is_member(self, did: str) -> bool:
        """True if ``did`` is a current member (the contract's own answer)."""
        with self._lock:
            return self.ledger.is_member(did)

    def status_list_digest_of(self, issuer_did: str) -> bytes | None:
        """The digest the ledger anchors for ``issuer_did``'s status list."""
        self.sync()
        with self._lock:
            return self.ledger.current_status_list_digest(issuer_did)

    # ----- views -----------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        """The ledger's identity and event counts per kind."""
        self.sync()
        with self._lock:
            members = self.ledger.members(include_removed=True)
            threshold = self.ledger.threshold
            contract = self.ledger.contract_address
        counts = self.index.counts()
        return {
            "ledger": self.label,
            "contract": contract,
            "threshold": threshold,
            "members": sum(1 for m in members if not m.removed),
            "removed_members": sum(1 for m in members if m.removed),
            "events": sum(counts.values()),
            "counts": counts,
            "kinds": list(counts),
        }

    def events(
        self,
        flt: EventFilter,
        *,
        cursor: str | None = None,
        limit: int = 50,
        newest_first: bool = False,
    ) -> EventPage:
        """One page of events (see :meth:`IndexReader.page`)."""
        self.sync()
        return self.index.page(
            flt, cursor=cursor, limit=limit, newest_first=newest_first
        )

    def members(self) -> list[dict[str, Any]]:
        """Every member ever admitted, with its admission votes and attestations."""
        self.sync()
        with self._lock:
            members = self.ledger.members(include_removed=True)
        history = self.index.of_kinds(_MEMBERSHIP)
        proposals: dict[int, dict[str, Any]] = {}
        admitted: dict[str, dict[str, Any]] = {}
        removed: dict[str, dict[str, Any]] = {}
        about: dict[str, list[dict[str, Any]]] = {}
        for e in history:
            pid = int(e.data.get("proposalId", 0))
            if e.kind == EventKind.MEMBER_PROPOSED:
                proposals[pid] = {
                    "proposal_id": pid,
                    "removal": bool(e.data.get("removal")),
                    "proposed_by": e.member,
                    "proposed_at": iso_time(e.timestamp),
                    "votes": [],
                }
            elif e.kind == EventKind.MEMBER_VOTED and pid in proposals:
                proposals[pid]["votes"].append(
                    {"member": e.member, "time": iso_time(e.timestamp), "tx": e.tx_hash}
                )
            elif e.kind == EventKind.MEMBER_ADMITTED:
                admitted[str(e.data["did"])] = {
                    **proposals.get(pid, {"proposal_id": pid, "votes": []}),
                    "founder": pid == 0,
                    "executed_at": iso_time(e.timestamp),
                    "tx": e.tx_hash,
                }
            elif e.kind == EventKind.MEMBER_REMOVED:
                removed[str(e.data["did"])] = {
                    **proposals.get(pid, {"proposal_id": pid, "votes": []}),
                    "executed_at": iso_time(e.timestamp),
                    "tx": e.tx_hash,
                }
            elif e.kind == EventKind.ATTESTATION:
                about.setdefault(str(e.data.get("subjectDid")), []).append(
                    {
                        "by": e.member,
                        "verdict": bool(e.data.get("verdict")),
                        "measurement_digest": e.commitment,
                        "evidence_digest": e.data.get("evidenceDigest"),
                        "time": iso_time(e.timestamp),
                        "tx": e.tx_hash,
                    }
                )
        return [
            {
                "did": m.did,
                "account": m.account,
                "roles": list(m.roles),
                "admitted_at": iso_time(m.admitted_at),
                "removed": m.removed,
                "admission": admitted.get(m.did),
                "removal": removed.get(m.did),
                "attestations": about.get(m.did, []),
            }
            for m in members
        ]

    def commitment(self, value: str) -> dict[str, Any]:
        """The lifecycle of a consent commitment: events and current state.

        Only the commitment, purpose code, expiry, the holding member and
        times are shown; the ledger holds nothing more (no personal data).

        Raises:
            BadQuery: not 32 bytes of hex.
        """
        digest = parse_digest(value)
        self.sync()
        events = self.index.all(EventFilter(commitment=digest))
        lifecycle = [e for e in events if e.kind in _LIFECYCLE]
        with self._lock:
            active = self.ledger.consent_active(bytes.fromhex(digest[2:]))
            erased = self.ledger.erasure_completed(bytes.fromhex(digest[2:]))
        kinds = {e.kind for e in lifecycle}
        registered = next(
            (e for e in lifecycle if e.kind == EventKind.CONSENT_REGISTERED), None
        )
        if erased:
            erasure = "completed"
        elif EventKind.ERASURE_REQUESTED in kinds:
            erasure = "requested"
        else:
            erasure = "none"
        return {
            "commitment": digest,
            "registered": registered is not None,
            "holder": None if registered is None else registered.member,
            "purpose": None if registered is None else registered.data.get("purpose"),
            "expiry": None if registered is None else registered.data.get("expiry"),
            "withdrawn": EventKind.CONSENT_WITHDRAWN in kinds,
            "erasure": erasure,
            "active": active,
            "lifecycle": [event_json(e) for e in lifecycle],
            "other_events": [event_json(e) for e in events if e not in lifecycle],
        }

    def provenance(self) -> dict[str, Any]:
        """Every recorded model, merged by digest, for the provenance graph.

        A digest recorded by several members (both ends of a pairwise average
        record the same result) is one node with every recorder listed.
        """
        self.sync()
        records = self.index.of_kinds([str(EventKind.MODEL_RECORDED)])
        truncated = len(records) > MAX_MODELS
        records = records[-MAX_MODELS:]
        models: dict[str, dict[str, Any]] = {}
        for e in records:
            digest = str(e.commitment)
            node = models.setdefault(
                digest,
                {
                    "digest": digest,
                    "round": int(e.data.get("round", 0)),
                    "recorded_by": [],
                    "parents": [],
                    "contributors": [],
                    "first_recorded": iso_time(e.timestamp),
                },
            )
            if e.member not in node["recorded_by"]:
                node["recorded_by"].append(e.member)
            for p in e.data.get("parents", []):
                if p not in node["parents"]:
                    node["parents"].append(p)
            for c in e.data.get("contributors", []):
                if c not in node["contributors"]:
                    node["contributors"].append(c)
        rounds = sorted({m["round"] for m in models.values()})
        return {
            "rounds": rounds,
            "models": list(models.values()),
            "truncated": truncated,
        }

    # ----- verification tools ------------------------------------------------------

    def check_commitment(
        self,
        *,
        salt_hex: str,
        pseudonym: str,
        purpose: int | str,
        commitment: str | None = None,
    ) -> dict[str, Any]:
        """Recompute a commitment from what a site disclosed and find it on the ledger.

        The salt and pseudonym are used for this computation only: never
        stored, logged or echoed back.

        Args:
            salt_hex: the salt as hex (``0x`` optional), at least 16 bytes.
            pseudonym: the site's pseudonym of the patient.
            purpose: the purpose code, 0..65535.
            commitment: if given, the commitment the site claims; reported as
                matching or not.

        Raises:
            BadQuery: a malformed salt, pseudonym, purpose or commitment.
        """
        text = salt_hex.strip()
        text = text[2:] if text[:2] in ("0x", "0X") else text
        try:
            salt = bytes.fromhex(text)
        except ValueError:
            raise BadQuery("salt: expected hex digits") from None
        try:
            code = int(purpose)
        except (TypeError, ValueError):
            raise BadQuery(f"purpose: expected an integer 0..{MAX_PURPOSE}") from None
        try:
            computed = "0x" + commit(salt, pseudonym, code).hex()
        except MalformedDigest as exc:
            raise BadQuery(str(exc)) from None
        claimed = None if not commitment else parse_digest(commitment)
        state = self.commitment(computed)
        return {
            "computed": computed,
            "claimed": claimed,
            "matches_claim": None if claimed is None else claimed == computed,
            "on_ledger": state["registered"] or bool(state["lifecycle"]),
            "state": state,
        }

    def check_status_list(self, credential: Mapping[str, Any]) -> dict[str, Any]:
        """Is this status list credential the one the ledger anchors for its issuer?

        Raises:
            BadQuery: not a JSON object naming an issuer.
        """
        if not isinstance(credential, Mapping):
            raise BadQuery("status list: expected a JSON object (a credential)")
        vc = dict(credential)
        issuer = vc.get("issuer")
        issuer_did = issuer.get("id") if isinstance(issuer, dict) else issuer
        if not isinstance(issuer_did, str) or not issuer_did.startswith("did:"):
            raise BadQuery("status list: expected an issuer DID in 'issuer'")
        try:
            digest = "0x" + status_list_digest(vc).hex()
        except Exception as exc:  # jcs/identity refuse non-canonicalisable input
            raise BadQuery(f"status list: cannot be digested ({exc})") from None
        check = verify_credential(vc, fetcher=offline_fetcher)
        self.sync()
        with self._lock:
            current = self.ledger.current_status_list_digest(issuer_did)
        published = self.index.all(
            EventFilter(kind=str(EventKind.STATUS_LIST_PUBLISHED))
        )
        history = [e for e in published if e.data.get("issuerDid") == issuer_did]
        seen = next((e for e in history if e.commitment == digest), None)
        current_hex = None if current is None else "0x" + current.hex()
        return {
            "issuer": issuer_did,
            "digest": digest,
            "current_digest": current_hex,
            "is_current": current_hex == digest,
            "superseded": seen is not None and seen.commitment != current_hex,
            "signature_valid": check.verified,
            "signature_errors": check.errors,
            "publications": [event_json(e) for e in history],
        }

    def check_model(self, data: bytes) -> dict[str, Any]:
        """Digest an uploaded safetensors file and find its model records.

        Raises:
            BadQuery: not a safetensors file.
        """
        found = model_file_digest(data)
        self.sync()
        records = self.index.all(
            EventFilter(
                kind=str(EventKind.MODEL_RECORDED), commitment=found.model_digest
            )
        )
        return {
            "model_digest": found.model_digest,
            "file_sha256": found.file_sha256,
            "tensors": found.tensors,
            "recorded": bool(records),
            "records": [event_json(e) for e in records],
        }
