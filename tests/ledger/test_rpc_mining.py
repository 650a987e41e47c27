"""A handle stays usable while its writes wait to be mined (JSON-RPC backend).

Why rpc only: the embedded chain mines each write synchronously inside
``submit`` (one transaction per block, under the chain's lock), so a write
never waits for a block there and there is no waiting phase to overlap with.
On anvil, automatic mining is switched off (``evm_setAutomine``) and the test
mines by hand (``evm_mine``), so "sent but not yet mined" lasts exactly as
long as the test wants, with no timing involved: the order of events is set
by threading primitives.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from web3 import HTTPProvider, Web3
from web3.types import RPCEndpoint

from ledger import EventKind, open_ledger
from ledger.errors import LedgerUnreachable

from .conftest import ANVIL_KEY, DID_A, DID_B, Fed, _make_fed
from .test_rpc_faults import Proxy

pytestmark = pytest.mark.anvil

ISSUER = "did:key:z6MkIssuer"


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class Node:
    """Direct JSON-RPC access to anvil's mining controls."""

    def __init__(self, url: str) -> None:
        self.w3 = Web3(HTTPProvider(url))

    def rpc(self, method: str, *params: Any) -> None:
        endpoint = RPCEndpoint(method)
        answer = self.w3.provider.make_request(endpoint, list(params))
        assert "error" not in answer, answer

    def automine(self, on: bool) -> None:
        self.rpc("evm_setAutomine", on)

    def mine(self) -> None:
        """Mine one block holding every pending transaction."""
        self.rpc("evm_mine")


@pytest.fixture
def rpc_fed(anvil, tmp_path) -> Iterator[tuple[Fed, Node]]:
    """A federation on the shared anvil; automatic mining is restored after."""
    fed = _make_fed("rpc", anvil.url, tmp_path, faucet_key=ANVIL_KEY)
    node = Node(anvil.url)
    try:
        yield fed, node
    finally:
        node.automine(True)
        for handle in (fed.a, fed.b, fed.c):
            handle.close()


def watch_receipt_waits(monkeypatch, handle) -> threading.Semaphore:
    """A semaphore released each time ``handle`` starts waiting for receipts."""
    chain = handle._chain
    real = chain.receipts
    started = threading.Semaphore(0)

    def receipts(tx_hashes, **kwargs):
        started.release()
        return real(tx_hashes, **kwargs)

    monkeypatch.setattr(chain, "receipts", receipts)
    return started


def in_thread(fn) -> tuple[threading.Thread, dict[str, Any], threading.Event]:
    """Run ``fn`` in a thread; its result (or exception) lands in the dict."""
    out: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:
            out["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out, done


def test_reads_and_writes_go_on_while_a_batch_waits_to_be_mined(rpc_fed, monkeypatch):
    fed, node = rpc_fed
    site = fed.a
    fed.b.publish_status_list(ISSUER, digest("v1"))
    waits = watch_receipt_waits(monkeypatch, site)
    commitments = [digest(f"wait{i}") for i in range(3)]
    node.automine(False)

    def write_batch():
        with site.batch() as receipts:
            site.register_consent(commitments[0], 1, 0)
            site.register_consent(commitments[1], 1, 0)
        return receipts

    batch_thread, batch, batch_done = in_thread(write_batch)
    assert waits.acquire(timeout=60)  # the batch is sent and waits for a block

    # Reads through the same handle answer from the chain's current state.
    assert site.is_member(DID_B)
    assert site.current_status_list_digest(ISSUER) == digest("v1")
    assert not site.consent_active(commitments[0])  # sent, not mined
    assert site.pending == 2
    assert not batch_done.is_set()  # the reads did not wait for the batch

    # A write of the same handle meanwhile takes the next nonce, is sent,
    # and waits for its own receipt only.
    single_thread, single, single_done = in_thread(
        lambda: site.register_consent(commitments[2], 1, 0)
    )
    assert waits.acquire(timeout=60)
    assert site.pending == 3
    assert not batch_done.is_set() and not single_done.is_set()

    node.mine()
    batch_thread.join()
    single_thread.join()
    assert "error" not in batch and "error" not in single, (batch, single)
    receipts = [*batch["result"], single["result"]]
    assert [r.events[0].commitment for r in receipts] == [
        "0x" + c.hex() for c in commitments
    ]
    assert len({r.block for r in receipts}) == 1  # mined together, by evm_mine
    nonces = [int(node.w3.eth.get_transaction(r.tx_hash)["nonce"]) for r in receipts]
    assert nonces == list(range(nonces[0], nonces[0] + 3))  # none reused
    assert site.pending == 0
    assert all(site.consent_active(c) for c in commitments)
    assert site.count_events(EventKind.CONSENT_REGISTERED) == 3


def test_writes_waiting_for_receipts_survive_an_outage(rpc_fed, anvil, monkeypatch):
    fed, node = rpc_fed
    proxy = Proxy(anvil.port)
    proxy.start()
    site = open_ledger(
        f"http://127.0.0.1:{proxy.port}",
        account_key=fed.keys[DID_A],
        contract_address=fed.a.contract_address,
        deploy_block=fed.open_kwargs["deploy_block"],
        retries=1,
        backoff=0.01,
    )
    try:
        waits = watch_receipt_waits(monkeypatch, site)
        commitments = [digest(f"outage{i}") for i in range(2)]
        node.automine(False)

        def write_batch():
            with site.batch():
                for c in commitments:
                    site.register_consent(c, 2, 0)

        thread, out, _ = in_thread(write_batch)
        assert waits.acquire(timeout=60)  # sent; waiting for a block
        proxy.stop()  # the endpoint goes away while the batch waits
        thread.join()
        assert isinstance(out.get("error"), LedgerUnreachable), out
        assert site.pending == 2  # sent, not forgotten

        node.mine()
        proxy.start()
        receipts = site.flush()  # waits for the same transactions again
        assert [r.events[0].commitment for r in receipts] == [
            "0x" + c.hex() for c in commitments
        ]
        assert site.pending == 0
        assert fed.b.consent_active(commitments[1])
        assert fed.b.count_events(EventKind.CONSENT_REGISTERED) == 2
    finally:
        site.close()
        proxy.stop()
