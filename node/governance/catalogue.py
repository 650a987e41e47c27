"""The federation's catalogue: what each site offers, never patient data.

A site describes its data and services in a metadata JSON document kept in its
store folder (``governance/catalogue.json``): application and purpose code,
modality, the number of scans with active consent, the label set, the scanner
profile and the services it runs. Only the document's SHA-256 and its URI go on
the ledger (``publish_offer``), so the chain holds no counts that change with
each patient, and a reader who can fetch the document checks it against the
digest. A site publishes (or refreshes) its offer each time it passes
attestation, so every attested member appears in the catalogue.

The offer id is ``SHA-256("paroma-med/offer/v1" ‖ site DID ‖ purpose)``: one
offer per site and application, replaced in place when republished.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ledger.api import EventKind, Ledger, OfferKind
from ml.weights import atomic_write_bytes
from node.governance.policy import Policy

OFFER_DOMAIN = b"paroma-med/offer/v1\x00"
LABELS = ("myocardium", "lv_blood_pool", "rv_blood_pool")
SERVICES = ("federated_training", "wall_thickness_analysis")


def offer_id(site_did: str, purpose: int) -> bytes:
    """The site's offer id for an application (see the module docstring)."""
    h = hashlib.sha256(OFFER_DOMAIN)
    h.update(site_did.encode() + b"\x00" + purpose.to_bytes(2, "big"))
    return h.digest()


def build_metadata(
    policy: Policy, site_did: str, consented_scans: int, scanner_profile: str
) -> dict[str, Any]:
    """The metadata document of a site's offer (aggregate figures only)."""
    return {
        "type": "paroma-med/catalogue-entry/v1",
        "site": site_did,
        "application": policy.name,
        "purpose": policy.purpose,
        "modality": "CT",
        "consented_scans": consented_scans,
        "labels": list(LABELS),
        "scanner_profile": scanner_profile,
        "services": list(SERVICES),
        "min_peers": policy.peers.min_peers,
        "dp": policy.privacy.enabled,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def metadata_bytes(metadata: dict[str, Any]) -> bytes:
    """The canonical bytes whose SHA-256 goes on chain."""
    return json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode()


def publish(
    ledger: Ledger, metadata: dict[str, Any], path: Path, purpose: int
) -> bytes:
    """Write the metadata document to ``path`` and publish its offer.

    Returns:
        The offer id.
    """
    data = metadata_bytes(metadata)
    atomic_write_bytes(path, data)
    oid = offer_id(str(metadata["site"]), purpose)
    digest = hashlib.sha256(data).digest()
    ledger.publish_offer(oid, OfferKind.DATA, digest, path.resolve().as_uri())
    return oid


@dataclass(frozen=True)
class Offer:
    """One current offer of the catalogue.

    Attributes:
        offer_id: 32 bytes, hex.
        site: the publishing member's DID.
        kind: ``data`` or ``service``.
        metadata_digest: hex SHA-256 of the metadata document.
        uri: where the document is.
        metadata: the document if it could be read here and matches its
            digest, else None.
        published_at: block timestamp, seconds since the epoch.
    """

    offer_id: str
    site: str
    kind: str
    metadata_digest: str
    uri: str
    metadata: dict[str, Any] | None
    published_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id,
            "site": self.site,
            "kind": self.kind,
            "metadata_digest": self.metadata_digest,
            "uri": self.uri,
            "verified": self.metadata is not None,
            "metadata": self.metadata,
            "published_at": self.published_at,
        }


def list_offers(ledger: Ledger) -> list[Offer]:
    """Every offer currently published (latest version, not withdrawn)."""
    latest: dict[str, Offer] = {}
    published = ledger.events(EventKind.OFFER_PUBLISHED)
    withdrawn = ledger.events(EventKind.OFFER_WITHDRAWN)
    events = sorted([*published, *withdrawn], key=lambda e: (e.block, e.log_index))
    for event in events:
        oid = (event.commitment or "").removeprefix("0x")
        if event.kind is EventKind.OFFER_WITHDRAWN:
            latest.pop(oid, None)
            continue
        data = event.data
        digest = str(data.get("metadataDigest", "")).removeprefix("0x")
        uri = str(data.get("uri", ""))
        kind = OfferKind(int(data.get("kind", 0))).name.lower()
        latest[oid] = Offer(
            oid,
            event.member,
            kind,
            digest,
            uri,
            _fetch_local(uri, digest),
            event.timestamp,
        )
    return list(latest.values())


def _fetch_local(uri: str, digest: str) -> dict[str, Any] | None:
    """Read a ``file:`` URI on this machine and check it against its digest.

    Other schemes are not fetched: the node makes no requests beyond the mesh
    and the ledger (a site serving its catalogue over HTTPS is future work).
    """
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    try:
        data = Path(unquote(parsed.path)).read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != digest:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
