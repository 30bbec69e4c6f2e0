"""A ``Transport`` wrapper that counts the frames and bytes a node puts on the wire.

The benchmarks measure traffic where the network sees it: sealed frames as handed to the
transport (in-memory or websocket), without changing ``rancherd/``. Wrap a node's
transport in ``CountingTransport`` with a ``TrafficCounter`` shared by the whole fleet (or
one per node); every frame that ``send`` accepted counts once, with its length.
"""

from __future__ import annotations

from dataclasses import dataclass

from rancherd.gossip.transport import (
    ForwardingConnection,
    ForwardingTransport,
    FrameConnection,
    Transport,
)

__all__ = [
    "CountingConnection",
    "CountingTransport",
    "TrafficCounter",
]


@dataclass(slots=True)
class TrafficCounter:
    frames: int = 0
    bytes: int = 0

    def snapshot(self) -> tuple[int, int]:
        return self.frames, self.bytes


class CountingConnection(ForwardingConnection):
    def __init__(self, inner: FrameConnection, counter: TrafficCounter) -> None:
        super().__init__(inner)
        self._counter = counter

    async def send(self, frame: bytes) -> None:
        await self.inner.send(frame)
        self._counter.frames += 1
        self._counter.bytes += len(frame)


class CountingTransport(ForwardingTransport):
    """``inner`` with every connection (dialled or accepted) counted in ``counter``."""

    def __init__(self, inner: Transport, counter: TrafficCounter) -> None:
        super().__init__(inner)
        self.counter = counter

    def wrap(self, connection: FrameConnection) -> FrameConnection:
        return CountingConnection(connection, self.counter)
