"""The production ``Transport``: binary WebSocket messages over TCP, with trio-websocket.

Lifetime. trio-websocket runs a reader task per connection in a nursery it is given, so
every connection needs a home that outlives the call that opened it:

- inbound connections live in ``serve``'s own nursery; cancelling ``serve`` closes them
  (with ``CLOSE_GOING_AWAY``, waiting at most ``CLOSE_TIMEOUT`` for the peer's reply);
- outbound connections live in the transport's nursery, so ``connect`` needs the transport
  entered as an async context manager::

      async with WebSocketTransport("0.0.0.0", 9444) as transport:
          bound = await nursery.start(transport.serve, handler)
          conn = await transport.connect("10.0.0.5:9444")
          ...
          await conn.aclose()

  Leaving the ``async with`` closes the outbound connections still open (also with
  ``CLOSE_GOING_AWAY``). No task outlives ``serve`` or the ``async with``.

Limits. ``serve`` runs its own accept loop instead of ``trio_websocket.serve_websocket``
so that limits apply before the upgrade: a connection over
``max_connections_per_address`` gets a plain TCP close right after ``accept``, before any
byte is read, so a flood costs one ``accept`` and one ``close`` per connection and never a
parser or a timer. An admitted connection gets a parser only once its first bytes arrive:
until then a silent one costs a task waiting for the socket to become readable.

Slots. The ``max_connections`` slots are shared by inbound connections, which are
*unauthenticated* until the links layer calls ``FrameConnection.authenticated()``, and our
own dials. One address may have at most ``max_unauthenticated_per_address`` connections
waiting to authenticate (more are closed right after ``accept``, as above: a peer dials
once at a time, a flood is cheap to refuse). At most ``max_unauthenticated`` inbound
connections wait in all; when a
new one arrives beyond that, or any connection (a dial included) finds every slot taken,
an unauthenticated inbound connection is evicted (its socket closed at once, no close
handshake) to make room: the oldest of the address that holds the most of them, since a
flood comes from few addresses with several connections each and a peer dials once.
Authenticated peers and our own dials are never evicted, so a flood of silent connections
cannot keep the fleet's peers out: an honest handshake takes milliseconds. Only when every
slot holds an authenticated or outbound connection is a new one refused (with a plain TCP
close too: ``CLOSE_TRY_LATER`` would need the upgrade first; the dialling side sees a
``TransportError`` either way).

An upgrade that is not done within ``handshake_timeout``, is not a WebSocket upgrade, or
asks for another path than ``path`` (answered with HTTP 404) is dropped; the handler never
sees any of these. Dropped, refused and evicted connections are logged at most once per
``DROP_LOG_INTERVAL`` with counts, so a flood cannot flood the journal.

Pings. A connection that sends a WebSocket ping is closed at once, without a pong:
rancherd never pings, and a flood of pings whose pongs the sender never read grew a
node's memory by ~90 MB for good (issue 15.4).

trio-websocket quirks handled here: its reader task can raise (``ConnectionRejected``,
``ConnectionClosed`` on a broken socket) into the nursery it runs in, and when the TCP
connection ends during the upgrade it waits for the upgrade forever. Each connection's
reader therefore runs under ``_ReaderTasks``, which keeps its exceptions and cancels the
upgrade as soon as the reader ends. After a close started by the peer, trio-websocket
leaves a client's socket open; we close every socket ourselves.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, cast

import trio
import trio_websocket
import wsproto.events
from wsproto.utilities import LocalProtocolError as WsprotoLocalProtocolError

from rancherd.addresses import join_host_port, split_host_port
from rancherd.gossip.messages import Address
from rancherd.gossip.transport import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    ConnectionClosed,
    ConnectionHandler,
    FrameConnection,
    Transport,
    TransportError,
    TransportLimits,
)

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_PATH",
    "DROP_LOG_INTERVAL",
    "WebSocketConnection",
    "WebSocketTransport",
    "parse_address",
]

log = logging.getLogger(__name__)

DEFAULT_PATH = "/rancherd/v1/gossip"
CLOSE_TIMEOUT = 1.0
"""How long a close waits for the peer's close frame before it just closes the socket."""
DROP_LOG_INTERVAL = 10.0
"""Dropped and refused connections are logged at most this often (with counts)."""
_DEFAULT_LIMITS = TransportLimits()
_RECEIVE_SIZE = 65536
"""Bytes per socket read (trio-websocket reads 4 KiB by default): a 64 KiB frame in one
read instead of sixteen. A read is handed to wsproto and parsed before the next one."""
_UNAUTHENTICATED_RECEIVE_SIZE = 4096
"""Bytes per socket read of an inbound connection until it authenticates (a hello is
~110 bytes): a flood of data on many unauthenticated connections holds 4 KiB per read
each, not 64 KiB."""
_ACCEPT_RETRY = 0.1
"""Wait after ``accept`` failed for lack of file descriptors or memory (as trio does)."""
_ACCEPT_CAPACITY_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS")
    if hasattr(errno, name)
)


