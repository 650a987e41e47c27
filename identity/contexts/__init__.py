"""JSON-LD contexts shipped with the package, served by an offline loader.

Why offline: a verifier that fetches ``@context`` URLs lets whoever serves them
change what a signed credential means, and leaks who verifies what (VC Data
Model 2.0 §5.3 and the security considerations of VC Data Integrity §5). Only the
URLs below are accepted; any other is refused with :class:`UnknownContext`.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from identity.errors import UnknownContext

CREDENTIALS_V2 = "https://www.w3.org/ns/credentials/v2"
CREDENTIALS_V1 = "https://www.w3.org/2018/credentials/v1"
EXAMPLES_V2 = "https://www.w3.org/ns/credentials/examples/v2"
DATA_INTEGRITY_V2 = "https://w3id.org/security/data-integrity/v2"
STATUS_LIST_V1 = "https://www.w3.org/ns/credentials/status/v1"
PAROMA_V1 = "https://w3id.org/paroma-med/v1"

CONTEXT_FILES: dict[str, str] = {
    CREDENTIALS_V2: "credentials-v2.jsonld",
    CREDENTIALS_V1: "credentials-v1.jsonld",
    EXAMPLES_V2: "credentials-examples-v2.jsonld",
    DATA_INTEGRITY_V2: "data-integrity-v2.jsonld",
    STATUS_LIST_V1: "vc-bitstring-status-list-v1.jsonld",
    PAROMA_V1: "paroma-v1.jsonld",
}


@cache
def _load_text(url: str) -> str:
    name = CONTEXT_FILES[url]
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def load_context(url: str) -> dict[str, Any]:
    """The pinned context document of ``url``; raises for any other URL."""
    if url not in CONTEXT_FILES:
        raise UnknownContext(f"unknown context {url!r}: only pinned contexts load")
    document: dict[str, Any] = json.loads(_load_text(url))
    return document


def document_loader(url: str, options: Any = None) -> dict[str, Any]:
    """A pyld document loader that serves only the shipped contexts."""
    return {"contextUrl": None, "documentUrl": url, "document": load_context(url)}
