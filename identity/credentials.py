"""W3C Verifiable Credentials Data Model 2.0: issue, present, verify.

Credentials and presentations are secured with one DataIntegrityProof
(:mod:`identity.proofs`). Verification reports every failed check by name
instead of stopping at the first, so a user learns all that is wrong at once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from identity.contexts import CREDENTIALS_V2, PAROMA_V1
from identity.did import Fetcher
from identity.errors import IdentityError, MalformedDocument, UnknownContext
from identity.keys import SigningKey
from identity.proofs import (
    Cryptosuite,
    ProofPurpose,
    add_proof,
    check_contexts,
    format_datetime,
    verify_proof,
)
from identity.status_list import StatusPurpose, status_bit

logger = logging.getLogger(__name__)

VERIFIABLE_CREDENTIAL = "VerifiableCredential"
VERIFIABLE_PRESENTATION = "VerifiablePresentation"
STATUS_ENTRY_TYPE = "BitstringStatusListEntry"
STATUS_LIST_CREDENTIAL_TYPE = "BitstringStatusListCredential"


@dataclass(frozen=True)
class VerificationResult:
    """What a verifier learned: ``verified`` only if ``errors`` is empty.

    Each error starts with the check that failed (``signature``, ``expired``,
    ``not yet valid``, ``revoked``, ``suspended``, ``wrong challenge``, ``wrong
    domain``, ``unknown context``, ``unsupported cryptosuite``, ``controller
    mismatch``, ``proof purpose``, ``status``, ``malformed``, ``subject
    mismatch``), then why.
    """

    verified: bool
    errors: list[str] = field(default_factory=list)
    # The presentation's holder DID (None for a bare credential).
    holder: str | None = None
    # The credentials checked: the credential itself, or a presentation's.
    credentials: list[dict[str, Any]] = field(default_factory=list)
    # The issuer DID of a bare credential (None for a presentation).
    issuer: str | None = None

    @property
    def credential_types(self) -> list[str]:
        """Every type of every verified credential, except VerifiableCredential."""
        types: list[str] = []
        for credential in self.credentials:
            for kind in _as_list(credential.get("type")):
                if kind != VERIFIABLE_CREDENTIAL and kind not in types:
                    types.append(str(kind))
        return types

    @property
    def subject(self) -> str | None:
        """The subject DID of the first credential, if it names one."""
        if not self.credentials:
            return None
        subject = _as_list(self.credentials[0].get("credentialSubject"))
        if subject and isinstance(subject[0], dict):
            found = subject[0].get("id")
            return str(found) if found is not None else None
        return None


def make_credential(
    issuer_did: str,
    subject_did: str,
    types: Sequence[str],
    claims: dict[str, Any],
    valid_from: datetime,
    valid_until: datetime | None,
    status: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build an unsigned VC 2.0 credential.

    Args:
        issuer_did: the issuer's DID.
        subject_did: the subject's DID (``credentialSubject.id``).
        types: credential types besides ``VerifiableCredential``.
        claims: further ``credentialSubject`` properties (their terms fall
            under the PAROMA-MED vocabulary unless already defined).
        valid_from: start of validity (timezone-aware).
        valid_until: end of validity, or None for no end.
        status: one or more ``credentialStatus`` entries (see
            :meth:`identity.status_list.StatusList.entry`).
    """
    if "id" in claims:
        raise MalformedDocument("claims must not carry 'id': the subject DID is it")
    credential: dict[str, Any] = {
        "@context": [CREDENTIALS_V2, PAROMA_V1],
        "id": f"urn:uuid:{uuid.uuid4()}",
        "type": [
            VERIFIABLE_CREDENTIAL,
            *[t for t in types if t != VERIFIABLE_CREDENTIAL],
        ],
        "issuer": issuer_did,
        "validFrom": format_datetime(valid_from),
        "credentialSubject": {"id": subject_did, **claims},
    }
    if valid_until is not None:
        credential["validUntil"] = format_datetime(valid_until)
    if status is not None:
        credential["credentialStatus"] = (
            dict(status) if isinstance(status, dict) else [dict(s) for s in status]
        )
    return credential


def issue_credential(
    credential: dict[str, Any],
    key: SigningKey,
    *,
    cryptosuite: str = Cryptosuite.EDDSA_RDFC_2022,
    created: datetime | None = None,
) -> dict[str, Any]:
    """Sign ``credential`` with ``key`` (assertionMethod); its issuer must be
    ``key.did``. Returns a new dict with a ``proof``."""
    if _issuer_of(credential) != key.did:
        raise MalformedDocument(
            f"credential issuer {_issuer_of(credential)!r} is not the signing key's "
            f"DID {key.did}"
        )
    _check_shape(credential, VERIFIABLE_CREDENTIAL)
    return add_proof(
        credential,
        key,
        purpose=ProofPurpose.ASSERTION_METHOD,
        cryptosuite=cryptosuite,
        created=created,
    )