def parse_address(address: Address) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 in brackets); ``TransportError`` if it is not one."""
    try:
        return split_host_port(address)
    except ValueError as exc:
        raise TransportError(str(exc)) from None


def _peer(stream: trio.SocketStream) -> tuple[str, Address]:
    """The peer's IP (the key of the per-address limit) and its ``host:port``."""
    host, port = stream.socket.getpeername()[:2]
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host, join_host_port(host, port)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        host = str(ip.ipv4_mapped)
        return host, join_host_port(host, port)
    return str(ip), join_host_port(host, port)


class _ReaderTasks:
    """Stands in for the nursery that trio-websocket starts a connection's reader task in
    (it only calls ``start_soon``). Keeps the reader's exception instead of letting it
    crash the nursery, and cancels the scope ``cancel_when_done`` guards when the reader
    ends: trio-websocket would otherwise wait forever for an upgrade on a closed socket.

    The reader is shielded from outer cancellation and ends only on ``stop``, so that a
    connection cancelled by shutdown can still read the peer's reply to its close frame.
    Use ``_reader_tasks()``, which always stops it."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._scope = trio.CancelScope(shield=True)
        self.done = trio.Event()
        self.error: Exception | None = None
        self._watching: trio.CancelScope | None = None

    def stop(self) -> None:
        self._scope.cancel()

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> None:
        connection = getattr(async_fn, "__self__", None)
        if isinstance(connection, trio_websocket.WebSocketConnection):
            _refuse_pings(connection)
        self._nursery.start_soon(self._run, async_fn, *args)

    def as_nursery(self) -> trio.Nursery:
        return cast("trio.Nursery", self)

    async def _run(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> None:
        try:
            with self._scope:
                await async_fn(*args)
        except Exception as exc:
            self.error = exc
            log.debug("websocket reader ended: %r", exc)
        finally:
            self.done.set()
            if self._watching is not None:
                self._watching.cancel()

    @contextmanager
    def cancel_when_done(self) -> Iterator[trio.CancelScope]:
        with trio.CancelScope() as scope:
            if self.done.is_set():
                scope.cancel()
            self._watching = scope
            try:
                yield scope
            finally:
                self._watching = None


def _refuse_pings(ws: trio_websocket.WebSocketConnection) -> None:
    """Close the connection at the first WebSocket ping instead of answering it.

    rancherd never pings (idle links are closed by ``idle_timeout``), and answering a
    flood of pings that the sender never reads grew a node's RSS from 42 to 134 MB, never
    released. trio-websocket's reader looks its ping handler up on the instance when it
    starts, so this replaces it before the reader runs."""

    async def refuse(event: wsproto.events.Ping) -> None:
        log.debug("a WebSocket ping: closing the connection")
        await ws._abort_web_socket()
        await ws._close_stream()

    ws._handle_ping_event = refuse  # type: ignore[method-assign]


@asynccontextmanager
async def _reader_tasks() -> AsyncIterator[_ReaderTasks]:
    async with trio.open_nursery() as nursery:
        reader = _ReaderTasks(nursery)
        try:
            yield reader
        finally:
            reader.stop()


class _DropLog:
    """Logs dropped connections: the first at once, later ones as a count per interval."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._last_remote = ""
        self._last_log = -math.inf
        self.total = 0

    def note(self, reason: str, remote: str) -> None:
        self.total += 1
        self._counts[reason] += 1
        self._last_remote = remote
        now = trio.current_time()
        if now - self._last_log >= DROP_LOG_INTERVAL:
            self._last_log = now
            self.flush()

    def flush(self) -> None:
        count = sum(self._counts.values())
        if count == 1:
            ((reason, _),) = self._counts.items()
            log.warning("dropped connection from %s: %s", self._last_remote, reason)
        elif count > 1:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self._counts.items()))
            log.warning(
                "dropped %d connections (%s); the last from %s",
                count,
                reasons,
                self._last_remote,
            )
        self._counts.clear()


