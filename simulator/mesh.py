"""The simulator's view of a site daemon: the real :class:`node.daemon.SiteNode`
with a byte counter on its protocol streams.

The daemon's own training loop runs on wall-clock periods; the simulator needs
every site to train the same number of steps per round so that the regimes
are compared on the same budget, so it turns the loops off and calls
``SiteNode.train_once`` and ``SiteNode.call_average`` itself, round by round.
"""

from __future__ import annotations

from dataclasses import dataclass

from libp2p.abc import INetStream

from node.daemon import PROTOCOL_VERSION, SiteNode
from node.wire import FramedStream


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
    """A :class:`SiteNode` that counts the bytes of its protocol streams.

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