def create_presentation(
    credentials: Sequence[dict[str, Any]],
    holder: SigningKey,
    *,
    challenge: str,
    domain: str,
    cryptosuite: str = Cryptosuite.EDDSA_RDFC_2022,
    created: datetime | None = None,
) -> dict[str, Any]:
    """A presentation of ``credentials`` signed by ``holder`` (authentication),
    bound to the verifier's ``challenge`` and ``domain`` (VC Data Integrity §2.1)
    so it cannot be replayed elsewhere."""
    if not challenge or not domain:
        raise MalformedDocument("a presentation needs a non-empty challenge and domain")
    presentation: dict[str, Any] = {
        "@context": [CREDENTIALS_V2],
        "id": f"urn:uuid:{uuid.uuid4()}",
        "type": [VERIFIABLE_PRESENTATION],
        "holder": holder.did,
        "verifiableCredential": [dict(c) for c in credentials],
    }
    return add_proof(
        presentation,
        holder,
        purpose=ProofPurpose.AUTHENTICATION,
        cryptosuite=cryptosuite,
        created=created,
        challenge=challenge,
        domain=domain,
    )


def verify_credential(
    credential: dict[str, Any],
    *,
    status_lists: Sequence[dict[str, Any]] = (),
    now: datetime | None = None,
    fetcher: Fetcher | None = None,
) -> VerificationResult:
    """Check a credential's proof, issuer, validity period and status.

    Args:
        credential: the secured credential.
        status_lists: signed BitstringStatusListCredentials; every
            ``credentialStatus`` entry must point to one of them.
        now: the verification time (default: the current UTC time).
        fetcher: HTTPS fetcher for did:web verification methods.
    """
    moment = now or datetime.now(UTC)
    errors = _verify_credential(credential, status_lists, moment, fetcher, depth=0)
    issuer = _issuer_of(credential) if isinstance(credential, dict) else None
    return VerificationResult(
        verified=not errors,
        errors=errors,
        credentials=[credential] if not errors else [],
        issuer=issuer,
    )


def verify_presentation(
    presentation: dict[str, Any],
    *,
    challenge: str,
    domain: str,
    status_lists: Sequence[dict[str, Any]] = (),
    now: datetime | None = None,
    fetcher: Fetcher | None = None,
) -> VerificationResult:
    """Check a presentation's proof, holder, challenge, domain, and each of its
    credentials (with :func:`verify_credential`); each credential's subject must
    be the holder."""
    moment = now or datetime.now(UTC)
    if not isinstance(presentation, dict):
        return VerificationResult(False, ["malformed: a presentation is a JSON object"])
    errors = _preflight(presentation, VERIFIABLE_PRESENTATION)
    holder = presentation.get("holder")
    holder_did = holder.get("id") if isinstance(holder, dict) else holder
    if errors:
        return VerificationResult(False, errors, holder=_str_or_none(holder_did))
    check = verify_proof(
        presentation, purpose=ProofPurpose.AUTHENTICATION, fetcher=fetcher
    )
    errors.extend(check.errors)
    if check.controller is not None and check.controller != holder_did:
        errors.append(
            f"controller mismatch: the proof's key belongs to {check.controller}, "
            f"not to the holder {holder_did!r}"
        )
    if check.proof.get("challenge") != challenge:
        errors.append(
            "wrong challenge: the presentation was made for another challenge"
        )
    if check.proof.get("domain") != domain:
        errors.append(
            f"wrong domain: made for {check.proof.get('domain')!r}, expected {domain!r}"
        )
    credentials = _as_list(presentation.get("verifiableCredential"))
    for index, credential in enumerate(credentials):
        label = f"credential[{index}]"
        if not isinstance(credential, dict):
            errors.append(f"malformed: {label} is not a JSON object")
            continue
        found = _verify_credential(credential, status_lists, moment, fetcher, depth=0)
        errors.extend(f"{e} ({label})" for e in found)
        subjects = [
            s.get("id")
            for s in _as_list(credential.get("credentialSubject"))
            if isinstance(s, dict)
        ]
        if holder_did not in subjects:
            errors.append(
                f"subject mismatch: {label} is not about the holder {holder_did!r}"
            )
    return VerificationResult(
        verified=not errors,
        errors=errors,
        holder=_str_or_none(holder_did),
        credentials=[c for c in credentials if isinstance(c, dict)]
        if not errors
        else [],
    )


