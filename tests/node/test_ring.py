"""Four real sites in a ring converge to the weighted mean of their models."""

import random

import pytest
import trio

from ledger import EventKind
from ml.averaging import max_deviation, weighted_mean
from ml.weights import model_digest
from tests.node.federation import Federation, small_state

pytestmark = pytest.mark.slow

COUNTS = [10.0, 20.0, 5.0, 40.0]


def _recorded(fed: Federation) -> int:
    return fed.ledger.count_events(EventKind.MODEL_RECORDED)


async def test_ring_of_four_converges_to_weighted_mean(tmp_path, make_federation):
    fed = make_federation(4)
    initial = [small_state(i) for i in range(4)]
    target = weighted_mean(initial, COUNTS)
    nodes = [fed.node(i, tmp_path, initial[i], COUNTS[i]) for i in range(4)]
    edges = [(i, (i + 1) % 4) for i in range(4)]
    rng = random.Random(7)
    with trio.fail_after(60):
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
            with trio.fail_after(30):
                while await trio.to_thread.run_sync(_recorded, fed) < 2 * exchanges:
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    worst = max(max_deviation(n.state, target) for n in nodes)
    assert worst < 1e-5
    # Each exchange is recorded by both ends, with its parents and contributors.
    records = fed.ledger.events(kind=EventKind.MODEL_RECORDED)
    assert len(records) == 2 * exchanges
    assert all(
        len(e.data["parents"]) == 2 and len(e.data["contributors"]) == 2
        for e in records
    )
    # Each site wrote, from its own account, one record per round it made,
    # chained by digest from its initial model to its current one.
    for i, node in enumerate(nodes):
        mine = sorted(
            (e for e in records if e.member == node.did),
            key=lambda e: e.data["round"],
        )
        assert [e.data["round"] for e in mine] == list(range(1, node.round + 1))
        previous = "0x" + model_digest(initial[i]).hex()
        neighbours = {nodes[(i + 1) % 4].did, nodes[(i - 1) % 4].did}
        for event in mine:
            assert event.data["parents"][0] == previous
            assert event.data["contributors"][0] == node.did
            assert event.data["contributors"][1] in neighbours
            previous = event.commitment
        assert previous == "0x" + node.digest.hex()
