"""An in-memory ``Transport`` for tests: nodes on one trio loop, connections as channels.

Shipped with the package, as memberlist ships ``mock_transport.go``, so integration tests
(and anyone embedding rancherd) can run several drivers on ``trio.testing.MockClock``. It
enforces the same limits as the websocket transport, and it can partition addresses and
break connections to model a network that fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import trio

from rancherd.addresses import host_of
from rancherd.gossip.messages import Address
from rancherd.gossip.transport import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_TOO_BIG,
    CLOSE_TRY_LATER,
    ConnectionClosed,
    ConnectionHandler,
    FrameConnection,
    Transport,
    TransportError,
    TransportLimits,
)

__all__ = ["MemoryConnection", "MemoryNetwork", "MemoryTransport"]

_QUEUE = 256
"""Frames buffered per direction: a TCP socket buffer's worth of gossip."""


@dataclass(eq=False)
class _Pipe:
    """Shared state of one connection: both directions and the close code."""

    a_to_b: tuple[trio.MemorySendChannel[bytes], trio.MemoryReceiveChannel[bytes]]
    b_to_a: tuple[trio.MemorySendChannel[bytes], trio.MemoryReceiveChannel[bytes]]
    ends: tuple[Address, Address]
    closed: trio.Event = field(default_factory=trio.Event)
    code: int | None = None
    reason: str = ""
    released: list[MemoryTransport] = field(default_factory=list)

    def close(self, code: int, reason: str) -> None:
        if self.closed.is_set():
            return
        self.code, self.reason = code, reason
        self.closed.set()
        for send, receive in (self.a_to_b, self.b_to_a):
            send.close()
            receive.close()
        for transport in self.released:
            transport._release(self)
        self.released.clear()


