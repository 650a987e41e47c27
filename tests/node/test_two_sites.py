"""Two real sites on 127.0.0.1: authentication and one averaging exchange."""

import pytest
import torch
import trio

from ledger import EventKind
from ml.averaging import max_deviation, weighted_pair_average
from tests.node.federation import Federation, small_state

pytestmark = pytest.mark.slow


def _recorded(fed: Federation) -> int:
    return fed.ledger.count_events(EventKind.MODEL_RECORDED)


async def test_two_sites_average_and_agree(tmp_path, make_federation):
    fed = make_federation(2)
    a = fed.node(0, tmp_path, small_state(1), 10.0)
    b = fed.node(1, tmp_path, small_state(2), 30.0)
    expected = weighted_pair_average(small_state(1), 10.0, small_state(2), 30.0)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            assert await a.connect(b.addresses[0]) == b.did
            outcome = await a.call_average(b.did)
            assert outcome.peer_did == b.did
            assert a.digest == b.digest
            assert max_deviation(a.state, expected) == 0.0
            assert a.round == b.round == 1
            # Both ends record round 1 on the ledger, in the background.
            with trio.fail_after(10):
                while await trio.to_thread.run_sync(_recorded, fed) < 2:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    records = fed.ledger.events(EventKind.MODEL_RECORDED)
    assert sorted(e.member for e in records) == sorted([a.did, b.did])
    for event in records:
        assert event.data["round"] == 1
        assert event.commitment == "0x" + a.digest.hex()
        assert sorted(event.data["contributors"]) == sorted([a.did, b.did])
    assert torch.equal(a.state["norm.steps"], small_state(1)["norm.steps"])
