"""Software attestation: measure what a site runs, sign it, check peers' records.

At start a site measures its software into one SHA-256 digest over a canonical
manifest (sorted keys, compact JSON):

- ``files``: every ``.py`` file and package data file of the project's packages
  (``common``, ``identity``, ``contracts``, ``ledger``, ``ml``, ``node``) by
  path relative to the package's parent, with its SHA-256;
- ``contracts``: the compiled contract artifacts (also in ``files``; listed
  apart so an auditor sees which contract build a site runs);
- ``model``: SHA-256 of the model architecture (``ModelConfig`` as JSON);
- ``policy``: :meth:`Policy.measured_digest` (the policy without its list of
  accepted measurements, which cannot contain its own digest).

The site signs an *evidence* document with its DID key and records on the
ledger the measurement digest and the SHA-256 of the signed evidence. The
evidence format leaves room for a hardware quote (TPM 2.0, AMD SEV-SNP or Intel
SGX), which would bind the measurement to a machine's root of trust; without
one, the record is the site's own statement::

    {"type": "software", "subject": "did:key:...", "created": "...",
     "measurement": "<hex>", "measurements": {"files": ..., "contracts": ...,
     "model": ..., "policy": ...}, "hardware": null,
     "proof": {"verificationMethod": "did:key:...#...", "signature": "<hex>"}}

Peers accept an exchange only if the peer's latest attestation on the ledger,
recorded by the peer itself, names a measurement the policy accepts
(:class:`AttestationCheck`, run by the daemon's per-exchange policy hook). A
site that changed one file therefore measures differently and is refused.

This does not protect against a hostile administrator: the measurement is
computed and reported by the software being measured, so a site that wants to
lie can record an accepted digest while running anything. It catches drift,
mistakes and unreviewed patches, and it makes a site's claim auditable; only a
hardware quote (the ``hardware`` field) would make it a proof.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.errors import ParomaError
from identity.did import public_key_from_did_key
from identity.keys import SigningKey, verify_signature
from ledger.api import EventKind, Ledger
from ml.model import ModelConfig
from ml.weights import atomic_write_bytes
from node.governance.errors import AttestationRefused
from node.governance.policy import Policy

logger = logging.getLogger(__name__)

MEASURED_PACKAGES = ("common", "identity", "contracts", "ledger", "ml", "node")
DATA_SUFFIXES = (
    ".py",
    ".json",
    ".jsonld",
    ".sol",
    ".toml",
    ".safetensors",
    ".html",
    ".js",
    ".css",
)
EVIDENCE_TYPE = "software"
HARDWARE_QUOTE_KINDS = ("tpm", "sev-snp", "sgx")


@dataclass(frozen=True)
class Measurement:
    """A site's software measurement.

    Attributes:
        digest: SHA-256 of the canonical manifest (what the ledger holds).
        files: relative path -> SHA-256 hex of every measured file.
        contracts: artifact path -> SHA-256 hex.
        model: SHA-256 hex of the model architecture JSON.
        policy: SHA-256 hex of the measured policy.
    """

    digest: bytes
    files: Mapping[str, str]
    contracts: Mapping[str, str]
    model: str
    policy: str

    def summary(self) -> dict[str, str]:
        """The parts' digests (for the evidence; the file list stays local)."""
        return {
            "files": _digest_json(self.files).hex(),
            "contracts": _digest_json(self.contracts).hex(),
            "model": self.model,
            "policy": self.policy,
        }


def package_roots(packages: Iterable[str] = MEASURED_PACKAGES) -> dict[str, Path]:
    """The folder of each installed package, found through the import system."""
    roots = {}
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise AttestationRefused(f"package {name!r} to measure is not installed")
        roots[name] = Path(next(iter(spec.submodule_search_locations)))
    return roots


def measure_software(
    policy: Policy,
    model_config: ModelConfig,
    *,
    roots: Mapping[str, Path] | None = None,
) -> Measurement:
    """Measure the installed packages, the model architecture and the policy.

    Args:
        policy: the site's policy.
        model_config: the architecture it trains.
        roots: package name -> folder (default: the installed packages);
            tests pass a copy to measure a changed tree.
    """
    roots = dict(roots) if roots is not None else package_roots()
    files: dict[str, str] = {}
    for name in sorted(roots):
        root = roots[name]
        for path in sorted(root.rglob("*")):
            if (
                path.is_file()
                and path.suffix in DATA_SUFFIXES
                and "__pycache__" not in path.parts
            ):
                rel = f"{name}/{path.relative_to(root).as_posix()}"
                files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    contracts = {k: v for k, v in files.items() if k.startswith("contracts/artifacts/")}
    model = _digest_json(asdict(model_config)).hex()
    policy_digest = policy.measured_digest().hex()
    manifest = {
        "files": files,
        "contracts": contracts,
        "model": model,
        "policy": policy_digest,
    }
    return Measurement(_digest_json(manifest), files, contracts, model, policy_digest)


