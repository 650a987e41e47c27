"""The federation's set-up and governance, on the real ledger and identity code.

The founders deploy the federation contract on an embedded ledger; the other
hospitals are proposed by one founder and admitted once ``threshold`` members
voted. The first founder is the federation's credential issuer: it issues each
admitted site a membership credential with a Bitstring Status List entry, and
anchors the status list's digest on the ledger so that every verifier uses the
current list. Each site records an attestation of its software measurement
(``node.governance.attestation``: signed evidence, digest on the ledger),
registers its patients' consent as salted commitments, and later withdraws a
consent or erases a patient (crypto-shredding: data and salt deleted, then the
completed erasure logged).

All sites live in one process and share one embedded chain, whose reads are
not thread-safe: every ledger call goes through :class:`LockedLedger`, which
holds one process-wide lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from identity.credentials import issue_credential, make_credential
from identity.keys import SigningKey
from identity.proofs import Cryptosuite
from identity.status_list import StatusList, status_list_digest
from ledger import account_address, deploy_federation, new_account_key, open_ledger
from ledger.api import EventKind, Ledger
from ledger.commitments import commit, new_salt
from ledger.errors import LedgerError
from ml.model import ModelConfig
from node.auth import MEMBERSHIP_CREDENTIAL, CredentialAuthorizer
from node.governance.attestation import measure_software, record_attestation
from node.governance.policy import example_policy
from simulator.errors import RunFailed

logger = logging.getLogger(__name__)

T = TypeVar("T")
JCS = Cryptosuite.EDDSA_JCS_2022
SITE_ROLE = "site"
PURPOSE_TRAINING = 1  # the federation's purpose code for model training


class AuthorizationReads:
    """The answers of the two ledger reads every authorization makes, remembered
    until the federation changes membership or a status list.

    Why: all sites share one embedded chain whose calls are serialised, and
    the sites' model records (one mined block each) queue on that lock; with
    dozens of sites an exchange's authorization then waited longer than
    libp2p's 10 s stream negotiation. Only :class:`Federation` writes
    membership and status lists on this chain, and it clears these answers
    with every such write, so a cached answer is always the chain's current
    one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, str], Any] = {}  # (read, argument) -> value

    def get(self, read: str, argument: str, fetch: Callable[[], Any]) -> Any:
        key = (read, argument)
        with self._lock:
            if key in self._answers:
                return self._answers[key]
        value = fetch()
        with self._lock:
            self._answers[key] = value
        return value

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()


class LockedLedger:
    """One site's ledger handle, every call under the process-wide chain lock.

    Implements the reads and writes the daemon needs
    (``node.auth.MembershipLedger``, ``node.daemon.ModelLedger``) and
    :meth:`call` for everything else.
    """

    def __init__(
        self, ledger: Ledger, lock: threading.Lock, reads: AuthorizationReads
    ) -> None:
        self.ledger = ledger
        self.lock = lock  # shared by every handle on the embedded chain
        self.reads = reads  # shared too; cleared by Federation's writes

    def call(self, fn: Callable[[Ledger], T]) -> T:
        with self.lock:
            return fn(self.ledger)

    def is_member(self, did: str) -> bool:
        return bool(
            self.reads.get(
                "is_member", did, lambda: self.call(lambda led: led.is_member(did))
            )
        )

    def current_status_list_digest(self, issuer_did: str) -> bytes | None:
        value = self.reads.get(
            "status",
            issuer_did,
            lambda: self.call(lambda led: led.current_status_list_digest(issuer_did)),
        )
        return value if isinstance(value, bytes) else None

    def record_model(
        self,
        round: int,
        model_digest: bytes,
        parents: Sequence[bytes],
        contributors: Sequence[str],
    ) -> object:
        return self.call(
            lambda led: led.record_model(round, model_digest, parents, contributors)
        )


@dataclass
class Consent:
    """One patient's consent as the site holds it (salt never leaves the site).

    Attributes:
        salt: 32 random bytes; deleted at erasure (crypto-shredding).
        commitment: what the ledger holds.
        active: registered and not withdrawn or erased.
    """

    salt: bytes | None
    commitment: bytes
    active: bool


class ConsentNotGiven(RunFailed):
    """A site tried to read a case whose consent is not active."""


@dataclass
class SiteConsents:
    """A site's consent registry, checked on every read of a case's voxels.

    Attributes:
        site: the site's name.
        consents: pseudonym -> consent; pseudonyms are never logged.
        reads: reads of each case's voxels (the data set's ``on_read`` hook).
        refused: reads refused because the consent was not active.
        erased: how many patients were erased.
    """

    site: str
    consents: dict[str, Consent] = field(default_factory=dict)
    reads: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    erased: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_read(self, case_id: str) -> None:
        """``ml.data.CaseDataset`` hook: refuse a case without active consent."""
        with self._lock:
            consent = self.consents.get(case_id)
            if consent is None or not consent.active:
                self.refused += 1
                raise ConsentNotGiven(f"site {self.site}: a case has no active consent")
            self.reads[case_id] = self.reads.get(case_id, 0) + 1

    def active(self) -> list[str]:
        with self._lock:
            return [p for p, c in self.consents.items() if c.active]


