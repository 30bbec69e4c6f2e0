"""How frames travel between nodes: the ``Transport`` interface, its limits, close codes.

A transport moves whole binary frames over reliable, ordered connections and knows nothing
of sealing or messages: ``rancherd.gossip.links`` runs a ``SecureChannel`` over each
connection. Two implementations ship, as memberlist ships ``net_transport.go`` and
``mock_transport.go``: ``ws_transport.WebSocketTransport`` (trio-websocket, production) and
``memory_transport.MemoryNetwork`` (tests, on ``MockClock``).

A transport enforces what it can see without the token: the frame size and the number of
connections per remote address and in total. The links layer enforces the rest (the
authentication deadline, the idle timeout).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import trio

from rancherd.gossip.codec import MAX_FRAME
from rancherd.gossip.messages import Address

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_LATER",
    "ConnectionClosed",
    "ConnectionHandler",
    "ForwardingConnection",
    "ForwardingTransport",
    "FrameConnection",
    "Transport",
    "TransportError",
    "TransportLimits",
]

# WebSocket close codes (RFC 6455 section 7.4.1); the memory transport uses the same.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
"""The node is shutting down."""
CLOSE_POLICY = 1008
"""A frame failed authentication, or the peer was too slow to authenticate."""
CLOSE_TOO_BIG = 1009
"""A frame larger than ``TransportLimits.max_frame``."""
CLOSE_TRY_LATER = 1013
"""Too many connections (from that address, or in total)."""


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Limits on what a peer can make us hold. Defaults suit a LAN fleet of up to ~200."""

    max_frame: int = MAX_FRAME
    """Largest frame accepted (64 KiB); a larger one closes the connection with 1009."""
    handshake_timeout: float = 5.0
    """From TCP accept (or connect) until the peer's sealed hello is verified: covers the
    WebSocket upgrade and our handshake. A slow or silent client is dropped after this."""
    idle_timeout: float = 60.0
    """A connection that carries no frame for this long is closed. Live peers gossip every
    ``gossip_interval`` and push-pull every ``push_pull_interval``, so only dead or
    abandoned connections reach it."""
    max_connections_per_address: int = 8
    """Simultaneous connections from one remote IP. A peer needs one (two briefly, while a
    simultaneous dial is resolved); several nodes may share one IP on loopback tests."""
    max_connections: int = 512
    """Simultaneous connections in total, inbound and outbound: well under the usual
    1024-file-descriptor limit, leaving room for the control socket and the installer."""
    max_unauthenticated: int = 128
    """Inbound connections still upgrading or authenticating. Beyond it, and whenever
    ``max_connections`` is reached, one of them is evicted to make room (the oldest of the
    address holding the most), so a flood of silent connections never takes the slots of
    authenticated peers or of our own dials (websocket transport; the memory transport
    only counts ``max_connections``)."""
    max_unauthenticated_per_address: int = 2
    """Inbound connections from one remote IP still upgrading or authenticating; more are
    closed right after ``accept``. A peer dials once at a time (twice while a simultaneous
    dial is resolved), so only a flood meets it (websocket transport)."""
    connect_backoff_min: float = 0.1
    """First wait before dialling an address again after a failed dial."""
    connect_backoff_max: float = 5.0
    """Cap of the doubling, jittered backoff between dials of one address."""
    send_queue: int = 64
    """Frames queued per connection; beyond that a frame is dropped (gossip repairs it)."""


class TransportError(Exception):
    """A dial failed: refused, unreachable, timed out, or the upgrade was rejected."""


class ConnectionClosed(Exception):
    """The connection is closed; ``code`` is the WebSocket close code when known."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class FrameConnection(abc.ABC):
    """One reliable, ordered connection carrying binary frames."""

    @property
    @abc.abstractmethod
    def remote(self) -> str:
        """The peer's socket address as ``host:port`` (logs and per-address limits)."""

    @abc.abstractmethod
    async def send(self, frame: bytes) -> None:
        """Send one frame; raises ``ConnectionClosed`` once closed."""

    @abc.abstractmethod
    async def receive(self) -> bytes:
        """The next frame; raises ``ConnectionClosed`` once closed. A frame over
        ``max_frame`` closes the connection with ``CLOSE_TOO_BIG`` and raises."""

    @abc.abstractmethod
    async def aclose(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close (idempotent, never raises on a broken connection)."""

    def authenticated(self) -> None:
        """Called by the links layer once the peer proved it holds the token (the sealed
        handshake completed). A transport that evicts connections under pressure keeps
        authenticated ones and evicts the others first; the default does nothing."""
        return


ConnectionHandler = Callable[[FrameConnection], Awaitable[None]]


class Transport(abc.ABC):
    """Dial and accept ``FrameConnection``s. Use as ``async with transport:`` around every
    ``serve`` and ``connect``: an implementation may own tasks (the websocket one runs a
    reader task per connection) that must end with it."""

    limits: TransportLimits

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return None

    @abc.abstractmethod
    async def serve(
        self,
        handler: ConnectionHandler,
        *,
        task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections until cancelled, running ``handler(conn)`` in a task of its
        own for each and closing ``conn`` when it returns. ``task_status.started`` reports
        the bound addresses (``host:port``; the real port when 0 was asked for).

        A connection over ``max_connections_per_address`` or ``max_connections`` is closed
        before the handler sees it (with ``CLOSE_TRY_LATER``, or by the websocket transport
        with a plain TCP close before the upgrade, so a flood never costs a parser or a
        timer; the dialler gets ``TransportError`` either way); a transport-level handshake
        (the WebSocket upgrade) that takes longer than ``handshake_timeout`` is dropped.
        A misbehaving client never ends ``serve``."""

    @abc.abstractmethod
    async def connect(self, address: Address) -> FrameConnection:
        """Dial ``host:port``; ``TransportError`` if that fails within
        ``handshake_timeout``. Counts against ``max_connections``."""


class ForwardingConnection(FrameConnection):
    """``inner`` itself, for a connection wrapper that changes one thing (a subclass
    overrides ``send``, say, to count or tamper with frames): ``ForwardingTransport.wrap``
    returns one."""

    def __init__(self, inner: FrameConnection) -> None:
        self.inner = inner

    @property
    def remote(self) -> str:
        return self.inner.remote

    async def send(self, frame: bytes) -> None:
        await self.inner.send(frame)

    async def receive(self) -> bytes:
        return await self.inner.receive()

    def authenticated(self) -> None:
        self.inner.authenticated()

    async def aclose(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        await self.inner.aclose(code, reason)


class ForwardingTransport(Transport):
    """``inner`` itself, for a wrapper that changes one thing: each connection, dialled or
    accepted, passes through ``wrap`` (counted, tampered with, ...); a subclass may also
    override ``connect`` (to dial through a proxy) and call this one."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.limits = inner.limits

    def wrap(self, connection: FrameConnection) -> FrameConnection:
        """The connection the handler or the dialler gets; the default: ``connection``."""
        return connection

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self.inner.__aexit__(exc_type, exc, traceback)

    async def serve(
        self,
        handler: ConnectionHandler,
        *,
        task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def wrapped(connection: FrameConnection) -> None:
            await handler(self.wrap(connection))

        await self.inner.serve(wrapped, task_status=task_status)

    async def connect(self, address: Address) -> FrameConnection:
        return self.wrap(await self.inner.connect(address))
