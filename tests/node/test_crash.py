"""A site killed in the middle of an exchange corrupts no one and resumes."""

from pathlib import Path
from typing import Any

import pytest
import trio

from node.daemon import SiteNode
from node.errors import NodeError, PeerUnreachable
from tests.node.federation import Federation, small_state

pytestmark = pytest.mark.slow


class DiesBeforeCommit(SiteNode):
    """Fault: the initiator's process dies between the reply and the commit."""

    kill_scope: trio.CancelScope
    armed = False

    async def _commit(self, framed):
        if not self.armed:
            return await super()._commit(framed)
        self.kill_scope.cancel()
        raise PeerUnreachable("process killed")


class DiesAfterOffer(SiteNode):
    """Fault: the responder's process dies after reading the offer."""

    kill_scope: trio.CancelScope

    async def _respond(self, framed, peer):
        await framed.receive("offer")
        self.kill_scope.cancel()
        await trio.sleep_forever()


async def _run_killable(node, task_status=trio.TASK_STATUS_IGNORED):
    with trio.CancelScope() as scope:
        node.kill_scope = scope
        await node.run(task_status=task_status)


def _node(
    cls: type[SiteNode], fed: Federation, site: int, tmp_path: Path, seed: int
) -> Any:
    base = fed.node(site, tmp_path, small_state(seed), 5.0)
    return cls(
        base.key,
        base.settings,
        base.authorizer,
        small_state(seed),
        5.0,
        ledger=fed.ledgers[site],
    )


async def test_killed_initiator_leaves_peers_intact_and_resumes(
    tmp_path, make_federation
):
    fed = make_federation(3)
    b = fed.node(1, tmp_path, small_state(1), 5.0)
    c = fed.node(2, tmp_path, small_state(2), 5.0)
    with trio.fail_after(28):
        async with trio.open_nursery() as nursery:
            await nursery.start(b.run)
            await nursery.start(c.run)
            await c.connect(b.addresses[0])

            # One good exchange first, so the victim has a round to resume from.
            k = _node(DiesBeforeCommit, fed, 0, tmp_path, 0)
            async with trio.open_nursery() as inner:
                await inner.start(_run_killable, k)
                await k.connect(b.addresses[0])
                await k.call_average(b.did)
                b_before, b_round = b.digest, b.round
                k_before, k_round = k.digest, k.round
                assert k_round == 1
                k.armed = True
                with pytest.raises(PeerUnreachable):
                    await k.call_average(b.did)
                inner.cancel_scope.cancel()
            with trio.fail_after(5):
                while b.refusals < 1:
                    await trio.sleep(0.02)
            assert (b.digest, b.round) == (b_before, b_round)

            # The survivor keeps serving the others.
            await c.call_average(b.did)
            assert b.round == b_round + 1 and b.digest == c.digest

            # The killed site restarts from its store where it stopped.
            restarted = fed.node(0, tmp_path, small_state(9), 5.0)
            assert (restarted.digest, restarted.round) == (k_before, k_round)
            await nursery.start(restarted.run)
            await restarted.connect(b.addresses[0])
            await restarted.call_average(b.did)
            assert restarted.digest == b.digest
            nursery.cancel_scope.cancel()


async def test_killed_responder_leaves_initiator_intact(tmp_path, make_federation):
    fed = make_federation(2)
    a = fed.node(0, tmp_path, small_state(0), 5.0)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            k = _node(DiesAfterOffer, fed, 1, tmp_path, 1)
            async with trio.open_nursery() as inner:
                await inner.start(_run_killable, k)
                await a.connect(k.addresses[0])
                before = (a.digest, a.round)
                with pytest.raises(NodeError):
                    await a.call_average(k.did)
                inner.cancel_scope.cancel()
            assert (a.digest, a.round) == before
            nursery.cancel_scope.cancel()
