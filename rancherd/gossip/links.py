"""Sealed connections to peers over a ``Transport``: dial, accept, authenticate, deliver.

Each connection runs one ``SecureChannel``. A link is an authenticated connection to one
peer (by node id); there is at most one per peer pair. When both ends dial at once, both
keep the connection dialled by the smaller node id and close the other, so they agree
without talking about it. A peer that comes back with a new boot id replaces its old link.

What a peer can make us spend is bounded: the transport caps connections per address and
in total and the frame size; here, a connection that has not authenticated within
``handshake_timeout`` is closed with 1008, as is one whose frame fails to open (wrong
token, replay, garbage), and one that is silent for ``idle_timeout`` is closed quietly.

Sending never blocks the caller: ``send_nowait`` seals onto the link's queue, or starts a
dial and parks the message until the link is up. A dial that fails puts the address in a
jittered, doubling backoff; messages for it are dropped meanwhile, as the core expects of a
lossy network (gossip repairs state, the election retransmits).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from rancherd.gossip.codec import RecordFilter, encode
from rancherd.gossip.core import Peer, Send
from rancherd.gossip.errors import LocalProtocolError, RemoteProtocolError
from rancherd.gossip.messages import Address, Message, NodeId
from rancherd.gossip.security import (
    SecureChannel,
    SelfConnectionError,
    TokenKeys,
    UnexpectedPeerError,
)
from rancherd.gossip.transport import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    ConnectionClosed,
    FrameConnection,
    Transport,
    TransportError,
)

__all__ = ["LinkInfo", "LinkStatistics", "Links"]

log = logging.getLogger(__name__)

Deliver = Callable[[Message, Peer], None]

_PENDING_PER_DIAL = 16
"""Messages parked while a dial is in progress; more are dropped."""
_MAX_DIALS = 64
"""Dials in progress at once; beyond it sends to unconnected peers are dropped."""
_LOG_EVERY = 10.0
"""Rejected connections are summarised in the log at most this often."""


@dataclass(eq=False)
class _Link:
    peer: Peer
    connection: FrameConnection
    channel: SecureChannel
    outbound: bool
    dialled_by: NodeId
    since: float
    outbox: deque[bytes] = field(default_factory=deque)
    """Sealed frames waiting for the writer (at most ``send_queue``)."""
    wakeup: trio.Event = field(default_factory=trio.Event)
    """Set when a frame is queued; the writer makes a new one before it waits."""
    frames_in: int = 0
    frames_out: int = 0
    closing: bool = False
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)


@dataclass(frozen=True, slots=True)
class LinkInfo:
    peer: NodeId
    remote: str
    outbound: bool
    since: float
    frames_in: int
    frames_out: int


@dataclass(slots=True)
class LinkStatistics:
    dials: int = 0
    dial_failures: int = 0
    accepted: int = 0
    rejected: int = 0
    """Connections closed for failing authentication or the handshake deadline."""
    idle_closed: int = 0
    dropped_sends: int = 0
    duplicates_closed: int = 0


class Links:
    """All connections of one node. Start ``run`` with ``nursery.start``."""

    def __init__(
        self,
        transport: Transport,
        keys: TokenKeys,
        node_id: NodeId,
        boot_id: int,
        deliver: Deliver,
        *,
        rng: random.Random,
        random_bytes: Callable[[int], bytes],
        keep: RecordFilter | None = None,
    ) -> None:
        """``keep``: the core's pre-filter of relayed records (``GossipCore.wants_record``),
        so that a Gossip's stale copies are dropped while decoding, before conversion."""
        self._transport = transport
        self._limits = transport.limits
        self._keys = keys
        self._node_id = node_id
        self._boot_id = boot_id
        self._deliver = deliver
        self._rng = rng
        self._random_bytes = random_bytes
        self._links: dict[NodeId, _Link] = {}
        self._dials: dict[tuple[NodeId | None, tuple[Address, ...]], deque[Message]] = {}
        self._backoff: dict[Address, tuple[float, float]] = {}  # address -> (until, delay)
        self._nursery: trio.Nursery | None = None
        self.statistics = LinkStatistics()
        self._rejected_since_log = 0
        self._last_reject_log = -_LOG_EVERY
        self._keep = keep
        self._encoded: tuple[Message | None, bytes] = (None, b"")
        """The last message encoded and its bytes: a Gossip to several targets, or a
        Propose to every member, is encoded once and sealed once per link."""

    # --- lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve and dial until cancelled; reports the transport's bound addresses."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                bound = await nursery.start(self._transport.serve, self._accepted)
                task_status.started(bound)
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                for link in list(self._links.values()):
                    await link.connection.aclose(CLOSE_GOING_AWAY, "shutting down")
            self._links.clear()

    def links(self) -> list[LinkInfo]:
        return [
            LinkInfo(
                link.peer.node_id,
                link.connection.remote,
                link.outbound,
                link.since,
                link.frames_in,
                link.frames_out,
            )
            for _, link in sorted(self._links.items())
        ]

    # --- sending

    def send_nowait(self, send: Send) -> None:
        """Seal ``send.message`` onto the link to ``send.to``, or dial for it."""
        if send.to is not None:
            link = self._links.get(send.to)
            if link is not None and not link.closing and self._enqueue(link, send.message):
                return
            # No link, or it just failed: dial the peer again for this message.
        key = (send.to, send.addresses)
        parked = self._dials.get(key)
        if parked is not None:
            if len(parked) < _PENDING_PER_DIAL:
                parked.append(send.message)
            else:
                self.statistics.dropped_sends += 1
            return
        now = trio.current_time()
        addresses = tuple(a for a in send.addresses if self._backoff.get(a, (0.0, 0.0))[0] <= now)
        if not addresses or self._nursery is None or len(self._dials) >= _MAX_DIALS:
            self.statistics.dropped_sends += 1
            return
        self._dials[key] = deque([send.message])
        self._nursery.start_soon(self._dial, key, addresses)

    def _enqueue(self, link: _Link, message: Message) -> bool:
        """Seal ``message`` onto ``link``'s queue (or drop it when the queue is full);
        False when the link is dead, which drops it at once."""
        # Seal only what is sure to be queued: the receiver needs every counter in order.
        if link.closing:
            return False
        if len(link.outbox) >= self._limits.send_queue:
            self.statistics.dropped_sends += 1
            return True
        last, encoded = self._encoded
        if last is not message:
            encoded = encode(message)
            self._encoded = (message, encoded)
        try:
            frame = link.channel.seal(message, encoded)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            # The channel died on a bad frame from the peer (or ran out of counters): the
            # link goes away now, whatever its reader is still waiting for.
            log.debug("link to %s failed: %s", link.peer.node_id, exc)
            self._drop_link(link)
            return False
        link.outbox.append(frame)
        link.wakeup.set()
        return True

    async def _dial(
        self, key: tuple[NodeId | None, tuple[Address, ...]], addresses: tuple[Address, ...]
    ) -> None:
        expected, _ = key
        try:
            for address in addresses:
                self.statistics.dials += 1
                outcome = await self._dial_one(address, expected, key)
                if outcome is not None:
                    return
        except Exception:
            # A bug on one dial must not end the node: every other peer would lose it.
            log.exception("dial to %s failed", ", ".join(addresses))
        finally:
            parked = self._dials.pop(key, None)
            if parked:
                self.statistics.dropped_sends += len(parked)

    async def _dial_one(
        self,
        address: Address,
        expected: NodeId | None,
        key: tuple[NodeId | None, tuple[Address, ...]],
    ) -> _Link | None:
        channel = SecureChannel(
            self._keys,
            self._node_id,
            self._boot_id,
            initiator=True,
            random_bytes=self._random_bytes,
            expected_peer=expected,
        )
        connection: FrameConnection | None = None
        try:
            with trio.fail_after(self._limits.handshake_timeout):
                connection = await self._transport.connect(address)
                await connection.send(channel.start())
                # The peer's hello; we answer with the finished frame.
                for frame in channel.receive(await connection.receive()).frames:
                    await connection.send(frame)
        except SelfConnectionError:
            # One of our own addresses: tell the core (it never dials it again).
            parked = self._dials.get(key)
            if parked:
                self._deliver(parked[0], Peer(self._node_id, self._boot_id, address))
            self._backoff[address] = (trio.current_time() + 3600.0, 3600.0)
            await self._close(connection, CLOSE_NORMAL, "self")
            return None
        except UnexpectedPeerError as exc:
            log.debug("dial %s: %s", address, exc)
            await self._close(connection, CLOSE_NORMAL, "unexpected peer")
            self._failed(address)
            return None
        except (TransportError, ConnectionClosed, RemoteProtocolError, trio.TooSlowError) as exc:
            log.debug("dial %s failed: %s", address, exc)
            await self._close(connection, CLOSE_POLICY, "handshake failed")
            self._failed(address)
            return None
        self._backoff.pop(address, None)
        assert channel.peer_id is not None
        assert channel.peer_boot_id is not None
        peer = Peer(channel.peer_id, channel.peer_boot_id, address)
        connection.authenticated()
        link = self._register(connection, channel, peer, True)
        if link is None:
            # The peer's own dial won the race: what waited for this dial goes over that
            # link instead of being lost.
            link = self._links.get(peer.node_id)
            if link is None or link.closing:
                return None
        parked = self._dials.pop(key, deque())
        for message in parked:
            if not self._enqueue(link, message):
                self.statistics.dropped_sends += 1
        return link

    def _failed(self, address: Address) -> None:
        self.statistics.dial_failures += 1
        _, delay = self._backoff.get(address, (0.0, 0.0))
        delay = min(
            self._limits.connect_backoff_max, max(self._limits.connect_backoff_min, delay * 2)
        )
        # Full jitter keeps a fleet that booted together from dialling in lockstep.
        wait = delay * (0.5 + 0.5 * self._rng.random())
        self._backoff[address] = (trio.current_time() + wait, delay)

    @staticmethod
    async def _close(connection: FrameConnection | None, code: int, reason: str) -> None:
        if connection is not None:
            with trio.CancelScope(shield=True):
                await connection.aclose(code, reason)

    # --- accepting

    async def _accepted(self, connection: FrameConnection) -> None:
        self.statistics.accepted += 1
        channel = SecureChannel(
            self._keys,
            self._node_id,
            self._boot_id,
            initiator=False,
            random_bytes=self._random_bytes,
        )
        try:
            with trio.fail_after(self._limits.handshake_timeout):
                for frame in channel.receive(await connection.receive()).frames:
                    await connection.send(frame)
                # The finished frame: proof that the dialler holds its hello's ephemeral
                # key, so a recorded hello replayed here ends now, before any link.
                channel.receive(await connection.receive())
        except SelfConnectionError as exc:
            if exc.reply is not None:
                with (
                    trio.move_on_after(self._limits.handshake_timeout),
                    contextlib.suppress(ConnectionClosed),
                ):
                    await connection.send(exc.reply)
            return
        except (RemoteProtocolError, trio.TooSlowError) as exc:
            self._reject(connection, str(exc) or "handshake too slow")
            await connection.aclose(CLOSE_POLICY, "authentication failed")
            return
        except ConnectionClosed:
            return
        assert channel.established
        assert channel.peer_id is not None
        assert channel.peer_boot_id is not None
        connection.authenticated()
        link = self._register(
            connection, channel, Peer(channel.peer_id, channel.peer_boot_id, None), False
        )
        if link is None:
            return
        # The transport closes the connection when this handler returns: serve it here.
        await self._serve_link(link)

    def _reject(self, connection: FrameConnection, why: str) -> None:
        self.statistics.rejected += 1
        self._rejected_since_log += 1
        now = trio.current_time()
        if now - self._last_reject_log >= _LOG_EVERY:
            log.warning(
                "closed %d unauthenticated connection(s), latest from %s: %s "
                "(a node with another token, or not a rancherd)",
                self._rejected_since_log,
                connection.remote,
                why,
            )
            self._rejected_since_log = 0
            self._last_reject_log = now

    # --- established links

    def _register(
        self, connection: FrameConnection, channel: SecureChannel, peer: Peer, outbound: bool
    ) -> _Link | None:
        link = _Link(
            peer,
            connection,
            channel,
            outbound,
            self._node_id if outbound else peer.node_id,
            trio.current_time(),
        )
        old = self._links.get(peer.node_id)
        if old is not None and not old.closing:
            keep_new = (
                old.peer.boot_id != peer.boot_id
                # Both ends keep the connection dialled by the smaller node id.
                or link.dialled_by == min(self._node_id, peer.node_id)
            )
            loser = old if keep_new else link
            self.statistics.duplicates_closed += 1
            loser.closing = True
            loser.cancel.cancel()
            if not keep_new:
                assert self._nursery is not None
                self._nursery.start_soon(self._close, connection, CLOSE_NORMAL, "duplicate")
                return None
        self._links[peer.node_id] = link
        if outbound:
            assert self._nursery is not None
            self._nursery.start_soon(self._serve_link, link)
        return link

    def _drop_link(self, link: _Link) -> None:
        """Stop using ``link`` at once: later sends to its peer dial a new connection."""
        link.closing = True
        link.outbox.clear()
        if self._links.get(link.peer.node_id) is link:
            del self._links[link.peer.node_id]
        link.cancel.cancel()

    async def _serve_link(self, link: _Link) -> None:
        try:
            with link.cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write, link)
                    await self._read(link)
                    nursery.cancel_scope.cancel()
        except Exception:
            # Whatever went wrong on this link ends this link only, never the node.
            log.exception("link to %s failed", link.peer.node_id)
        finally:
            self._drop_link(link)
            await self._close(link.connection, CLOSE_NORMAL, "")

    async def _read(self, link: _Link) -> None:
        """One loop per link: receive, open, hand each message to the core. One cancel
        scope serves as the idle timer for the link's life (its deadline moves on with
        every frame), instead of a new scope per frame."""
        idle_timeout = self._limits.idle_timeout
        channel, connection, deliver, peer = link.channel, link.connection, self._deliver, link.peer
        keep = self._keep
        with trio.CancelScope(deadline=trio.current_time() + idle_timeout) as idle:
            while True:
                try:
                    frame = await connection.receive()
                except ConnectionClosed:
                    return
                idle.deadline = trio.current_time() + idle_timeout
                link.frames_in += 1
                try:
                    received = channel.receive(frame, keep)
                except RemoteProtocolError as exc:
                    self._drop_link(link)
                    self._reject(connection, str(exc))
                    with trio.CancelScope(shield=True):
                        await self._close(connection, CLOSE_POLICY, "authentication failed")
                    return
                for message in received.messages:
                    deliver(message, peer)
        if idle.cancelled_caught:
            self.statistics.idle_closed += 1

    async def _write(self, link: _Link) -> None:
        outbox, connection = link.outbox, link.connection
        while True:
            if not outbox:
                link.wakeup = trio.Event()
                await link.wakeup.wait()
                continue
            try:
                await connection.send(outbox.popleft())
            except ConnectionClosed:
                self._drop_link(link)
                return
            link.frames_out += 1
