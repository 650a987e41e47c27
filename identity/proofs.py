"""Data Integrity proofs: the eddsa-jcs-2022 and eddsa-rdfc-2022 cryptosuites.

Both follow VC Data Integrity EdDSA Cryptosuites v1.0: the proof options (the
proof without ``proofValue``, given the document's ``@context``) and the
unsecured document are canonicalized and hashed separately with SHA-256, and
the signature covers ``proofHash || documentHash`` (§3.2.4 / §3.3.4 hashing).
eddsa-jcs-2022 canonicalizes with JSON Canonicalization (RFC 8785);
eddsa-rdfc-2022 with RDF Dataset Canonicalization (RDFC-1.0, via pyld's
URDNA2015, which is the same algorithm) after JSON-LD expansion over the
offline contexts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import jcs
from multiformats import multibase
from pyld import jsonld

from identity.contexts import CONTEXT_FILES, document_loader, load_context
from identity.did import (
    Fetcher,
    find_verification_method,
    has_relationship,
    public_key_of_method,
    resolve_did,
)
from identity.errors import (
    IdentityError,
    MalformedDocument,
    UnknownContext,
    UnsupportedCryptosuite,
)
from identity.keys import SigningKey, verify_signature

logger = logging.getLogger(__name__)

PROOF_TYPE = "DataIntegrityProof"


class Cryptosuite(StrEnum):
    """The Data Integrity cryptosuites this package signs and verifies."""

    EDDSA_JCS_2022 = "eddsa-jcs-2022"
    EDDSA_RDFC_2022 = "eddsa-rdfc-2022"


class ProofPurpose(StrEnum):
    """Proof purposes (VC Data Integrity §2.2) and the DID relationship each needs."""

    ASSERTION_METHOD = "assertionMethod"
    AUTHENTICATION = "authentication"


def cryptosuite_of(name: str) -> Cryptosuite:
    """The :class:`Cryptosuite` called ``name``; raises for any other."""
    try:
        return Cryptosuite(name)
    except ValueError:
        raise UnsupportedCryptosuite(
            f"unsupported cryptosuite {name!r} (expected eddsa-rdfc-2022 or "
            "eddsa-jcs-2022)"
        ) from None


def format_datetime(moment: datetime) -> str:
    """An XML Schema dateTime in UTC with second precision, ``...Z``."""
    if moment.tzinfo is None:
        raise MalformedDocument("a datetime must carry a time zone")
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def context_urls(value: object) -> list[str]:
    """Every context URL a ``@context`` value references (strings only)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [u for item in value for u in context_urls(item)]
    return []


def check_contexts(document: dict[str, Any]) -> None:
    """Refuse a document whose contexts (anywhere in it) are not shipped."""
    for url in _all_context_urls(document):
        if url not in CONTEXT_FILES:
            raise UnknownContext(f"unknown context {url!r}: it is not pinned offline")


