"""The simulator's view of a site daemon: the real :class:`node.daemon.SiteNode`,
plus a byte counter and round-synchronous local training.

The daemon's own training loop runs on wall-clock periods; the simulator needs
every site to train the same number of steps per round so that the regimes
are compared on the same budget, so it asks each node to train once per round
(:meth:`SimSiteNode.train_local`), under the same exchange lock and with the
same checkpoint-then-apply step the daemon's loop uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio
from libp2p.abc import INetStream

from ml.averaging import check_state
from node.daemon import PROTOCOL_VERSION, SiteNode
from node.wire import FramedStream
from simulator.training import SiteTrainer


@dataclass
class Traffic:
    """Bytes a site moved on its protocol streams (headers, presentations, weights).

    Kept outside the node so a restarted site keeps counting.
    """

    sent: int = 0
    received: int = 0


class _CountingStream:
    """A libp2p stream that adds what passes through to a :class:`Traffic`."""

    def __init__(self, stream: INetStream, traffic: Traffic) -> None:
        self.stream = stream
        self.traffic = traffic

    async def read(self, n: int | None = None) -> bytes:
        data = await self.stream.read(n)
        self.traffic.received += len(data)
        return data

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)
        self.traffic.sent += len(data)


class SimSiteNode(SiteNode):
    """A :class:`SiteNode` that counts its bytes and trains when told to.

    Args:
        traffic: where its bytes are counted.
        *args, **kwargs: as for :class:`SiteNode`.
    """

    def __init__(self, *args: object, traffic: Traffic, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.traffic = traffic

    def _framed(self, stream: INetStream) -> FramedStream:
        return FramedStream(
            _CountingStream(stream, self.traffic), PROTOCOL_VERSION, self.limits
        )

    async def train_local(self, steps: int, limiter: trio.CapacityLimiter) -> None:
        """Train ``steps`` local steps from the current model; the result is the
        next round (checkpointed, then recorded on the ledger by the daemon).

        Args:
            steps: optimizer steps.
            limiter: bounds how many sites train at once (one per core).
        """
        trainer = self.trainer
        if not isinstance(trainer, SiteTrainer) or steps <= 0:
            return
        async with self._exchange_lock:
            start = self._model.state
            trained = await trio.to_thread.run_sync(
                trainer.train, start, steps, limiter=limiter
            )
            check_state(trained, self._reference, what="trained weights")
            await self._apply(
                trained, kind="train", parents=[self._model.digest], contributors=[]
            )