def _digest_json(value: Any) -> bytes:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).digest()


# ----- evidence -------------------------------------------------------------


def make_evidence(
    key: SigningKey,
    measurement: Measurement,
    *,
    hardware: Mapping[str, str] | None = None,
    created: datetime | None = None,
) -> dict[str, Any]:
    """The signed evidence document (see the module docstring for its format).

    Args:
        key: the site's DID key.
        measurement: what was measured.
        hardware: a quote keyed by ``tpm``, ``sev-snp`` or ``sgx`` (None: none).
        created: signing time (default now, UTC).
    """
    if hardware is not None and not set(hardware) <= set(HARDWARE_QUOTE_KINDS):
        raise AttestationRefused(
            f"hardware quote kinds must be among {', '.join(HARDWARE_QUOTE_KINDS)}"
        )
    body: dict[str, Any] = {
        "type": EVIDENCE_TYPE,
        "subject": key.did,
        "created": (created or datetime.now(UTC)).isoformat(),
        "measurement": measurement.digest.hex(),
        "measurements": measurement.summary(),
        "hardware": dict(hardware) if hardware is not None else None,
    }
    signature = key.sign(_digest_json(body))
    body["proof"] = {
        "verificationMethod": key.verification_method,
        "signature": signature.hex(),
    }
    return body


def evidence_digest(evidence: Mapping[str, Any]) -> bytes:
    """SHA-256 of the evidence's canonical JSON (what the ledger holds)."""
    return _digest_json(evidence)


def verify_evidence(evidence: Mapping[str, Any]) -> bool:
    """True if the evidence is signed by the key of its ``subject`` DID."""
    try:
        body = {k: v for k, v in evidence.items() if k != "proof"}
        proof = evidence["proof"]
        public = public_key_from_did_key(str(body["subject"]))
        signature = bytes.fromhex(str(proof["signature"]))
    except (KeyError, TypeError, ValueError, ParomaError):
        return False
    return verify_signature(public, _digest_json(body), signature)


def record_attestation(
    ledger: Ledger,
    key: SigningKey,
    measurement: Measurement,
    policy: Policy,
    evidence_path: Path,
) -> bytes:
    """Sign evidence, store it at ``evidence_path`` and record it on the ledger.

    The verdict recorded is this site's own: whether its policy accepts its
    measurement (always True when attestation is not required).

    Returns:
        The evidence digest.
    """
    evidence = make_evidence(key, measurement)
    digest = evidence_digest(evidence)
    data = json.dumps(evidence, indent=2, sort_keys=True).encode()
    atomic_write_bytes(evidence_path, data)
    verdict = accepts(policy, measurement.digest)
    ledger.record_attestation(key.did, measurement.digest, digest, verdict)
    logger.info(
        "attested %s: measurement %s (%s)",
        key.did,
        measurement.digest.hex()[:16],
        "accepted" if verdict else "not in the policy",
    )
    return digest


def accepts(policy: Policy, measurement: bytes) -> bool:
    """True if ``policy`` accepts the measurement (or does not require one)."""
    rules = policy.attestation
    return not rules.required or measurement in rules.accepted_measurements


@dataclass(frozen=True)
class AttestationRecord:
    """A site's latest self-attestation on the ledger."""

    subject: str
    measurement: bytes
    evidence: bytes
    verdict: bool
    timestamp: int


def latest_attestation(ledger: Ledger, did: str) -> AttestationRecord | None:
    """The newest attestation ``did`` recorded about itself, None if none."""
    events = ledger.events(EventKind.ATTESTATION, member=did)
    for event in reversed(events):
        data = event.data
        if data.get("subjectDid") != did or event.commitment is None:
            continue
        return AttestationRecord(
            did,
            bytes.fromhex(event.commitment.removeprefix("0x")),
            bytes.fromhex(str(data.get("evidenceDigest", "0x")).removeprefix("0x")),
            bool(data.get("verdict")),
            event.timestamp,
        )
    return None


def check_peer(ledger: Ledger, policy: Policy, did: str) -> None:
    """Raise unless ``did``'s latest attestation names an accepted measurement.

    Raises:
        AttestationRefused: no attestation, or its measurement is not listed.
    """
    if not policy.attestation.required:
        return
    record = latest_attestation(ledger, did)
    if record is None:
        raise AttestationRefused(f"{did}: no attestation on the ledger")
    if record.measurement not in policy.attestation.accepted_measurements:
        raise AttestationRefused(
            f"{did}: software measurement {record.measurement.hex()[:16]}... "
            "is not accepted by the policy"
        )


def accepted_list(measurements: Sequence[bytes]) -> list[str]:
    """Measurements as the policy's ``accepted_measurements`` strings."""
    return [m.hex() for m in measurements]
