import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from multiformats import multibase, multicodec

from identity.credentials import issue_credential, make_credential
from identity.keys import SigningKey
from identity.status_list import StatusList

VECTORS = Path(__file__).parent / "vectors"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LIST_ID = "https://hospital-a.example/status/1"


def load_vector(*parts: str) -> Any:
    path = VECTORS.joinpath(*parts)
    return json.loads(path.read_text()) if path.suffix == ".json" else path.read_text()


def vector_key() -> SigningKey:
    pair = load_vector("vc-di-eddsa", "keyPair.json")
    codec, seed = multicodec.unwrap(multibase.decode(pair["privateKeyMultibase"]))
    assert codec.name == "ed25519-priv"
    return SigningKey.from_seed(bytes(seed))


@pytest.fixture(scope="session")
def issuer() -> SigningKey:
    return SigningKey.from_seed(bytes(range(32)))


@pytest.fixture(scope="session")
def holder() -> SigningKey:
    return SigningKey.from_seed(bytes(range(1, 33)))


@pytest.fixture
def status_list(issuer) -> StatusList:
    return StatusList.create(issuer, LIST_ID)


def clinician_credential(
    issuer: SigningKey,
    holder: SigningKey,
    *,
    status: dict[str, Any] | None = None,
    suite: str = "eddsa-rdfc-2022",
) -> dict[str, Any]:
    unsigned = make_credential(
        issuer.did,
        holder.did,
        ["ClinicianCredential"],
        {"role": "cardiologist", "site": "hospital-a"},
        NOW - timedelta(days=1),
        NOW + timedelta(days=30),
        status=status,
    )
    signed: dict[str, Any] = issue_credential(
        unsigned, issuer, cryptosuite=suite, created=NOW
    )
    return signed