@dataclass(eq=False)
class _Slot:
    """One inbound connection's place under ``max_connections``."""

    host: str
    remote: Address
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    evicted: bool = False
    released: bool = False


class WebSocketConnection(FrameConnection):
    """One upgraded connection; frames are binary WebSocket messages."""

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        stream: trio.SocketStream,
        remote: Address,
        on_authenticated: Callable[[], None] | None = None,
    ) -> None:
        self._ws = ws
        self._stream = stream
        self._remote = remote
        self._on_authenticated = on_authenticated
        self._closing = False
        self._closed = trio.Event()
        self._local_close: ConnectionClosed | None = None

    @property
    def remote(self) -> str:
        return self._remote

    @property
    def closed(self) -> bool:
        """Whether ``aclose`` has finished (the socket is closed)."""
        return self._closed.is_set()

    def _error(self, exc: trio_websocket.ConnectionClosed | None = None) -> ConnectionClosed:
        if self._local_close is not None:
            return ConnectionClosed(self._local_close.code, self._local_close.reason)
        reason = exc.reason if exc is not None else self._ws.closed
        if reason is None:
            return ConnectionClosed()
        return ConnectionClosed(reason.code, reason.reason or "")

    async def send(self, frame: bytes) -> None:
        try:
            await self._ws.send_message(frame)
        except trio_websocket.ConnectionClosed as exc:
            raise self._error(exc) from None
        except WsprotoLocalProtocolError:  # the reader closed the WebSocket on a bad frame
            raise self._error() from None

    async def receive(self) -> bytes:
        try:
            message = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise self._error(exc) from None
        if isinstance(message, str):
            log.debug("%s sent a text message; closing", self._remote)
            await self.aclose(CLOSE_POLICY, "binary frames only")
            raise self._error()
        return message

    def authenticated(self) -> None:
        if self._on_authenticated is not None:
            self._on_authenticated()
            self._on_authenticated = None
            # trio-websocket reads its buffer size anew before every read.
            self._ws._receive_buffer_size = _RECEIVE_SIZE

    def _abort(self) -> None:
        """Close the socket without a close handshake (an evicted connection)."""
        self._closing = True
        self._stream.socket.close()
        self._closed.set()

    async def aclose(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        if self._ws.closed is None:
            self._local_close = ConnectionClosed(code, reason)
        try:
            with trio.move_on_after(CLOSE_TIMEOUT) as waited:
                await self._ws.aclose(code, reason or None)
            # Not cancelled_caught: trio-websocket swallows the Cancelled when it closes
            # from a finally block (its _preserve_current_exception).
            if waited.cancel_called:
                log.debug("%s: no close reply within %g s", self._remote, CLOSE_TIMEOUT)
        except Exception as exc:  # a broken socket, or a code wsproto refuses to send
            log.debug("closing %s: %r", self._remote, exc)
        finally:
            self._stream.socket.close()
            self._closed.set()

    async def _close_on_exit(self, cancelled: bool) -> None:
        """Close after the owner of the connection is done with it: gracefully, even when
        cancelled (bounded by ``CLOSE_TIMEOUT``), with 1001 if the node is shutting down."""
        with trio.CancelScope(shield=True):
            if cancelled:
                await self.aclose(CLOSE_GOING_AWAY, "shutting down")
            else:
                await self.aclose()


class WebSocketTransport(Transport):
    """``Transport`` over WebSocket (``ws://host:port/rancherd/v1/gossip``, no TLS: every
    frame is sealed by ``SecureChannel``). ``connect`` needs ``async with``; see the module
    docstring."""

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        limits: TransportLimits = _DEFAULT_LIMITS,
        *,
        path: str = DEFAULT_PATH,
    ) -> None:
        self.limits = limits
        self._listen_host = listen_host
        self._listen_port = listen_port
        self._path = path
        self._open = 0
        self._outbound = 0
        self._inbound_by_host: dict[str, int] = {}
        self._unauthenticated: dict[_Slot, None] = {}
        """Inbound connections not yet authenticated, oldest first."""
        self._unauthenticated_by_host: Counter[str] = Counter()
        self._refused = 0
        self._evicted = 0
        self._drops = _DropLog()
        self._nursery: trio.Nursery | None = None
        self._exit: Callable[..., Awaitable[bool | None]] | None = None

    # --- lifecycle

    async def __aenter__(self) -> Self:
        if self._exit is not None:
            raise RuntimeError("WebSocketTransport is already entered")
        manager = trio.open_nursery()
        self._nursery = await manager.__aenter__()
        self._exit = manager.__aexit__
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None
        assert self._exit is not None
        nursery, exit_ = self._nursery, self._exit
        self._nursery = self._exit = None
        nursery.cancel_scope.cancel()  # outbound connections close with CLOSE_GOING_AWAY
        try:
            return await exit_(exc_type, exc, traceback)
        except BaseExceptionGroup as group:
            # Our tasks never raise: the group only wraps the body's own exception.
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                return False
            raise

    def statistics(self) -> dict[str, int]:
        """Open connections (``open``, ``outbound``, ``unauthenticated``), connections
        refused over a limit (``refused``), unauthenticated ones evicted to make room
        (``evicted``) and all inbound connections dropped before the handler (``dropped``,
        refused and evicted ones included)."""
        return {
            "open": self._open,
            "outbound": self._outbound,
            "unauthenticated": len(self._unauthenticated),
            "refused": self._refused,
            "evicted": self._evicted,
            "dropped": self._drops.total,
        }

    # --- serving

    async def serve(
        self,
        handler: ConnectionHandler,
        *,
        task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await trio.open_tcp_listeners(self._listen_port, host=self._listen_host)
        try:
            async with trio.open_nursery() as nursery:
                bound = []
                for listener in listeners:
                    host, port = listener.socket.getsockname()[:2]
                    bound.append(join_host_port(host, port))
                    nursery.start_soon(self._accept_loop, listener, handler, nursery)
                log.info("serving gossip on %s", ", ".join(bound))
                task_status.started(bound)
        finally:
            for listener in listeners:
                listener.socket.close()
            self._drops.flush()

    async def _accept_loop(
        self, listener: trio.SocketListener, handler: ConnectionHandler, nursery: trio.Nursery
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                self._drops.note(f"accept failed: {exc.strerror}", "?")
                await trio.sleep(_ACCEPT_RETRY)
                continue
            try:
                host, remote = _peer(stream)
            except OSError:  # gone before we looked
                stream.socket.close()
                continue
            slot = self._admit_inbound(host, remote)
            if isinstance(slot, str):
                self._refused += 1
                self._drops.note(slot, remote)
                stream.socket.close()
                continue
            nursery.start_soon(self._run_inbound, stream, slot, handler, name=remote)

    def _admit_inbound(self, host: str, remote: Address) -> _Slot | str:
        """A slot for a new inbound connection (evicting if need be), or why not."""
        count = self._inbound_by_host.get(host, 0)
        if count >= self.limits.max_connections_per_address:
            return f"over max_connections_per_address ({self.limits.max_connections_per_address})"
        waiting = self._unauthenticated_by_host[host]
        if waiting >= self.limits.max_unauthenticated_per_address:
            return (
                "over max_unauthenticated_per_address "
                f"({self.limits.max_unauthenticated_per_address})"
            )
        if len(self._unauthenticated) >= self.limits.max_unauthenticated:
            self._evict_one()
        if self._open >= self.limits.max_connections and not self._evict_one():
            return f"over max_connections ({self.limits.max_connections})"
        self._open += 1
        self._inbound_by_host[host] = count + 1
        slot = _Slot(host, remote)
        self._unauthenticated[slot] = None
        self._unauthenticated_by_host[host] = waiting + 1
        return slot

    def _evict_one(self) -> bool:
        """Close an unauthenticated inbound connection now: the oldest of the address
        that holds the most of them (a flood comes from few addresses, several
        connections each; a peer dials once). False if there is none."""
        if not self._unauthenticated:
            return False
        counts = self._unauthenticated_by_host
        most = max(counts.values())
        slot = next(slot for slot in self._unauthenticated if counts[slot.host] == most)
        slot.evicted = True
        self._release_inbound(slot)
        slot.scope.cancel()
        self._evicted += 1
        self._drops.note("evicted while unauthenticated, to make room", slot.remote)
        return True

    def _forget_unauthenticated(self, slot: _Slot) -> None:
        if slot in self._unauthenticated:
            del self._unauthenticated[slot]
            self._unauthenticated_by_host[slot.host] -= 1
            if not self._unauthenticated_by_host[slot.host]:
                del self._unauthenticated_by_host[slot.host]

    def _release_inbound(self, slot: _Slot) -> None:
        if slot.released:
            return
        slot.released = True
        self._forget_unauthenticated(slot)
        self._open -= 1
        self._inbound_by_host[slot.host] -= 1
        if not self._inbound_by_host[slot.host]:
            del self._inbound_by_host[slot.host]

    async def _run_inbound(
        self, stream: trio.SocketStream, slot: _Slot, handler: ConnectionHandler
    ) -> None:
        remote = slot.remote
        deadline = trio.current_time() + self.limits.handshake_timeout
        try:
            with slot.scope:
                # A silent connection costs a task waiting here, not a parser and a reader.
                with trio.move_on_at(deadline):
                    await trio.lowlevel.wait_readable(stream.socket)
                async with _reader_tasks() as reader:
                    ws = await self._upgrade_inbound(reader, stream, remote, deadline)
                    if ws is not None:
                        conn = WebSocketConnection(
                            ws, stream, remote, lambda: self._forget_unauthenticated(slot)
                        )
                        await self._run_handler(handler, conn, slot)
        except Exception:
            # A bug on the upgrade path (ours or trio-websocket's) ends this connection only.
            log.exception("connection from %s failed", remote)
        finally:
            self._release_inbound(slot)
            stream.socket.close()

    async def _upgrade_inbound(
        self, reader: _ReaderTasks, stream: trio.SocketStream, remote: Address, at: float
    ) -> trio_websocket.WebSocketConnection | None:
        with trio.move_on_at(at) as deadline:
            with reader.cancel_when_done():
                try:
                    request = await trio_websocket.wrap_server_stream(
                        reader.as_nursery(),
                        stream,
                        max_message_size=self.limits.max_frame,
                        receive_buffer_size=_UNAUTHENTICATED_RECEIVE_SIZE,
                    )
                    if request.path != self._path:
                        self._drops.note("wrong path", remote)
                        with suppress(trio_websocket.ConnectionClosed, WsprotoLocalProtocolError):
                            await request.reject(404)
                        return None
                    return await request.accept()
                except (trio_websocket.ConnectionClosed, WsprotoLocalProtocolError):
                    pass
        if deadline.cancelled_caught:
            self._drops.note(f"no upgrade within {self.limits.handshake_timeout:g} s", remote)
        else:
            self._drops.note("not a WebSocket upgrade", remote)
        return None

    @staticmethod
    async def _run_handler(
        handler: ConnectionHandler, conn: WebSocketConnection, slot: _Slot
    ) -> None:
        cancelled = False
        try:
            await handler(conn)
        except trio.Cancelled:
            cancelled = True
            raise
        except Exception:
            # A bug in the handler must not end serve: every other peer would lose us.
            log.exception("connection handler failed for %s", conn.remote)
        finally:
            if slot.evicted:
                conn._abort()
            else:
                await conn._close_on_exit(cancelled)

    # --- dialling

    async def connect(self, address: Address) -> FrameConnection:
        if self._nursery is None:
            raise RuntimeError("WebSocketTransport.connect needs `async with` on the transport")
        host, port = parse_address(address)
        conn: WebSocketConnection = await self._nursery.start(
            self._run_outbound, address, host, port
        )
        return conn

    async def _run_outbound(
        self,
        address: Address,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[WebSocketConnection] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._open >= self.limits.max_connections and not self._evict_one():
            raise TransportError(
                f"connect to {address}: {self._open} connections open (max_connections)"
            )
        self._open += 1
        self._outbound += 1
        failure: str | None = None
        stream: trio.SocketStream | None = None
        try:
            async with _reader_tasks() as reader:
                ws: trio_websocket.WebSocketConnection | None = None
                with trio.move_on_after(self.limits.handshake_timeout) as deadline:
                    with reader.cancel_when_done():
                        try:
                            stream = await trio.open_tcp_stream(
                                host, port, local_address=self._source_address(host)
                            )
                            remote = _peer(stream)[1]
                            ws = await trio_websocket.wrap_client_stream(
                                reader.as_nursery(),
                                stream,
                                join_host_port(host, port),
                                self._path,
                                max_message_size=self.limits.max_frame,
                                receive_buffer_size=_RECEIVE_SIZE,
                            )
                        except OSError as exc:
                            failure = f"connect to {address}: {exc}"
                if ws is None or stream is None:
                    failure = failure or self._upgrade_failure(address, deadline, reader)
                else:
                    conn = WebSocketConnection(ws, stream, remote)
                    task_status.started(conn)
                    await self._hold_outbound(conn, reader)
        finally:
            self._open -= 1
            self._outbound -= 1
            if stream is not None:
                stream.socket.close()
        if failure is not None:
            raise TransportError(failure)

    def _source_address(self, host: str) -> str | None:
        """Dial from the listen address when it is one specific IP of the right family.

        The peer then sees the address this node is known by, as a fleet of machines
        would: on loopback every connection would otherwise come from 127.0.0.1, and
        ``max_connections_per_address`` would refuse all but the first few nodes."""
        try:
            listen = ipaddress.ip_address(self._listen_host)
            target = ipaddress.ip_address(host)
        except ValueError:
            return None
        if listen.is_unspecified or listen.version != target.version:
            return None
        return self._listen_host

    def _upgrade_failure(
        self, address: Address, deadline: trio.CancelScope, reader: _ReaderTasks
    ) -> str:
        if isinstance(reader.error, trio_websocket.ConnectionRejected):
            return f"connect to {address}: upgrade rejected with HTTP {reader.error.status_code}"
        if deadline.cancelled_caught:
            return f"connect to {address}: no upgrade within {self.limits.handshake_timeout:g} s"
        return f"connect to {address}: closed by the peer during the upgrade"

    @staticmethod
    async def _hold_outbound(conn: WebSocketConnection, reader: _ReaderTasks) -> None:
        """Keep the reader running until the user closes ``conn`` or the peer is gone."""
        cancelled = False
        try:
            with reader.cancel_when_done():
                await conn._closed.wait()
        except trio.Cancelled:
            cancelled = True
            raise
        finally:
            await conn._close_on_exit(cancelled)