class MemoryConnection(FrameConnection):
    def __init__(
        self,
        pipe: _Pipe,
        side: int,
        limits: TransportLimits,
        network: MemoryNetwork,
    ) -> None:
        self._pipe = pipe
        self._send, _ = pipe.a_to_b if side == 0 else pipe.b_to_a
        _, self._receive = pipe.b_to_a if side == 0 else pipe.a_to_b
        self._remote = pipe.ends[1 - side]
        self._limits = limits
        self._network = network

    @property
    def remote(self) -> str:
        return self._remote

    async def send(self, frame: bytes) -> None:
        await trio.lowlevel.checkpoint()
        if self._pipe.closed.is_set():
            raise ConnectionClosed(self._pipe.code, self._pipe.reason)
        if not self._network.can_reach(*self._pipe.ends):
            # A partition breaks established connections as TCP would, eventually.
            self._pipe.close(CLOSE_GOING_AWAY, "partitioned")
            raise ConnectionClosed(self._pipe.code, self._pipe.reason)
        try:
            self._send.send_nowait(frame)
        except trio.WouldBlock:
            await self._send.send(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ConnectionClosed(self._pipe.code, self._pipe.reason) from None
        self._network.frames_sent += 1

    async def receive(self) -> bytes:
        try:
            frame = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
            raise ConnectionClosed(self._pipe.code, self._pipe.reason) from None
        if len(frame) > self._limits.max_frame:
            self._pipe.close(CLOSE_TOO_BIG, "frame too big")
            raise ConnectionClosed(CLOSE_TOO_BIG, "frame too big")
        return frame

    async def aclose(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        self._pipe.close(code, reason)
        await trio.lowlevel.checkpoint()


class MemoryNetwork:
    """A set of in-memory transports that can reach each other by ``host:port``."""

    def __init__(self) -> None:
        self._listeners: dict[Address, MemoryTransport] = {}
        self._blocked: set[tuple[str, str]] = set()
        self._pipes: set[_Pipe] = set()
        self.frames_sent = 0
        """Frames sent on all connections (tests measure traffic with it)."""

    def transport(self, address: Address, limits: TransportLimits | None = None) -> MemoryTransport:
        return MemoryTransport(self, address, limits or TransportLimits())

    def partition(self, a: str, b: str) -> None:
        """Cut hosts (or ``host:port``s) ``a`` and ``b`` apart, both ways; breaks their
        connections at the next frame."""
        self._blocked.update({(host_of(a), host_of(b)), (host_of(b), host_of(a))})
        for pipe in list(self._pipes):
            if not self.can_reach(*pipe.ends):
                pipe.close(CLOSE_GOING_AWAY, "partitioned")

    def heal(self) -> None:
        self._blocked.clear()

    def can_reach(self, a: Address, b: Address) -> bool:
        return (host_of(a), host_of(b)) not in self._blocked

    def _bind(self, transport: MemoryTransport) -> None:
        if transport.address in self._listeners:
            raise OSError(f"address {transport.address} already in use")
        self._listeners[transport.address] = transport

    def _unbind(self, transport: MemoryTransport) -> None:
        if self._listeners.get(transport.address) is transport:
            del self._listeners[transport.address]

    async def _dial(self, dialer: MemoryTransport, address: Address) -> MemoryConnection:
        await trio.lowlevel.checkpoint()
        listener = self._listeners.get(address)
        if listener is None or not self.can_reach(dialer.address, address):
            raise TransportError(f"connect to {address}: connection refused")
        a_to_b = trio.open_memory_channel[bytes](_QUEUE)
        b_to_a = trio.open_memory_channel[bytes](_QUEUE)
        pipe = _Pipe(a_to_b, b_to_a, (dialer.address, address))
        self._pipes.add(pipe)
        if not dialer._admit(pipe, dialer.address, outbound=True):
            pipe.close(CLOSE_TRY_LATER, "too many connections")
            raise TransportError(f"connect to {address}: too many connections here")
        listener._accept(MemoryConnection(pipe, 1, listener.limits, self), dialer.address)
        return MemoryConnection(pipe, 0, dialer.limits, self)

    def _forget(self, pipe: _Pipe) -> None:
        self._pipes.discard(pipe)


class MemoryTransport(Transport):
    """One node's endpoint on a ``MemoryNetwork``."""

    def __init__(self, network: MemoryNetwork, address: Address, limits: TransportLimits) -> None:
        self.network = network
        self.address = address
        self.limits = limits
        self._incoming: trio.MemorySendChannel[MemoryConnection] | None = None
        self._hosts_of: dict[int, str | None] = {}
        """Open connections (by id of their pipe): the remote host of an inbound one."""

    def _admit(self, pipe: _Pipe, remote: Address, *, outbound: bool) -> bool:
        host = None if outbound else host_of(remote)
        if len(self._hosts_of) >= self.limits.max_connections:
            return False
        from_host = sum(1 for h in self._hosts_of.values() if h is not None and h == host)
        if from_host >= self.limits.max_connections_per_address:
            return False
        pipe.released.append(self)
        self._hosts_of[id(pipe)] = host
        return True

    def _release(self, pipe: _Pipe) -> None:
        self._hosts_of.pop(id(pipe), None)
        self.network._forget(pipe)

    def _accept(self, connection: MemoryConnection, remote: Address) -> None:
        if self._incoming is None:
            connection._pipe.close(CLOSE_GOING_AWAY, "not listening")
            return
        if not self._admit(connection._pipe, remote, outbound=False):
            connection._pipe.close(CLOSE_TRY_LATER, "too many connections")
            return
        try:
            self._incoming.send_nowait(connection)
        except trio.WouldBlock:
            connection._pipe.close(CLOSE_TRY_LATER, "accept queue full")

    async def serve(
        self,
        handler: ConnectionHandler,
        *,
        task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        send, receive = trio.open_memory_channel[MemoryConnection](math.inf)
        self.network._bind(self)
        self._incoming = send
        try:
            async with trio.open_nursery() as nursery:
                task_status.started([self.address])
                async for connection in receive:
                    nursery.start_soon(self._handle, handler, connection)
        finally:
            self._incoming = None
            self.network._unbind(self)

    @staticmethod
    async def _handle(handler: ConnectionHandler, connection: MemoryConnection) -> None:
        try:
            await handler(connection)
        finally:
            await connection.aclose()

    async def connect(self, address: Address) -> FrameConnection:
        with trio.move_on_after(self.limits.handshake_timeout):
            return await self.network._dial(self, address)
        raise TransportError(f"connect to {address}: timed out")
