"""did:key and did:web: identifiers, DID documents, resolution.

did:key (W3C CCG did:key v0.7): ``did:key:`` + base58btc multibase of the
multicodec ``ed25519-pub`` (0xed 0x01) followed by the 32-byte public key. Its
document is derived, never fetched. did:web (W3C CCG did:web) maps
``did:web:host%3Aport:path`` to ``https://host:port/path/did.json`` (or
``/.well-known/did.json``); the fetch goes through an injectable ``fetcher`` so
tests and the node decide how HTTPS is done.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from multiformats import multibase, multicodec

from identity.errors import DidResolutionFailed, InvalidDid, InvalidKey

logger = logging.getLogger(__name__)

Did = str
Fetcher = Callable[[str], bytes]

DID_CONTEXT = "https://www.w3.org/ns/did/v1"
MULTIKEY_CONTEXT = "https://w3id.org/security/multikey/v1"
ED25519_PUB_CODEC = "ed25519-pub"
# The verification relationships a did:key grants its single Ed25519 key
# (did:key spec §3.1.2 document creation algorithm).
KEY_RELATIONSHIPS = (
    "authentication",
    "assertionMethod",
    "capabilityInvocation",
    "capabilityDelegation",
)


def multikey_from_public_key(public_bytes: bytes) -> str:
    """The Multikey ``publicKeyMultibase`` (``z6Mk...``) of an Ed25519 key."""
    if len(public_bytes) != 32:
        raise InvalidKey("an Ed25519 public key must be 32 bytes")
    wrapped = multicodec.wrap(ED25519_PUB_CODEC, public_bytes)
    encoded: str = multibase.encode(wrapped, "base58btc")
    return encoded


def public_key_from_multikey(value: str) -> bytes:
    """The 32 raw bytes inside a ``z6Mk...`` Multikey; rejects other codecs."""
    try:
        codec, raw = multicodec.unwrap(multibase.decode(value))
    except (KeyError, ValueError) as exc:
        raise InvalidKey(f"{value!r} is not a multibase multicodec key") from exc
    if codec.name != ED25519_PUB_CODEC or len(raw) != 32:
        raise InvalidKey(f"{value!r} is not an Ed25519 public key (ed25519-pub)")
    return bytes(raw)


def did_key_from_public_key(public_bytes: bytes) -> Did:
    """The ``did:key`` of a raw 32-byte Ed25519 public key."""
    return "did:key:" + multikey_from_public_key(public_bytes)


def public_key_from_did_key(did: str) -> bytes:
    """The raw Ed25519 public key a ``did:key`` (or its key id) names."""
    if not isinstance(did, str) or not did.startswith("did:key:z"):
        raise InvalidDid(f"{did!r} is not a did:key (expected did:key:z...)")
    identifier = did.removeprefix("did:key:").split("#", 1)[0]
    try:
        return public_key_from_multikey(identifier)
    except InvalidKey as exc:
        raise InvalidDid(f"{did!r} is not an Ed25519 did:key: {exc}") from exc


def did_key_document(did: str) -> dict[str, Any]:
    """The DID document of a did:key, with one Multikey verification method."""
    public = public_key_from_did_key(did)
    multikey = multikey_from_public_key(public)
    base = f"did:key:{multikey}"
    method_id = f"{base}#{multikey}"
    document: dict[str, Any] = {
        "@context": [DID_CONTEXT, MULTIKEY_CONTEXT],
        "id": base,
        "verificationMethod": [
            {
                "id": method_id,
                "type": "Multikey",
                "controller": base,
                "publicKeyMultibase": multikey,
            }
        ],
    }
    for relationship in KEY_RELATIONSHIPS:
        document[relationship] = [method_id]
    return document


def did_web_url(did: str) -> str:
    """The HTTPS URL of a did:web document (did:web spec §3.2 read)."""
    if not did.startswith("did:web:"):
        raise InvalidDid(f"{did!r} is not a did:web")
    parts = did.removeprefix("did:web:").split("#", 1)[0].split(":")
    host = unquote(parts[0])
    if not host or "/" in host or any(not p for p in parts):
        raise InvalidDid(f"{did!r} has an empty or invalid host or path segment")
    path = "/".join(unquote(p) for p in parts[1:])
    suffix = f"{path}/did.json" if path else ".well-known/did.json"
    return f"https://{host}/{suffix}"


def _https_fetcher(url: str) -> bytes:
    import httpx

    try:
        response = httpx.get(url, timeout=10.0, follow_redirects=False)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise DidResolutionFailed(f"cannot fetch DID document {url}: {exc}") from exc
    return response.content


def resolve_did(did: str, fetcher: Fetcher | None = None) -> dict[str, Any]:
    """Resolve a did:key (locally) or a did:web (through ``fetcher``).

    Args:
        did: the DID, optionally with a ``#fragment`` (ignored).
        fetcher: takes an ``https://`` URL and returns the body; defaults to an
            httpx GET. Only did:web uses it.

    Returns:
        The DID document as a dict.
    """
    base = did.split("#", 1)[0] if isinstance(did, str) else did
    if not isinstance(base, str) or not base.startswith("did:"):
        raise InvalidDid(f"{did!r} is not a DID (expected did:method:...)")
    if base.startswith("did:key:"):
        return did_key_document(base)
    if base.startswith("did:web:"):
        url = did_web_url(base)
        body = (fetcher or _https_fetcher)(url)
        try:
            document = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DidResolutionFailed(f"{url} is not JSON: {exc}") from exc
        if not isinstance(document, dict) or document.get("id") != base:
            # did:web spec §3.2: the document's id must equal the DID resolved.
            raise DidResolutionFailed(f"{url} does not hold the document of {base}")
        return document
    method = base.split(":")[1]
    raise InvalidDid(f"{did!r}: DID method {method!r} is not supported (key, web)")


def find_verification_method(
    document: dict[str, Any], method_id: str
) -> dict[str, Any]:
    """The verification method ``method_id`` listed in a DID document."""
    for method in document.get("verificationMethod", []):
        if isinstance(method, dict) and _absolute(document, method.get("id")) == (
            method_id
        ):
            return method
    raise InvalidDid(f"{document.get('id')!r} lists no verification method {method_id}")


def has_relationship(
    document: dict[str, Any], relationship: str, method_id: str
) -> bool:
    """Whether ``method_id`` is listed under ``relationship`` (e.g. assertionMethod)."""
    for entry in document.get(relationship, []):
        ref = entry.get("id") if isinstance(entry, dict) else entry
        if _absolute(document, ref) == method_id:
            return True
    return False


def public_key_of_method(method: dict[str, Any]) -> bytes:
    """The Ed25519 public key of a Multikey verification method."""
    if method.get("type") != "Multikey" or "publicKeyMultibase" not in method:
        raise InvalidKey(f"{method.get('id')!r} is not an Ed25519 Multikey method")
    return public_key_from_multikey(str(method["publicKeyMultibase"]))


def _absolute(document: dict[str, Any], ref: object) -> str | None:
    if not isinstance(ref, str):
        return None
    return f"{document.get('id')}{ref}" if ref.startswith("#") else ref
