"""Four real sites in a ring converge to the weighted mean of their models."""

import random

import pytest
import trio

from ml.averaging import max_deviation, weighted_mean
from tests.node.federation import make_federation, small_state

pytestmark = pytest.mark.slow

COUNTS = [10.0, 20.0, 5.0, 40.0]


async def test_ring_of_four_converges_to_weighted_mean(tmp_path):
    fed = make_federation(4)
    initial = [small_state(i) for i in range(4)]
    target = weighted_mean(initial, COUNTS)
    nodes = [fed.node(i, tmp_path, initial[i], COUNTS[i]) for i in range(4)]
    edges = [(i, (i + 1) % 4) for i in range(4)]
    rng = random.Random(7)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run)
            for i, j in edges:
                await nodes[i].connect(nodes[j].addresses[0])
            for i in range(4):
                neighbours = {nodes[(i + 1) % 4].did, nodes[(i - 1) % 4].did}
                with trio.fail_after(5):
                    while set(nodes[i].admitted_peers()) != neighbours:
                        await trio.sleep(0.05)
            # Alternate the ring's two perfect matchings; the two exchanges of
            # a matching run at the same time (disjoint pairs of sites).
            matchings = [[(0, 1), (2, 3)], [(1, 2), (3, 0)]]
            exchanges = 0
            while max(max_deviation(n.state, target) for n in nodes) >= 1e-5:
                pairs = matchings[exchanges // 2 % 2]
                async with trio.open_nursery() as pair_nursery:
                    for i, j in pairs:
                        if rng.random() < 0.5:
                            i, j = j, i
                        pair_nursery.start_soon(nodes[i].call_average, nodes[j].did)
                exchanges += 2
                assert exchanges < 120
            # Provenance is recorded in the background, once per new round.
            with trio.fail_after(5):
                while len(fed.ledger.models) < 2 * exchanges:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    worst = max(max_deviation(n.state, target) for n in nodes)
    assert worst < 1e-5
    # Each exchange is recorded by both ends, with its parents and contributors.
    assert len(fed.ledger.models) == 2 * exchanges
    assert all(len(m[2]) == 2 and len(m[3]) == 2 for m in fed.ledger.models)