def _verify_credential(
    credential: dict[str, Any],
    status_lists: Sequence[dict[str, Any]],
    now: datetime,
    fetcher: Fetcher | None,
    depth: int,
) -> list[str]:
    if not isinstance(credential, dict):
        return ["malformed: a credential is a JSON object"]
    errors = _preflight(credential, VERIFIABLE_CREDENTIAL)
    if errors:
        return errors
    issuer = _issuer_of(credential)
    check = verify_proof(
        credential, purpose=ProofPurpose.ASSERTION_METHOD, fetcher=fetcher
    )
    errors.extend(check.errors)
    if check.controller is not None and check.controller != issuer:
        errors.append(
            f"controller mismatch: the proof's key belongs to {check.controller}, "
            f"not to the issuer {issuer!r}"
        )
    errors.extend(_validity_errors(credential, now))
    if depth == 0:
        errors.extend(_status_errors(credential, status_lists, now, fetcher))
    return errors


def _preflight(document: dict[str, Any], kind: str) -> list[str]:
    """Shape checks that must pass before a proof is worth checking."""
    try:
        check_contexts(document)
        _check_shape(document, kind)
    except UnknownContext as exc:
        return [f"unknown context: {exc}"]
    except MalformedDocument as exc:
        return [f"malformed: {exc}"]
    return []


def _check_shape(document: dict[str, Any], kind: str) -> None:
    contexts = document.get("@context")
    first = contexts[0] if isinstance(contexts, list) and contexts else contexts
    if first != CREDENTIALS_V2:
        # VC Data Model 2.0 §4.3: the first context must be the v2 base context.
        raise MalformedDocument(f"the first @context must be {CREDENTIALS_V2}")
    if kind not in _as_list(document.get("type")):
        raise MalformedDocument(f"'type' must include {kind}")
    if kind == VERIFIABLE_CREDENTIAL:
        if not isinstance(_issuer_of(document), str):
            raise MalformedDocument("'issuer' must be a URL or an object with an id")
        if not _as_list(document.get("credentialSubject")):
            raise MalformedDocument("'credentialSubject' is missing")


def _validity_errors(credential: dict[str, Any], now: datetime) -> list[str]:
    errors: list[str] = []
    try:
        valid_from = _parse_time(credential.get("validFrom"), "validFrom")
        valid_until = _parse_time(credential.get("validUntil"), "validUntil")
    except MalformedDocument as exc:
        return [f"malformed: {exc}"]
    if valid_from is not None and now < valid_from:
        errors.append(f"not yet valid: validFrom is {credential['validFrom']}")
    if valid_until is not None and now > valid_until:
        errors.append(f"expired: validUntil was {credential['validUntil']}")
    return errors


def _status_errors(
    credential: dict[str, Any],
    status_lists: Sequence[dict[str, Any]],
    now: datetime,
    fetcher: Fetcher | None,
) -> list[str]:
    """Bitstring Status List v1.0 §3.2 validate algorithm, for each entry."""
    errors: list[str] = []
    for entry in _as_list(credential.get("credentialStatus")):
        if not isinstance(entry, dict) or entry.get("type") != STATUS_ENTRY_TYPE:
            errors.append(
                "status: unsupported credentialStatus entry (expected "
                f"{STATUS_ENTRY_TYPE})"
            )
            continue
        list_id = entry.get("statusListCredential")
        lists = [
            s for s in status_lists if isinstance(s, dict) and s.get("id") == list_id
        ]
        if not lists:
            errors.append(f"status: status list credential {list_id!r} was not given")
            continue
        status_vc = lists[0]
        found = _verify_credential(status_vc, (), now, fetcher, depth=1)
        if STATUS_LIST_CREDENTIAL_TYPE not in _as_list(status_vc.get("type")):
            found.append(f"malformed: not a {STATUS_LIST_CREDENTIAL_TYPE}")
        if _issuer_of(status_vc) != _issuer_of(credential):
            # Only the credential's issuer may change its status.
            found.append("controller mismatch: the status list has another issuer")
        if found:
            errors.extend(f"status: status list {list_id}: {e}" for e in found)
            continue
        try:
            purpose, is_set = status_bit(status_vc, entry)
        except IdentityError as exc:
            errors.append(f"status: {exc}")
            continue
        if is_set:
            word = "revoked" if purpose is StatusPurpose.REVOCATION else "suspended"
            errors.append(f"{word}: {list_id} index {entry.get('statusListIndex')}")
    return errors


def _parse_time(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedDocument(f"{name} must be an XML Schema dateTime string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedDocument(f"{name} {value!r} is not a dateTime") from None
    if moment.tzinfo is None:
        raise MalformedDocument(f"{name} {value!r} lacks a time zone")
    return moment


def _issuer_of(credential: dict[str, Any]) -> str | None:
    issuer = credential.get("issuer")
    if isinstance(issuer, dict):
        issuer = issuer.get("id")
    return issuer if isinstance(issuer, str) else None


def _as_list(value: object) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
