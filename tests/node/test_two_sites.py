"""Two real sites on 127.0.0.1: authentication and one averaging exchange."""

import pytest
import torch
import trio

from ml.averaging import max_deviation, weighted_pair_average
from tests.node.federation import make_federation, small_state

pytestmark = pytest.mark.slow


async def test_two_sites_average_and_agree(tmp_path):
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
            nursery.cancel_scope.cancel()
    assert fed.ledger.models == [] or all(m[0] == 1 for m in fed.ledger.models)
    assert torch.equal(a.state["norm.steps"], small_state(1)["norm.steps"])