@dataclass
class SiteIdentity:
    """One site's keys, ledger handle, credential and consents.

    Attributes:
        name: the site's name.
        key: its DID key (also its libp2p identity).
        account_key: its ledger account key (secp256k1).
        ledger: its handle, under the shared lock.
        credential: its membership credential (None until admitted).
        status_index: its entry in the issuer's status list.
        consents: its consent registry.
    """

    name: str
    key: SigningKey
    account_key: bytes
    ledger: LockedLedger | None = None
    credential: dict[str, Any] | None = None
    status_index: int = -1
    consents: SiteConsents = field(init=False)

    def __post_init__(self) -> None:
        self.consents = SiteConsents(self.name)

    @property
    def did(self) -> str:
        return self.key.did

    @property
    def account(self) -> str:
        return account_address(self.account_key)


class Federation:
    """The federation of one run: ledger, issuer, status list, sites.

    Args:
        ledger_dir: the embedded ledger folder (must not hold a deployment).
        names: every site, in scenario order.
        founders: the founding sites' names.
        threshold: k, the votes needed to admit a member.
        model_config: the architecture the sites train (part of the measurement).
    """

    def __init__(
        self,
        ledger_dir: Path,
        names: Sequence[str],
        founders: Sequence[str],
        threshold: int,
        model_config: ModelConfig,
    ) -> None:
        self.lock = threading.Lock()
        self.reads = AuthorizationReads()
        self.ledger_dir = ledger_dir
        self.sites = {
            n: SiteIdentity(n, SigningKey.generate(), new_account_key()) for n in names
        }
        self.founders = list(founders)
        self.threshold = threshold
        issuer = self.sites[self.founders[0]]
        self.issuer = issuer.key  # the first founder issues credentials
        self.status_list = StatusList.create(self.issuer, "urn:paroma:sim:status:1")
        self.status_vc: dict[str, Any] = {}
        # Every site runs this very code: one measurement (node.governance's
        # manifest of the packages, the model architecture and the policy).
        self.policy = example_policy()
        self.measurement = measure_software(self.policy, model_config)

    # ----- set-up ---------------------------------------------------------------------

    def deploy(self) -> None:
        """The founders deploy the contract; each founder opens its handle."""
        first = self.sites[self.founders[0]]
        founders = [
            (self.sites[n].did, self.sites[n].account, [SITE_ROLE])
            for n in self.founders
        ]
        try:
            handle = deploy_federation(
                self.ledger_dir,
                deployer_key=first.account_key,
                founders=founders,
                threshold=self.threshold,
            )
        except LedgerError as exc:
            raise RunFailed(f"deploying the federation failed: {exc}") from exc
        first.ledger = LockedLedger(handle, self.lock, self.reads)
        for name in self.founders[1:]:
            self._open(name)

    def _open(self, name: str) -> None:
        site = self.sites[name]
        with self.lock:
            handle = open_ledger(self.ledger_dir, account_key=site.account_key)
        site.ledger = LockedLedger(handle, self.lock, self.reads)

    def handle(self, name: str) -> LockedLedger:
        site = self.sites[name]
        if site.ledger is None:
            raise RunFailed(f"site {name} has no ledger handle (not admitted)")
        return site.ledger

    def admit(self, name: str) -> int:
        """Admit a site by vote: a founder proposes, members vote up to k.

        Returns the number of votes cast (the proposer's included).
        """
        site = self.sites[name]
        proposer = self.handle(self.founders[0])
        pid = proposer.call(
            lambda led: led.propose_member(site.did, site.account, [SITE_ROLE])
        )
        if pid is None:
            raise RunFailed(f"admitting {name}: no proposal id")
        votes = 1
        voters = [n for n in self.founders[1:]] + [
            n for n in self.sites if n not in self.founders and self.sites[n].ledger
        ]
        for voter in voters:
            if proposer.call(lambda led: led.is_member(site.did)):
                break
            self.handle(voter).call(lambda led: led.vote(pid))
            votes += 1
        self.reads.clear()
        if not proposer.call(lambda led: led.is_member(site.did)):
            raise RunFailed(f"admitting {name}: the vote did not reach the threshold")
        self._open(name)
        logger.info("site %s admitted with %d votes", name, votes)
        return votes

    def issue(self, name: str) -> None:
        """Issue the site's membership credential, with a status list entry."""
        site = self.sites[name]
        site.status_index = self.status_list.allocate()
        now = datetime.now(UTC)
        unsigned = make_credential(
            self.issuer.did,
            site.did,
            [MEMBERSHIP_CREDENTIAL],
            {"role": SITE_ROLE},
            now - timedelta(minutes=5),
            now + timedelta(days=30),
            status=self.status_list.entry(site.status_index),
        )
        site.credential = issue_credential(unsigned, self.issuer, cryptosuite=JCS)

    def publish_status(self) -> None:
        """Sign the status list and anchor its digest on the ledger."""
        status_vc = self.status_list.to_credential(self.issuer, cryptosuite=JCS)
        digest = status_list_digest(status_vc)
        issuer_did = self.issuer.did
        self.handle(self.founders[0]).call(
            lambda led: led.publish_status_list(issuer_did, digest)
        )
        # The new list and the ledger's new digest take effect together.
        self.status_vc = status_vc
        self.reads.clear()

    def status_lists(self) -> list[dict[str, Any]]:
        """The issuer's current status list credential (what verifiers use)."""
        return [self.status_vc]

    def revoke(self, name: str) -> None:
        """Revoke the site's credential and publish the new status list."""
        self.status_list.revoke(self.sites[name].status_index)
        self.publish_status()
        logger.info("credential of site %s revoked", name)

    def attest(self, name: str, evidence_dir: Path) -> None:
        """The site signs evidence of its software measurement and records it
        on the ledger (``node.governance.attestation``)."""
        site = self.sites[name]
        path = evidence_dir / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle(name).call(
            lambda led: record_attestation(
                led, site.key, self.measurement, self.policy, path
            )
        )

    def authorizer(self, name: str) -> CredentialAuthorizer:
        """The site's real authorizer (VCs, status list, ledger membership)."""
        site = self.sites[name]
        if site.credential is None:
            raise RunFailed(f"site {name} has no membership credential")
        return CredentialAuthorizer(
            site.key,
            [site.credential],
            [self.issuer.did],
            self.handle(name),
            self.status_lists,
            cryptosuite=JCS,
        )

    # ----- consent and erasure --------------------------------------------------------

    def register_consents(self, name: str, pseudonyms: Sequence[str]) -> None:
        """Register consent for these patients (one batch of transactions)."""
        site = self.sites[name]
        fresh = {}
        for pseudonym in pseudonyms:
            salt = new_salt()
            fresh[pseudonym] = Consent(
                salt, commit(salt, pseudonym, PURPOSE_TRAINING), True
            )

        def send(led: Ledger) -> None:
            with led.batch():
                for consent in fresh.values():
                    led.register_consent(consent.commitment, PURPOSE_TRAINING, 0)

        self.handle(name).call(send)
        with site.consents._lock:
            site.consents.consents.update(fresh)

    def withdraw_consent(self, name: str, pseudonym: str) -> None:
        """The patient withdraws: off the ledger's active list, no more reads."""
        site = self.sites[name]
        consent = site.consents.consents[pseudonym]
        with site.consents._lock:
            consent.active = False
        self.handle(name).call(lambda led: led.withdraw_consent(consent.commitment))

    def erase(self, name: str, pseudonym: str, delete_data: Callable[[], int]) -> None:
        """Erase a patient: request, delete data and salt, log completion.

        Args:
            name: the site.
            pseudonym: the patient.
            delete_data: deletes every copy of the patient's data at the site
                and returns how many copies it removed.
        """
        site = self.sites[name]
        consent = site.consents.consents[pseudonym]
        handle = self.handle(name)
        handle.call(lambda led: led.request_erasure(consent.commitment))
        with site.consents._lock:
            consent.active = False
        copies = delete_data()
        # Crypto-shredding: without the salt the commitment on chain can no
        # longer be linked to the pseudonym (ledger.commitments).
        consent.salt = None
        site.consents.erased += 1
        record = json.dumps(
            {"commitment": consent.commitment.hex(), "copies_deleted": copies},
            sort_keys=True,
        ).encode()
        proof = hashlib.sha256(record).digest()
        handle.call(lambda led: led.complete_erasure(consent.commitment, proof))
        if not handle.call(lambda led: led.erasure_completed(consent.commitment)):
            raise RunFailed(f"site {name}: the ledger does not show the erasure")

    # ----- audit ----------------------------------------------------------------------

    def event_counts(self) -> dict[str, int]:
        """How many events of each kind the ledger holds."""
        handle = self.handle(self.founders[0])

        def counts(led: Ledger) -> dict[str, int]:
            return {str(kind): led.count_events(kind) for kind in EventKind}

        return handle.call(counts)

    def close(self) -> None:
        for site in self.sites.values():
            if site.ledger is not None:
                site.ledger.call(lambda led: led.close())
                site.ledger = None
