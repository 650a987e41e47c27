"""Issue, present and verify; each tampering names the check that failed."""

import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from identity.credentials import (
    VerificationResult,
    create_presentation,
    issue_credential,
    make_credential,
    verify_credential,
    verify_presentation,
)
from identity.errors import MalformedDocument, UnsupportedCryptosuite
from identity.keys import SigningKey

from .conftest import NOW, clinician_credential

SUITES = ["eddsa-rdfc-2022", "eddsa-jcs-2022"]
OTHER = SigningKey.from_seed(bytes(range(2, 34)))


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _resign_with_other_key(doc: dict[str, Any]) -> None:
    unsigned = {k: v for k, v in doc.items() if k != "proof"}
    resigned = issue_credential({**unsigned, "issuer": OTHER.did}, OTHER)
    doc.clear()
    doc.update({**resigned, "issuer": unsigned["issuer"]})


def _del(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda doc: doc.pop(key)


# (name, mutation of a signed credential, expected first word(s) of an error)
CREDENTIAL_TAMPERS = [
    ("claim changed", _set(["credentialSubject", "role"], "surgeon"), "signature"),
    ("subject changed", _set(["credentialSubject", "id"], OTHER.did), "signature"),
    ("validUntil moved", _set(["validUntil"], "2099-01-01T00:00:00Z"), "signature"),
    (
        "type added",
        _set(["type"], ["VerifiableCredential", "AdminCredential"]),
        "signature",
    ),
    ("proof value", _set(["proof", "proofValue"], "z" + "1" * 86), "signature"),
    ("suite", _set(["proof", "cryptosuite"], "ecdsa-rdfc-2019"), "unsupported"),
    ("proof type", _set(["proof", "type"], "Ed25519Signature2020"), "unsupported"),
    ("purpose", _set(["proof", "proofPurpose"], "authentication"), "proof purpose"),
    ("issuer", _set(["issuer"], OTHER.did), "controller mismatch"),
    ("other key", _resign_with_other_key, "controller mismatch"),
    (
        "unknown context",
        _set(
            ["@context"],
            ["https://www.w3.org/ns/credentials/v2", "https://x.example/c"],
        ),
        "unknown context",
    ),
    (
        "v1 context first",
        _set(["@context"], ["https://www.w3.org/2018/credentials/v1"]),
        "malformed",
    ),
    ("no proof", _del("proof"), "signature"),
    ("bad validFrom", _set(["validFrom"], "yesterday"), "malformed"),
]


@pytest.mark.parametrize("suite", SUITES)
def test_fresh_credential_verifies(issuer, holder, suite):
    vc = clinician_credential(issuer, holder, suite=suite)
    result = verify_credential(vc, now=NOW)
    assert result == VerificationResult(
        verified=True, errors=[], credentials=[vc], issuer=issuer.did
    )
    assert result.credential_types == ["ClinicianCredential"]
    assert result.subject == holder.did


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize(
    ("name", "mutate", "expected"),
    CREDENTIAL_TAMPERS,
    ids=[t[0] for t in CREDENTIAL_TAMPERS],
)
def test_tampered_credential_names_failed_check(
    issuer, holder, suite, name, mutate, expected
):
    vc = copy.deepcopy(clinician_credential(issuer, holder, suite=suite))
    mutate(vc)
    result = verify_credential(vc, now=NOW)
    assert not result.verified
    assert result.credentials == []
    assert any(e.startswith(expected) for e in result.errors), result.errors


@pytest.mark.parametrize(
    ("now", "expected"),
    [(NOW - timedelta(days=2), "not yet valid"), (NOW + timedelta(days=31), "expired")],
)
def test_validity_period(issuer, holder, now, expected):
    vc = clinician_credential(issuer, holder)
    errors = verify_credential(vc, now=now).errors
    assert [e.split(":")[0] for e in errors] == [expected]


def test_rdfc_refuses_to_sign_undefined_terms(issuer, holder):
    unsigned = make_credential(issuer.did, holder.did, ["X"], {}, NOW, None)
    unsigned["@context"] = ["https://www.w3.org/ns/credentials/v2"]
    with pytest.raises(MalformedDocument, match=r"not defined by any context .*: X"):
        issue_credential(unsigned, issuer)
    # JCS does not interpret terms, so the same document signs.
    assert issue_credential(unsigned, issuer, cryptosuite="eddsa-jcs-2022")["proof"]


def test_issue_refuses_foreign_issuer_and_unknown_suite(issuer, holder):
    unsigned = make_credential(holder.did, holder.did, ["X"], {}, NOW, None)
    with pytest.raises(MalformedDocument, match="not the signing key"):
        issue_credential(unsigned, issuer)
    unsigned = make_credential(issuer.did, holder.did, ["X"], {}, NOW, None)
    with pytest.raises(UnsupportedCryptosuite, match="ecdsa"):
        issue_credential(unsigned, issuer, cryptosuite="ecdsa-rdfc-2019")


@pytest.mark.parametrize("suite", SUITES)
def test_presentation_round_trip(issuer, holder, suite):
    vc = clinician_credential(issuer, holder, suite=suite)
    vp = create_presentation(
        [vc], holder, challenge="c-123", domain="node.a", cryptosuite=suite
    )
    result = verify_presentation(vp, challenge="c-123", domain="node.a", now=NOW)
    assert result.errors == []
    assert result.verified and result.holder == holder.did
    assert result.credentials == [vc]


PRESENTATION_TAMPERS = [
    ("challenge", {"challenge": "other"}, None, "wrong challenge"),
    ("domain", {"domain": "other.example"}, None, "wrong domain"),
    ("holder", {}, _set(["holder"], OTHER.did), "controller mismatch"),
    (
        "vc claim",
        {},
        _set(["verifiableCredential", 0, "credentialSubject", "role"], "x"),
        "signature",
    ),
    (
        "proof purpose",
        {},
        _set(["proof", "proofPurpose"], "assertionMethod"),
        "proof purpose",
    ),
    ("proof challenge", {}, _set(["proof", "challenge"], "other"), "wrong challenge"),
]


@pytest.mark.parametrize(
    ("name", "verifier_args", "mutate", "expected"),
    PRESENTATION_TAMPERS,
    ids=[t[0] for t in PRESENTATION_TAMPERS],
)
def test_tampered_presentation(issuer, holder, name, verifier_args, mutate, expected):
    vc = clinician_credential(issuer, holder)
    vp = create_presentation([vc], holder, challenge="c-123", domain="node.a")
    if mutate:
        mutate(vp)
    args = {"challenge": "c-123", "domain": "node.a", **verifier_args}
    result = verify_presentation(vp, now=NOW, **args)
    assert not result.verified
    assert any(e.startswith(expected) for e in result.errors), result.errors


def test_presenting_someone_elses_credential_fails(issuer, holder):
    vc = clinician_credential(issuer, holder)
    vp = create_presentation([vc], OTHER, challenge="c", domain="d")
    errors = verify_presentation(vp, challenge="c", domain="d", now=NOW).errors
    assert [e.split(":")[0] for e in errors] == ["subject mismatch"]


def test_malformed_inputs_are_reported_not_raised():
    not_a_dict: Any = []
    errors = verify_credential(not_a_dict, now=NOW).errors
    assert errors == ["malformed: a credential is a JSON object"]
    result = verify_presentation({"type": "x"}, challenge="c", domain="d", now=NOW)
    assert result.errors[0].startswith("malformed")


def test_added_undefined_claim_is_not_silently_dropped(issuer, holder):
    # Without a vocabulary, JSON-LD would drop an added "role" claim and the
    # rdfc signature would still match; the safe expansion refuses instead.
    unsigned = make_credential(issuer.did, holder.did, [], {}, NOW, None)
    unsigned["@context"] = ["https://www.w3.org/ns/credentials/v2"]
    vc = issue_credential(unsigned, issuer)
    assert verify_credential(vc, now=NOW).verified
    vc["credentialSubject"]["role"] = "admin"
    errors = verify_credential(vc, now=NOW).errors
    assert len(errors) == 1 and "not defined by any context" in errors[0]
    assert errors[0].startswith("signature")


@pytest.mark.parametrize("suite", SUITES)
def test_unknown_context_inside_embedded_context_is_refused(issuer, holder, suite):
    vc = clinician_credential(issuer, holder, suite=suite)
    vc["credentialSubject"]["@context"] = ["https://evil.example/ctx"]
    errors = verify_credential(vc, now=NOW).errors
    assert errors and errors[0].startswith("unknown context")
    assert "https://evil.example/ctx" in errors[0]
