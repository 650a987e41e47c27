"""Daemon loops and merge modes on real sites: bootstrap, timers, robust, fp16."""

import math

import pytest
import torch
import trio

from ml.averaging import max_deviation, trimmed_mean, weighted_mean
from node.daemon import NodeSettings, RobustMode, SiteNode
from tests.node.federation import small_state

pytestmark = pytest.mark.slow


async def test_bootstrap_and_timer_loops_reach_consensus(tmp_path, make_federation):
    fed = make_federation(3)
    counts = [1.0, 2.0, 3.0]
    initial = [small_state(i) for i in range(3)]
    target = weighted_mean(initial, counts)
    first = fed.node(0, tmp_path, initial[0], counts[0], period_s=0.3)
    with trio.fail_after(28):
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            others = []
            for i in (1, 2):
                base = fed.node(i, tmp_path, initial[i], counts[i], period_s=0.3)
                settings = NodeSettings(
                    **{**base.settings.__dict__, "bootstrap": (first.addresses[0],)}
                )
                base.store.close()
                node = SiteNode(
                    base.key, settings, base.authorizer, initial[i], counts[i]
                )
                others.append(node)
                await nursery.start(node.run)
            nodes = [first, *others]
            # Precise convergence is the ring test's; here the loops must run.
            while max(max_deviation(n.state, target) for n in nodes) > 1e-2:
                await trio.sleep(0.1)
            # Rounds were announced over GossipSub, signed by each site's key.
            while not first.peer_announcements:
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    announced = next(iter(first.peer_announcements.values()))
    assert announced["kind"] == "model" and announced["did"] != first.did
    status = first.status()
    assert status["round"] > 0 and status["refusals"] == 0


async def test_clipped_mode_bounds_an_outlier_and_keeps_the_weighted_sum(
    tmp_path, make_federation
):
    fed = make_federation(2)
    honest_state = small_state(0)
    outlier_state = {
        n: t * 1000 if t.is_floating_point() else t for n, t in small_state(1).items()
    }
    tau = 0.5
    honest = fed.node(
        0, tmp_path, honest_state, 3.0, robust=RobustMode.CLIPPED, tau=tau
    )
    outlier = fed.node(
        1, tmp_path, outlier_state, 1.0, robust=RobustMode.CLIPPED, tau=tau
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(honest.run)
            await nursery.start(outlier.run)
            await honest.connect(outlier.addresses[0])
            await honest.call_average(outlier.did)
            nursery.cancel_scope.cancel()
    moved = math.sqrt(
        sum(
            float((honest.state[n] - honest_state[n]).double().pow(2).sum())
            for n in ("conv.weight", "conv.bias")
        )
    )
    assert moved <= tau * 1.0 / 4.0 + 1e-5
    for name in ("conv.weight", "conv.bias"):
        before = 3 * honest_state[name].double() + outlier_state[name].double()
        after = 3 * honest.state[name].double() + outlier.state[name].double()
        assert torch.allclose(before, after, atol=1e-3)


async def test_fp16_exchange_agrees_on_both_ends(tmp_path, make_federation):
    fed = make_federation(2)
    a = fed.node(0, tmp_path, small_state(0), 2.0, fp16=True)
    b = fed.node(1, tmp_path, small_state(1), 5.0, fp16=True)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            await a.connect(b.addresses[0])
            await a.call_average(b.did)
            nursery.cancel_scope.cancel()
    assert a.digest == b.digest
    exact = weighted_mean([small_state(0), small_state(1)], [2.0, 5.0])
    assert a.state["conv.weight"].dtype == torch.float32
    assert max_deviation(a.state, exact) < 5e-3


async def test_trimmed_mode_takes_the_coordinate_wise_trimmed_mean(
    tmp_path, make_federation
):
    fed = make_federation(3)
    states = [small_state(i) for i in range(3)]
    nodes = [
        fed.node(i, tmp_path, states[i], 1.0, robust=RobustMode.TRIMMED, trim=1)
        for i in range(3)
    ]
    with trio.fail_after(25):
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run)
            await nodes[0].connect(nodes[1].addresses[0])
            await nodes[0].connect(nodes[2].addresses[0])
            await nodes[0].call_average(nodes[1].did)  # too few states: clipped
            before = nodes[0].state
            await nodes[0].call_average(nodes[2].did)
            nursery.cancel_scope.cancel()
    # Own model, the last one received from each neighbour: median of three.
    expected = trimmed_mean([before, states[1], states[2]], 1)
    assert max_deviation(nodes[0].state, expected) < 1e-6
