"""Fixtures: one realistic federation ledger per session, a running explorer."""

from __future__ import annotations

import httpx
import pytest

from ledger.explorer.server import Explorer
from ledger.explorer.source import Source
from tests.explorer.scenario import Scenario, build


@pytest.fixture(scope="session")
def scenario(tmp_path_factory) -> Scenario:
    return build(tmp_path_factory.mktemp("explorer") / "ledger")


@pytest.fixture(scope="session")
def source(scenario):
    src = Source.open(str(scenario.folder))
    yield src
    src.close()


@pytest.fixture(scope="session")
def explorer(source, scenario):
    server = Explorer(source, port=0, trusted_issuers=[scenario.regulator.did])
    server.start()
    yield server
    server.stop()


def sign_in(explorer: Explorer, scenario: Scenario, client: httpx.Client, vc=None):
    """Sign ``client`` in with a presentation of ``vc`` (the auditor's by default)."""
    challenge = client.get("/api/challenge").json()
    vp = scenario.present(
        scenario.auditor_vc if vc is None else vc,
        challenge["challenge"],
        challenge["domain"],
    )
    return client.post("/api/signin", json=vp)


@pytest.fixture
def client(explorer):
    with httpx.Client(base_url=explorer.url.rstrip("/"), timeout=30) as c:
        yield c


@pytest.fixture
def auditor(explorer, scenario, client):
    """A client signed in as the scenario's auditor."""
    reply = sign_in(explorer, scenario, client)
    assert reply.status_code == 200, reply.text
    return client