def _all_context_urls(node: object) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "@context":
                found.extend(context_urls(value))
                # Embedded context objects may not import other URLs either.
                if isinstance(value, list | dict):
                    found.extend(_all_context_urls(value))
            else:
                found.extend(_all_context_urls(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_all_context_urls(item))
    return found


def canonicalize(document: dict[str, Any], cryptosuite: Cryptosuite) -> bytes:
    """The canonical bytes of ``document`` under ``cryptosuite``.

    eddsa-jcs-2022: RFC 8785 JSON. eddsa-rdfc-2022: RDFC-1.0 N-Quads of the
    JSON-LD expansion, contexts served offline.
    """
    if cryptosuite is Cryptosuite.EDDSA_JCS_2022:
        canonical: bytes = jcs.canonicalize(document)
        return canonical
    check_contexts(document)
    try:
        expanded = _expand_safely(document)
        nquads = jsonld.normalize(
            expanded,
            {
                "algorithm": "URDNA2015",
                "format": "application/n-quads",
                "documentLoader": document_loader,
            },
        )
    except jsonld.JsonLdError as exc:
        raise MalformedDocument(f"JSON-LD processing failed: {_root(exc)}") from exc
    return str(nquads).encode("utf-8")


# Why: JSON-LD expansion silently drops a property or type its contexts do not
# define, so an attacker could add undefined claims to a signed credential
# without breaking an eddsa-rdfc-2022 signature. pyld has no "safe mode" (the
# jsonld.js option digitalbazaar's verifiers use), so we expand with a sentinel
# @vocab appended when no context already sets one: any IRI under the sentinel
# is a term that would have been dropped, and the document is refused.
_UNDEFINED_VOCAB = "urn:paroma-med:undefined-term#"


def _expand_safely(document: dict[str, Any]) -> list[Any]:
    contexts = document.get("@context", [])
    context_list = contexts if isinstance(contexts, list) else [contexts]
    if _defines_vocab(context_list):
        expanded: list[Any] = jsonld.expand(
            document, {"documentLoader": document_loader}
        )
        return expanded
    guarded = {**document, "@context": [*context_list, {"@vocab": _UNDEFINED_VOCAB}]}
    expanded = jsonld.expand(guarded, {"documentLoader": document_loader})
    undefined = sorted(
        set(re.findall(re.escape(_UNDEFINED_VOCAB) + r'([^"]*)"', json.dumps(expanded)))
    )
    if undefined:
        raise MalformedDocument(
            "terms not defined by any context (JSON-LD would drop them): "
            + ", ".join(undefined[:5])
        )
    return expanded


def _defines_vocab(contexts: list[Any]) -> bool:
    for entry in contexts:
        body = load_context(entry)["@context"] if isinstance(entry, str) else entry
        if isinstance(body, dict) and "@vocab" in body:
            return True
    return False


def _root(exc: BaseException) -> str:
    while exc.__cause__ is not None or getattr(exc, "cause", None) is not None:
        exc = exc.__cause__ or exc.cause  # type: ignore[attr-defined]
    message = getattr(exc, "message", None) or str(exc)
    return " ".join(str(message).split())[:300]


def hash_data(
    document: dict[str, Any], proof_config: dict[str, Any], cryptosuite: Cryptosuite
) -> bytes:
    """``sha256(canonical proof config) || sha256(canonical document)``, 64 bytes."""
    proof_hash = hashlib.sha256(canonicalize(proof_config, cryptosuite)).digest()
    doc_hash = hashlib.sha256(canonicalize(document, cryptosuite)).digest()
    return proof_hash + doc_hash


def proof_config_of(document: dict[str, Any], proof: dict[str, Any]) -> dict[str, Any]:
    """The proof options to hash: the proof without ``proofValue``, in the
    document's ``@context`` (vc-di-eddsa §3.2.5 / §3.3.5 proof configuration)."""
    config = {k: v for k, v in proof.items() if k != "proofValue"}
    if "@context" in document:
        config["@context"] = document["@context"]
    return config


def add_proof(
    document: dict[str, Any],
    key: SigningKey,
    *,
    purpose: ProofPurpose,
    cryptosuite: str = Cryptosuite.EDDSA_RDFC_2022,
    created: datetime | None = None,
    challenge: str | None = None,
    domain: str | None = None,
) -> dict[str, Any]:
    """A copy of ``document`` secured with a DataIntegrityProof by ``key``."""
    suite = cryptosuite_of(cryptosuite)
    unsecured = {k: v for k, v in document.items() if k != "proof"}
    proof: dict[str, Any] = {
        "type": PROOF_TYPE,
        "cryptosuite": suite.value,
        "created": format_datetime(created or datetime.now(UTC)),
        "verificationMethod": key.verification_method,
        "proofPurpose": purpose.value,
    }
    if challenge is not None:
        proof["challenge"] = challenge
    if domain is not None:
        proof["domain"] = domain
    if suite is Cryptosuite.EDDSA_JCS_2022 and "@context" in unsecured:
        # vc-di-eddsa §3.2.1: a jcs proof carries the document's @context.
        proof["@context"] = unsecured["@context"]
    data = hash_data(unsecured, proof_config_of(unsecured, proof), suite)
    proof["proofValue"] = multibase.encode(key.sign(data), "base58btc")
    return {**unsecured, "proof": proof}


@dataclass(frozen=True)
class ProofCheck:
    """The outcome of checking one proof: errors name each failed check."""

    errors: list[str]
    # The DID that controls the verification method (None if unresolvable).
    controller: str | None
    proof: dict[str, Any]


def verify_proof(
    document: dict[str, Any],
    *,
    purpose: ProofPurpose,
    fetcher: Fetcher | None = None,
) -> ProofCheck:
    """Check the single DataIntegrityProof of ``document``.

    Checks the proof's shape and cryptosuite, resolves its verification
    method, that the method is authorized for ``purpose`` in its controller's
    DID document, and the signature. It does not compare the controller to the
    issuer or holder: the caller does (it knows which one applies).
    """
    proof = document.get("proof")
    if not isinstance(proof, dict):
        return ProofCheck(
            ["signature: the document has no single proof object"], None, {}
        )
    errors: list[str] = []
    if proof.get("type") != PROOF_TYPE:
        return ProofCheck(
            [f"unsupported cryptosuite: proof type {proof.get('type')!r}"], None, proof
        )
    try:
        suite = cryptosuite_of(str(proof.get("cryptosuite")))
    except UnsupportedCryptosuite as exc:
        return ProofCheck([f"unsupported cryptosuite: {exc}"], None, proof)
    if proof.get("proofPurpose") != purpose.value:
        errors.append(
            f"proof purpose: expected {purpose.value}, "
            f"got {proof.get('proofPurpose')!r}"
        )
    if "@context" in proof and proof["@context"] != document.get("@context"):
        # vc-di-eddsa §3.2.2 step 4: the proof's @context must match.
        errors.append("signature: the proof's @context differs from the document's")
    method_id = proof.get("verificationMethod")
    value = proof.get("proofValue")
    if not isinstance(method_id, str) or not isinstance(value, str):
        errors.append("signature: proof lacks verificationMethod or proofValue")
        return ProofCheck(errors, None, proof)
    try:
        did_document = resolve_did(method_id, fetcher)
        method = find_verification_method(did_document, method_id)
        public = public_key_of_method(method)
        controller = str(method.get("controller"))
    except IdentityError as exc:
        errors.append(f"verification method: {exc}")
        return ProofCheck(errors, None, proof)
    if controller != did_document.get("id"):
        errors.append(f"controller mismatch: {method_id} is not controlled by its DID")
    if not has_relationship(did_document, purpose.value, method_id):
        errors.append(f"proof purpose: {method_id} is not authorized for {purpose}")
    unsecured = {k: v for k, v in document.items() if k != "proof"}
    try:
        signature = multibase.decode(value)
        data = hash_data(unsecured, proof_config_of(unsecured, proof), suite)
    except UnknownContext as exc:
        errors.append(f"unknown context: {exc}")
        return ProofCheck(errors, controller, proof)
    except (IdentityError, ValueError, KeyError) as exc:
        errors.append(f"signature: cannot canonicalize or decode: {exc}")
        return ProofCheck(errors, controller, proof)
    if not verify_signature(public, data, bytes(signature)):
        errors.append("signature: the proof does not match the document")
    return ProofCheck(errors, controller, proof)
