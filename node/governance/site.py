"""One site's governance in one object: what the daemon, the admin interface
and the simulator call.

::

    gov = SiteGovernance(store / "governance", policy, key, ledger, ModelConfig())
    gov.attest()                                    # measure, record, publish
    commitment = gov.register_consent("P-0042", scan, labels)
    trainer = gov.trainer()                         # the daemon's provider
    gov.withdraw_consent("P-0042")                  # before the next step
    report = gov.erase("P-0042", retrain=True)      # erasure, proof, retraining
    gov.catalogue()                                 # what the federation offers

Every method blocks (ledger transactions, file copies, torch): call them from
trio through ``trio.to_thread.run_sync``. Methods that touch the ledger and the
registry run one at a time (an internal lock), so a consent and an erasure of
the same patient cannot interleave.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from identity.keys import SigningKey
from ledger.api import Ledger
from ledger.commitments import commit, new_salt
from ml.model import ModelConfig
from ml.weights import atomic_write_bytes
from node.governance import attestation, catalogue
from node.governance.erasure import ErasureReport, proof_digest, retrain_without
from node.governance.errors import ConsentNotActive, GovernanceError, PatientUnknown
from node.governance.policy import Policy, parse_policy
from node.governance.registry import ConsentState, PatientRegistry
from node.governance.staff import GovernedAuthorizer, PeerGate
from node.governance.training import EPSILON, GovernedTrainer

logger = logging.getLogger(__name__)

POLICY_FILE = "policy.toml"
EVIDENCE_FILE = "attestation.json"
CATALOGUE_FILE = "catalogue.json"
STATUS_LIST_DIR = "status-lists"


class SiteGovernance:
    """Policy, patients, consent, erasure, attestation and catalogue of a site.

    Args:
        folder: the governance folder (inside the site's store).
        policy: the application's policy (already checked).
        key: the site's DID key.
        ledger: the federation ledger, opened with this site's account.
        model_config: the architecture the federation trains.
        scanner_profile: the site's scanner profile name (for the catalogue).
        status_lists: returns the staff issuers' current status list
            credentials (default: the ``*.json`` files in
            ``folder/status-lists``).
        policy_path: where :meth:`set_policy` writes a new policy (default
            ``folder/policy.toml``; the extension passes the config's file).
    """

    def __init__(
        self,
        folder: Path | str,
        policy: Policy,
        key: SigningKey,
        ledger: Ledger,
        model_config: ModelConfig,
        *,
        scanner_profile: str = "unspecified",
        status_lists: Callable[[], Sequence[dict[str, Any]]] | None = None,
        policy_path: Path | None = None,
    ) -> None:
        self.folder = Path(folder)
        # policy_path: where set_policy stores the policy (read at next start).
        self.policy_path = policy_path or self.folder / POLICY_FILE
        self.registry = PatientRegistry(self.folder)
        self._policy = policy
        self.key = key
        self.did = key.did
        self.ledger = ledger
        self.model_config = model_config
        self.scanner_profile = scanner_profile
        self.status_lists = status_lists or self._status_list_files
        self._lock = threading.RLock()  # one governance action at a time
        self._trainers: list[GovernedTrainer] = []
        self.measurement: attestation.Measurement | None = None
        # policy_listeners: called with each new policy once it is in force.
        self.policy_listeners: list[Callable[[Policy], None]] = []

    # ----- policy ------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        """The policy in force (replaced whole by :meth:`set_policy`)."""
        return self._policy

    def set_policy(self, text: str) -> Policy:
        """Check a new policy's TOML text, store it and put it in force.

        The purpose code cannot change: the consents on the ledger were given
        for it. Attestation measures the policy, so the site attests again.

        Raises:
            PolicyInvalid: a field is wrong (nothing changes).
        """
        new = parse_policy(text, source="new policy")
        if new.purpose != self._policy.purpose:
            raise GovernanceError(
                "new policy: field 'application.purpose' cannot change "
                f"({self._policy.purpose} -> {new.purpose}): consents were given "
                "for the old purpose"
            )
        with self._lock:
            atomic_write_bytes(self.policy_path, text.encode())
            self._policy = new
            for trainer in self._trainers:
                trainer.policy = new
        for listener in self.policy_listeners:
            listener(new)
        logger.info("policy %r is in force", new.name)
        if self.measurement is not None:
            self.attest()
        return new

    # ----- consent -----------------------------------------------------------

    def register_consent(
        self, pseudonym: str, scan: Path, labels: Path | None = None
    ) -> bytes:
        """Register a patient's consent and store its scan (and labels).

        Records the salted commitment on the ledger (purpose from the policy,
        expiry from ``retention.consent_days``). The pseudonym and the salt
        stay in the site's registry.

        Returns:
            The 32-byte commitment.
        """
        return self.register_consents([(pseudonym, scan, labels)])[0]

    def register_consents(
        self, patients: Sequence[tuple[str, Path, Path | None]]
    ) -> list[bytes]:
        """Register many patients at once (one batch of ledger transactions).

        Args:
            patients: ``(pseudonym, scan, labels or None)`` for each.

        Returns:
            Their commitments, in order. If anything fails, none of them is
            kept at the site (commitments already mined stay on the ledger,
            unlinkable: their salts are gone).
        """
        policy = self._policy
        for pseudonym, scan, labels in patients:
            _check_pseudonym(pseudonym)
            for path, what in ((scan, "scan"), (labels, "labels")):
                if path is not None and not Path(path).exists():
                    # The path is not repeated: a file name may carry an id.
                    raise GovernanceError(f"{what}: the file given does not exist")
        days = policy.retention.consent_days
        expiry = int(_now() + days * 86400) if days else 0
        staged: list[tuple[str, bytes]] = []
        with self._lock:
            try:
                for pseudonym, scan, labels in patients:
                    salt = new_salt()
                    commitment = commit(salt, pseudonym, policy.purpose)
                    case_id = self.registry.add_patient(
                        pseudonym, salt, commitment, policy.purpose
                    )
                    staged.append((case_id, commitment))
                    self.registry.store_file(case_id, "scan", Path(scan))
                    if labels is not None:
                        self.registry.store_file(case_id, "labels", Path(labels))
                with self.ledger.batch():
                    for _, commitment in staged:
                        self.ledger.register_consent(commitment, policy.purpose, expiry)
            except BaseException:
                for case_id, _ in staged:
                    self.registry.delete_patient(case_id)
                raise
        logger.info("%d consents registered", len(staged))
        return [commitment for _, commitment in staged]

    def withdraw_consent(self, pseudonym: str) -> bytes:
        """Withdraw a patient's consent: excluded from the next training step.

        The registry changes first (training re-checks it before every step),
        then the withdrawal is recorded on the ledger.

        Returns:
            The commitment whose consent was withdrawn.
        """
        with self._lock:
            patient = self.registry.find(pseudonym)
            self.registry.set_state(patient.case_id, ConsentState.WITHDRAWN)
            for trainer in self._trainers:
                trainer.forget(patient.case_id)
            if self.ledger.consent_active(patient.commitment):
                self.ledger.withdraw_consent(patient.commitment)
        logger.info("consent withdrawn (commitment %s)", patient.commitment.hex()[:16])
        return patient.commitment

    def consented_scans(self) -> int:
        """How many patients have active consent for the policy's purpose."""
        return sum(
            1
            for p in self.registry.patients()
            if p.state is ConsentState.ACTIVE and p.purpose == self._policy.purpose
        )

    def due_for_erasure(self) -> int:
        """How many patients are older than ``retention.scan_days`` (not trained
        on any more; staff should erase them)."""
        days = self._policy.retention.scan_days
        if not days:
            return 0
        limit = _now() - days * 86400.0
        return sum(1 for p in self.registry.patients() if p.registered_at < limit)

    # ----- erasure -----------------------------------------------------------

    def erase(
        self,
        pseudonym: str,
        *,
        retrain: bool = False,
        trainer: GovernedTrainer | None = None,
    ) -> ErasureReport:
        """Erase a patient (see :mod:`node.governance.erasure` for the steps).

        Args:
            pseudonym: the patient.
            retrain: also rebuild the site's model without the patient
                (needs ``trainer`` or a trainer made by :meth:`trainer`).
            trainer: the trainer to retrain with.

        Raises:
            PatientUnknown: no such patient (or already erased).
        """
        with self._lock:
            patient = self.registry.find(pseudonym)
            commitment = patient.commitment
            self.registry.set_state(patient.case_id, ConsentState.WITHDRAWN)
            for t in self._trainers:
                t.forget(patient.case_id)
            if self.ledger.consent_active(commitment):
                self.ledger.withdraw_consent(commitment)
            self.registry.note_erasure_requested(commitment)
            self.ledger.request_erasure(commitment)
            seen = self.registry.usage(patient.case_id)
            retrained = None
            chosen = trainer or (self._trainers[0] if self._trainers else None)
            if retrain and chosen is not None:
                retrained = retrain_without(chosen, self.registry, patient)
            deleted = self.registry.delete_patient(patient.case_id)
            self.registry.drop_unused_checkpoints()
            at = _now()
            proof = proof_digest(commitment, deleted, at)
            self.ledger.complete_erasure(commitment, proof)
            self.registry.note_erasure_completed(commitment, proof, len(deleted))
        logger.info(
            "erasure completed (commitment %s, %d files)",
            commitment.hex()[:16],
            len(deleted),
        )
        return ErasureReport(
            commitment.hex(),
            proof.hex(),
            sorted(f.sha256 for f in deleted),
            at,
            seen,
            retrained,
        )

    # ----- training ----------------------------------------------------------

    def trainer(self, *, account: str = "", **kwargs: Any) -> GovernedTrainer:
        """A training provider for the daemon (kwargs go to GovernedTrainer).

        Args:
            account: whose DP counters the trainer spends from; "" (the
                daemon's) is the site's own, and :attr:`epsilon_spent` reads
                it. The simulator names one per regime.
        """
        trainer = GovernedTrainer(
            self.registry, self._policy, self.model_config, account=account, **kwargs
        )
        self._trainers.append(trainer)
        return trainer

    @property
    def epsilon_spent(self) -> float:
        """DP epsilon this site spent so far (0 without DP)."""
        return self.registry.counter(EPSILON)

    # ----- peers -------------------------------------------------------------

    def peer_gate(self) -> PeerGate:
        """The daemon's per-exchange policy hook (ledger roles + attestation)."""
        return PeerGate(lambda: self._policy, self.ledger)

    def authorizer(self, inner: Any) -> GovernedAuthorizer:
        """Wrap the daemon's authorizer to require the policy's credentials."""
        return GovernedAuthorizer(inner, lambda: self._policy)

    # ----- attestation and catalogue -----------------------------------------

    def attest(
        self, roots: Mapping[str, Path] | None = None
    ) -> attestation.Measurement:
        """Measure this site's software, record it, and publish the catalogue.

        The catalogue offer is published only if the site's own policy accepts
        its measurement (a site its peers would refuse advertises nothing).

        Args:
            roots: package folders to measure (default: the installed ones).
        """
        with self._lock:
            policy = self._policy
            measurement = attestation.measure_software(
                policy, self.model_config, roots=roots
            )
            attestation.record_attestation(
                self.ledger,
                self.key,
                measurement,
                policy,
                self.folder / EVIDENCE_FILE,
            )
            self.measurement = measurement
            if attestation.accepts(policy, measurement.digest):
                self.publish_catalogue()
        return measurement

    def publish_catalogue(self) -> bytes:
        """Publish (or refresh) this site's offer; returns its offer id."""
        with self._lock:
            metadata = catalogue.build_metadata(
                self._policy, self.did, self.consented_scans(), self.scanner_profile
            )
            return catalogue.publish(
                self.ledger,
                metadata,
                self.folder / CATALOGUE_FILE,
                self._policy.purpose,
            )

    def catalogue(self) -> list[dict[str, Any]]:
        """Every current offer of the federation, JSON-friendly."""
        return [o.to_json() for o in catalogue.list_offers(self.ledger)]

    # ----- analysis ----------------------------------------------------------

    def analyse(self, pseudonym: str, *, use_labels: bool = False) -> dict[str, Any]:
        """Run the wall thickness analysis (``ml.analysis``) on a patient's scan.

        The outputs (segmentation, thickness JSON, bull's-eye plot) go into
        the patient's case folder, so erasure deletes them, and are listed in
        the registry.

        Args:
            pseudonym: the patient (consent must be active).
            use_labels: measure on the stored label map instead of segmenting
                with the shipped model.

        Raises:
            PatientUnknown: no such patient, or no stored labels when asked.
            ConsentNotActive: the patient's consent is not active.
        """
        patient = self.registry.find(pseudonym)
        if not self.registry.is_active(patient.case_id):
            raise ConsentNotActive("the patient's consent is not active")
        scan = self.registry.file_path(patient.case_id, "scan")
        labels = self.registry.file_path(patient.case_id, "labels")
        if scan is None or (use_labels and labels is None):
            raise PatientUnknown("the patient has no stored scan or labels")
        # Imported here: the analysis pulls in matplotlib, which the staff
        # commands and the daemon's start do not need.
        from ml.analysis import analyse

        out = self.registry.case_folder(patient.case_id) / "derived"
        report = analyse(scan, labels if use_labels else None, out_dir=out)
        outputs = sorted(p for p in out.rglob("*") if p.is_file())
        for i, path in enumerate(outputs):
            self.registry.note_file(patient.case_id, f"derived-{i:03d}", path)
        result = report.to_json()
        result.pop("out_dir", None)  # a path inside the site, named by case id
        return {"outputs": [p.name for p in outputs], "report": result}

    # ----- status ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Aggregate figures for the admin interface (no patient data)."""
        return {
            "site": self.did,
            "application": self._policy.name,
            "purpose": self._policy.purpose,
            "consented_scans": self.consented_scans(),
            "epsilon_spent": self.epsilon_spent,
            "measurement": self.measurement.digest.hex() if self.measurement else None,
            "erasures": len(self.registry.erasures()),
            "due_for_erasure": self.due_for_erasure(),
        }

    def _status_list_files(self) -> list[dict[str, Any]]:
        folder = self.folder / STATUS_LIST_DIR
        lists = []
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            try:
                value = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                logger.warning("skipping status list %s: %s", path, exc)
                continue
            if isinstance(value, dict):
                # An issuer's wallet file holds {"state", "credential"}.
                lists.append(value.get("credential", value))
        return lists

    def close(self) -> None:
        self.registry.close()


def _check_pseudonym(pseudonym: str) -> None:
    if not isinstance(pseudonym, str) or not pseudonym.strip():
        raise GovernanceError("patient pseudonym: expected a non-empty string")
    if len(pseudonym) > 256:
        raise GovernanceError("patient pseudonym: expected at most 256 characters")


def _now() -> float:
    return time.time()
