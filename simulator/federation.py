"""The federation's set-up and governance, on the real ledger and identity code.

The founders deploy the federation contract on an embedded ledger; the other
hospitals are proposed by one founder and admitted once ``threshold`` members
voted. The first founder is the federation's credential issuer: it issues each
admitted site a membership credential with a Bitstring Status List entry, and
anchors the status list's digest on the ledger so that every verifier uses the
current list. Each site records an attestation of its software measurement
(``node.governance.attestation``: signed evidence, digest on the ledger).

Each site keeps its patients the way a real node does: a site folder with its
own :class:`node.governance.site.SiteGovernance` (patient registry, consent
commitments on the ledger, erasure with proof). The simulator writes each
consenting patient's phantom as NIfTI files, registers them through
``register_consents`` (which copies them into the registry), and deletes its
own copies; from then on the site's training reads cases only through
governance's consent-checked path, and withdrawals and erasures go through
``withdraw_consent`` and ``erase``.

All sites live in one process and share one embedded chain, whose reads are
not thread-safe: every ledger call goes through :class:`LockedLedger`, which
holds one process-wide lock.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import nibabel as nib
import tomli_w

from identity.credentials import issue_credential, make_credential
from identity.keys import SigningKey
from identity.proofs import Cryptosuite
from identity.status_list import StatusList, status_list_digest
from ledger import account_address, deploy_federation, new_account_key, open_ledger
from ledger.api import EventKind, Ledger
from ledger.errors import LedgerError
from ml.data import Case, classes_to_mmwhs
from ml.model import ModelConfig
from node.auth import MEMBERSHIP_CREDENTIAL, CredentialAuthorizer
from node.governance.erasure import ErasureReport
from node.governance.errors import PatientUnknown
from node.governance.policy import (
    Policy,
    PrivacyRules,
    example_policy_text,
    parse_policy,
)
from node.governance.registry import CaseId, ConsentState
from node.governance.site import SiteGovernance
from simulator.errors import RunFailed

logger = logging.getLogger(__name__)

T = TypeVar("T")
JCS = Cryptosuite.EDDSA_JCS_2022
SITE_ROLE = "site"
GOVERNANCE_DIR = "governance"  # inside a site's folder


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
        self, ledger: Ledger, lock: threading.RLock, reads: AuthorizationReads
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


class ChainLocked:
    """A site's :class:`ledger.api.Ledger` whose every call holds the chain lock.

    What :class:`SiteGovernance` is given: it calls the ledger from whichever
    thread runs a governance action, while the daemons record models from
    theirs. A ``batch()`` holds the (re-entrant) lock from its start to its
    last receipt, so no other site's write lands inside it.
    """

    def __init__(self, handle: LockedLedger) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._handle.ledger, name)
        if not callable(value):
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._handle.lock:
                return value(*args, **kwargs)

        return locked

    @contextlib.contextmanager
    def batch(self) -> Iterator[Any]:
        with self._handle.lock, self._handle.ledger.batch() as receipts:
            yield receipts


@dataclass
class SiteIdentity:
    """One site's keys, ledger handle, credential and governance.

    Attributes:
        name: the site's name.
        key: its DID key (also its libp2p identity).
        account_key: its ledger account key (secp256k1).
        ledger: its handle, under the shared lock.
        credential: its membership credential (None until admitted).
        status_index: its entry in the issuer's status list.
        governance: its real site governance (None until it joins).
        pseudonyms: the patients it registered, in order (what the hospital's
            own records know; never logged).
        reads: reads of each case's voxels by any of its trainers, by case id
            (governance's ``observer`` hook, called after the consent check).
    """

    name: str
    key: SigningKey
    account_key: bytes
    ledger: LockedLedger | None = None
    credential: dict[str, Any] | None = None
    status_index: int = -1
    governance: SiteGovernance | None = None
    pseudonyms: list[str] = field(default_factory=list)
    reads: dict[CaseId, int] = field(default_factory=dict)
    _reads_lock: threading.Lock = field(default_factory=threading.Lock)

    def count_read(self, case_id: CaseId) -> None:
        """Governance's ``observer``: one consented read of a case's voxels."""
        with self._reads_lock:
            self.reads[case_id] = self.reads.get(case_id, 0) + 1

    def gov(self) -> SiteGovernance:
        """The site's governance (the site must have joined)."""
        if self.governance is None:
            raise RunFailed(f"site {self.name} has no governance (not joined)")
        return self.governance

    def registered(self, pseudonym: str) -> bool:
        """Whether the registry still holds the patient (False once erased:
        its row, pseudonym and salt are gone)."""
        try:
            self.gov().registry.find(pseudonym)
        except PatientUnknown:
            return False
        return True

    def active(self) -> list[str]:
        """The pseudonyms whose consent is active now, in registration order
        (none before the site joined)."""
        if self.governance is None:
            return []
        gov = self.governance
        out = []
        for pseudonym in self.pseudonyms:
            try:
                patient = gov.registry.find(pseudonym)
            except PatientUnknown:
                continue  # erased
            if patient.state is ConsentState.ACTIVE:
                out.append(pseudonym)
        return out

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
        sites_dir: where each site's folder goes (``sites_dir/NAME/governance``).
        lr: the sites' Adam learning rate (the policy's ``training.lr``).
        batch_size: crops per local step (the policy's ``training.batch_size``).
        privacy: the policy's ``[privacy]`` (None: the shipped policy's, DP off).
    """

    def __init__(
        self,
        ledger_dir: Path,
        names: Sequence[str],
        founders: Sequence[str],
        threshold: int,
        model_config: ModelConfig,
        *,
        sites_dir: Path,
        lr: float,
        batch_size: int,
        privacy: PrivacyRules | None = None,
    ) -> None:
        self.lock = threading.RLock()  # re-entrant: held across a ledger batch
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
        self.model_config = model_config
        self.sites_dir = sites_dir
        # Every site runs this very code under one policy: the shipped example
        # with the scenario's training budget and privacy (so one measurement
        # for all).
        self.policy = simulation_policy(lr, batch_size, privacy)

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

    def join(self, name: str) -> SiteGovernance:
        """Open the admitted site's governance in its folder and attest.

        ``SiteGovernance.attest`` measures the software, records the signed
        evidence on the ledger and publishes the site's catalogue offer.
        """
        site = self.sites[name]
        if site.governance is None:
            site.governance = SiteGovernance(
                self.sites_dir / name / GOVERNANCE_DIR,
                self.policy,
                site.key,
                # ChainLocked implements every Ledger method by delegation.
                cast(Ledger, ChainLocked(self.handle(name))),
                self.model_config,
                scanner_profile=name,
                status_lists=self.status_lists,
            )
        site.governance.attest()
        return site.governance

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

    def register_consents(self, name: str, cases: Sequence[Case]) -> None:
        """Register these patients' consent at the site (one ledger batch).

        Each case is written as NIfTI files (the hospital's export),
        ``SiteGovernance.register_consents`` copies them into the registry,
        and the export is deleted: the registry holds the only copy.
        """
        site = self.sites[name]
        gov = site.gov()
        incoming = self.sites_dir / name / "incoming"
        try:
            patients: list[tuple[str, Path, Path | None]] = []
            for i, case in enumerate(cases):
                # File names carry an index, not the pseudonym.
                scan, labels = write_case_nifti(case, incoming, f"case{i:04d}")
                patients.append((case.case_id, scan, labels))
            gov.register_consents(patients)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        site.pseudonyms.extend(c.case_id for c in cases)

    def withdraw_consent(self, name: str, pseudonym: str) -> None:
        """The patient withdraws: registry first (no more reads), then ledger."""
        self.sites[name].gov().withdraw_consent(pseudonym)

    def erase(self, name: str, pseudonym: str) -> ErasureReport:
        """Erase a patient through the site's governance (GDPR Art. 17).

        Returns:
            The erasure report (models that saw the data, proof digest).

        Raises:
            RunFailed: the ledger does not show the completed erasure.
        """
        report = self.sites[name].gov().erase(pseudonym)
        commitment = bytes.fromhex(report.commitment)
        if not self.handle(name).call(lambda led: led.erasure_completed(commitment)):
            raise RunFailed(f"site {name}: the ledger does not show the erasure")
        return report

    # ----- audit ----------------------------------------------------------------------

    def event_counts(self) -> dict[str, int]:
        """How many events of each kind the ledger holds."""
        handle = self.handle(self.founders[0])

        def counts(led: Ledger) -> dict[str, int]:
            return {str(kind): led.count_events(kind) for kind in EventKind}

        return handle.call(counts)

    def close(self) -> None:
        for site in self.sites.values():
            if site.governance is not None:
                site.governance.close()
                site.governance = None
            if site.ledger is not None:
                site.ledger.call(lambda led: led.close())
                site.ledger = None


def simulation_policy(
    lr: float, batch_size: int, privacy: PrivacyRules | None = None
) -> Policy:
    """The shipped example policy with the scenario's learning rate, batch and
    differential privacy (None keeps the shipped ``[privacy]``: DP off).

    Built from TOML text (not by replacing fields) so the policy's raw form,
    which the attestation measures, says what the sites actually run.
    """
    raw = tomllib.loads(example_policy_text())
    raw["training"]["lr"] = lr
    raw["training"]["batch_size"] = batch_size
    if privacy is not None:
        raw["privacy"] = {
            "enabled": privacy.enabled,
            "noise_multiplier": privacy.noise_multiplier,
            "max_grad_norm": privacy.max_grad_norm,
            "epsilon_budget": privacy.epsilon_budget,
            "delta": privacy.delta,
        }
    return parse_policy(tomli_w.dumps(raw), source="simulation policy")


def write_case_nifti(case: Case, folder: Path, stem: str) -> tuple[Path, Path]:
    """Write an in-memory case as ``STEM_image.nii.gz`` and ``STEM_label.nii.gz``.

    The layout of ``ml.phantom.write_phantom_nifti`` (labels in MM-WHS codes,
    the affine as sform and qform), for a case that keeps only its volumes.

    Returns:
        (image path, label path).
    """
    image, labels = case.read()
    folder.mkdir(parents=True, exist_ok=True)
    image_path = folder / f"{stem}_image.nii.gz"
    label_path = folder / f"{stem}_label.nii.gz"
    pairs = ((image.array, image_path), (classes_to_mmwhs(labels.array), label_path))
    for data, path in pairs:
        img = nib.Nifti1Image(data, image.affine)  # type: ignore[no-untyped-call]
        img.set_qform(image.affine, code=1)  # type: ignore[no-untyped-call]
        img.set_sform(image.affine, code=1)  # type: ignore[no-untyped-call]
        nib.save(img, path)
    return image_path, label_path
