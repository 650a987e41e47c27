"""The explorer on a JSON-RPC ledger (anvil on 127.0.0.1), as on a consortium chain."""

from __future__ import annotations

import hashlib
import json

import pytest

from ledger import account_address, deploy_federation, new_account_key
from ledger.errors import LedgerConfigError
from ledger.explorer.cli import main
from ledger.explorer.query import EventFilter
from ledger.explorer.source import Source
from tests.ledger.conftest import ANVIL, ANVIL_KEY, Anvil

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    if not ANVIL.is_file():
        pytest.skip("anvil binary missing: run `npm ci`")
    node = Anvil()
    keys = [new_account_key() for _ in range(2)]
    dids = ["did:key:z6MkRpcSiteA", "did:key:z6MkRpcSiteB"]
    founders = [
        (d, account_address(k), ["site"]) for d, k in zip(dids, keys, strict=True)
    ]
    led = deploy_federation(
        node.url,
        deployer_key=keys[0],
        founders=founders,
        threshold=1,
        faucet_key=ANVIL_KEY,
        index_path=tmp_path_factory.mktemp("rpc") / "deployer.sqlite",
    )
    deploy_block = led.events()[0].block
    commitment = hashlib.sha256(b"rpc consent").digest()
    led.register_consent(commitment, 1, 0)
    led.withdraw_consent(commitment)
    led.record_model(1, hashlib.sha256(b"m1").digest(), [], [dids[0]])
    info = {
        "url": node.url,
        "contract": led.contract_address,
        "deploy_block": deploy_block,
        "commitment": "0x" + commitment.hex(),
        "dids": dids,
    }
    led.close()
    yield info
    node.stop()


def test_source_over_rpc(chain, tmp_path):
    src = Source.open(
        chain["url"],
        contract=chain["contract"],
        deploy_block=chain["deploy_block"],
        index_path=tmp_path / "explorer.sqlite",
    )
    try:
        overview = src.overview()
        assert overview["members"] == 2 and overview["events"] == 5
        state = src.commitment(chain["commitment"])
        assert state["registered"] and state["withdrawn"] and not state["active"]
        page = src.events(EventFilter(kind="model_recorded"))
        assert page.total == 1 and page.events[0].member == chain["dids"][0]
    finally:
        src.close()


def test_events_command_over_rpc(chain, capsys):
    code = main(
        [
            "events",
            "--ledger",
            chain["url"],
            "--contract",
            chain["contract"],
            "--deploy-block",
            str(chain["deploy_block"]),
            "--commitment",
            chain["commitment"],
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    kinds = [e["kind"] for e in json.loads(out)]
    assert kinds == ["consent_registered", "consent_withdrawn"]


def test_rpc_needs_the_contract(chain):
    with pytest.raises(LedgerConfigError, match="--contract"):
        Source.open(chain["url"])
