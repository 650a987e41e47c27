"""did:key parsing errors and did:web resolution against a local HTTP server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from identity.credentials import issue_credential, make_credential, verify_credential
from identity.did import (
    did_web_url,
    multikey_from_public_key,
    public_key_from_did_key,
    resolve_did,
)
from identity.errors import DidResolutionFailed, InvalidDid, InvalidKey
from identity.keys import SigningKey, verify_signature

from .conftest import NOW


@pytest.mark.parametrize(
    "did",
    [
        "did:key:",
        "did:key:abc",
        "did:key:z111",
        "did:example:1",
        "key:z6Mk",
        42,
        "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",
    ],
)
def test_bad_did_keys(did):
    with pytest.raises(InvalidDid):
        public_key_from_did_key(did)


@pytest.mark.parametrize(
    ("did", "url"),
    [
        ("did:web:example.com", "https://example.com/.well-known/did.json"),
        ("did:web:example.com%3A8443", "https://example.com:8443/.well-known/did.json"),
        ("did:web:h.example:sites:a", "https://h.example/sites/a/did.json"),
    ],
)
def test_did_web_urls(did, url):
    assert did_web_url(did) == url


def test_signature_helpers_reject_bad_lengths():
    key = SigningKey.generate()
    signature = key.sign(b"m")
    assert verify_signature(key.public_bytes, b"m", signature)
    assert not verify_signature(key.public_bytes, b"n", signature)
    assert not verify_signature(key.public_bytes[:31], b"m", signature)
    assert not verify_signature(key.public_bytes, b"m", signature[:63])
    with pytest.raises(InvalidKey):
        SigningKey.from_seed(b"short")
    assert repr(key).startswith("SigningKey(did:key:") and key.seed.hex() not in repr(
        key
    )


@pytest.fixture
def web_server():
    documents: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = documents.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            if body is not None:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]

    def fetcher(url):
        # The DID names the host; tests serve it over plain HTTP on loopback.
        path = "/" + url.split("/", 3)[3]
        response = httpx.get(f"http://127.0.0.1:{port}{path}")
        if response.status_code != 200:
            raise DidResolutionFailed(f"{url}: HTTP {response.status_code}")
        return response.content

    yield documents, fetcher
    server.shutdown()
    server.server_close()
    thread.join()


def test_did_web_issuer_verifies_through_fetcher(web_server):
    documents, fetcher = web_server
    key = SigningKey.from_seed(bytes(range(7, 39)))
    did = "did:web:hospital-a.example:issuers:1"
    method = f"{did}#key-1"
    documents["/issuers/1/did.json"] = json.dumps(
        {
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": did,
            "verificationMethod": [
                {
                    "id": method,
                    "type": "Multikey",
                    "controller": did,
                    "publicKeyMultibase": multikey_from_public_key(key.public_bytes),
                }
            ],
            "assertionMethod": ["#key-1"],
        }
    ).encode()
    assert resolve_did(did, fetcher)["id"] == did

    unsigned = make_credential(did, "did:example:subject", ["X"], {}, NOW, None)
    # Sign with the did:web key: the proof names the did:web method.
    from identity.proofs import ProofPurpose, add_proof

    class WebKey(SigningKey):
        @property
        def verification_method(self):
            return method

    web_key = WebKey.from_seed(key.seed)
    vc = add_proof(
        unsigned, web_key, purpose=ProofPurpose.ASSERTION_METHOD, created=NOW
    )
    assert verify_credential(vc, now=NOW, fetcher=fetcher).verified
    # Not authorized for authentication: a presentation-style proof fails.
    errors = verify_credential({**vc, "issuer": did}, now=NOW, fetcher=fetcher).errors
    assert errors == []
    documents["/issuers/1/did.json"] = b"not json"
    errors = verify_credential(vc, now=NOW, fetcher=fetcher).errors
    assert errors and errors[0].startswith("verification method")


def test_did_web_document_must_match(web_server):
    documents, fetcher = web_server
    documents["/.well-known/did.json"] = json.dumps({"id": "did:web:other"}).encode()
    with pytest.raises(DidResolutionFailed, match="does not hold"):
        resolve_did("did:web:h.example", fetcher)
    with pytest.raises(DidResolutionFailed, match="404"):
        resolve_did("did:web:h.example:missing", fetcher)
    _ = issue_credential  # issue_credential requires a did:key signer
