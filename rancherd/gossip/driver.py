"""The trio shell around a ``GossipCore``: feed it, transmit its output, re-arm its timer.

As small as aioquic's asyncio protocol. Inputs (messages from ``Links``, answers from a
discovery provider) wait in the driver's queues (see ``Driver``); after each batch of
inputs or a timer the driver drains the core: ``Persist`` is written through the ``Store``
and confirmed, other events go to the log and to whoever waits on them, and messages go to
``Links.send_nowait``. The clock is ``trio.current_time()``, so the same driver runs on a
``MockClock`` in tests.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import trio

from rancherd.gossip.core import (
    Decided,
    DuplicateNodeId,
    Event,
    GossipCore,
    Peer,
    PeerAlive,
    PeerExpired,
    PeerInfo,
    Persist,
    PersistedState,
    ProtocolViolation,
    Send,
    SplitDetected,
    Status,
    StatusChanged,
)
from rancherd.gossip.messages import Address, Gossip, Message, Progress

__all__ = [
    "Discovered",
    "Driver",
    "DriverStatistics",
    "Received",
    "Sender",
    "Store",
    "ViolationLog",
]

log = logging.getLogger("rancherd.gossip")

_ELECTION_QUEUE = 4096
"""Election messages buffered for the core. They are few (a round is one message per
member, retransmitted every ``retransmit_interval``); this bound is only a last resort."""
_GOSSIP_SENDERS = 1024
"""Senders whose latest Gossip waits for the core; beyond it the oldest waiting is dropped
(the core expects loss: gossip repairs itself)."""
_GOSSIP_BATCH = 64
"""Gossip messages handled before the driver lets other tasks run (election messages and
timers never wait behind more than this)."""
_LAG_BEHIND = 0.1
"""A timer served this late (seconds), or a batch that left gossip waiting, counts as a
sign the node is behind; a timer served on time counts as a sign it is not."""
MAX_HEALTH_SCORE = 8
"""memberlist's ``AwarenessMaxMultiplier``: timeouts stretch up to nine times."""
VIOLATION_LOG_INTERVAL = 60.0
"""A peer's protocol violations are logged once, then as a count at most this often."""
_VIOLATION_PEERS = 256
"""Peers whose violations are being counted; beyond it the longest-known is forgotten."""


class ViolationLog:
    """One WARNING for a peer's first protocol violation, then at most one per
    ``VIOLATION_LOG_INTERVAL`` with the count since the last (a token holder sending
    garbage must not flood the journal: issue 15 counted 38,112 lines in 82 s)."""

    def __init__(self, interval: float = VIOLATION_LOG_INTERVAL) -> None:
        self._interval = interval
        self._peers: dict[str, tuple[float, int]] = {}  # peer -> (last logged, since then)

    def note(self, peer: str, reason: str, now: float) -> None:
        last, suppressed = self._peers.pop(peer, (-math.inf, 0))
        if now - last < self._interval:
            self._peers[peer] = (last, suppressed + 1)
            return
        if len(self._peers) >= _VIOLATION_PEERS:
            del self._peers[next(iter(self._peers))]
        self._peers[peer] = (now, 0)
        if suppressed:
            log.warning(
                "peer %s broke the protocol %d more time(s) in the last %.0f s; latest: %s",
                peer,
                suppressed + 1,
                now - last,
                reason,
            )
        else:
            log.warning("peer %s broke the protocol: %s", peer, reason)


class Store(Protocol):
    def save_gossip(self, state: PersistedState) -> None: ...


class Sender(Protocol):
    def send_nowait(self, send: Send) -> None: ...


@dataclass(frozen=True, slots=True)
class Received:
    message: Message
    peer: Peer


@dataclass(frozen=True, slots=True)
class Discovered:
    addresses: frozenset[Address]


@dataclass(slots=True)
class DriverStatistics:
    received: int = 0
    gossip_coalesced: int = 0
    """Gossip replaced by a newer one of the same sender before the core saw it."""
    gossip_dropped: int = 0
    election_dropped: int = 0
    health_score: int = 0
    """0 (on time) to ``MAX_HEALTH_SCORE`` (far behind): the core's timeouts are
    ``1 + health_score`` times their configured length."""


class Driver:
    """Runs one core. Create, hand ``deliver``/``discovered_nowait`` to the producers,
    ``await nursery.start(driver.run)``.

    Inputs wait in two queues, so that an overloaded node slows down instead of stalling:
    election messages (first, in order) and gossip (coalesced: one Gossip per sender, its
    newest, with the older one's request for a reply kept). A node that serves its timers
    late, or that cannot keep up with gossip, raises a health score (memberlist's local
    health awareness) that stretches the core's timeouts, so a late timer does not abandon
    a round, or forget a peer, that only waited for this node.
    """

    def __init__(
        self, core: GossipCore, store: Store, *, on_event: Callable[[Event], None] | None = None
    ) -> None:
        self.core = core
        self._store = store
        self._sender: Sender | None = None
        self._on_event = on_event
        self._election: deque[Received] = deque()
        self._gossip: dict[tuple[str, int], Received] = {}
        self._discovered: Discovered | None = None
        self._wakeup = trio.Event()
        self._changed = trio.Event()
        self._decided = trio.Event()
        self.statistics = DriverStatistics()
        self._violations = ViolationLog()
        self.decided_at: float | None = None
        """When this driver first learned the decision (trio time)."""
        self._status = core.status(trio.current_time())

    # --- inputs (synchronous: callable from any trio task)

    def deliver(self, message: Message, peer: Peer) -> None:
        item = Received(message, peer)
        if type(message) is Gossip:
            key = (peer.node_id, peer.boot_id)
            waiting = self._gossip.pop(key, None)
            if waiting is not None:
                self.statistics.gossip_coalesced += 1
                older = waiting.message
                assert type(older) is Gossip
                if older.want_reply and not message.want_reply:
                    item = Received(Gossip(message.records, True), peer)
            elif len(self._gossip) >= _GOSSIP_SENDERS:
                del self._gossip[next(iter(self._gossip))]
                self.statistics.gossip_dropped += 1
            self._gossip[key] = item
        else:
            if len(self._election) >= _ELECTION_QUEUE:
                self._election.popleft()
                self.statistics.election_dropped += 1
            self._election.append(item)
        self._wake()

    def discovered_nowait(self, addresses: Iterable[Address]) -> None:
        self._discovered = Discovered(frozenset(addresses))
        self._wake()

    def _wake(self) -> None:
        if not self._wakeup.is_set():
            self._wakeup.set()

    def set_progress(self, progress: Progress) -> None:
        self.core.set_progress(progress, trio.current_time())
        self._drain()

    # --- what the node knows

    @property
    def status(self) -> Status:
        return self._status

    def peers(self) -> list[PeerInfo]:
        return self.core.peers(trio.current_time())

    async def wait_changed(self) -> None:
        """Return at the next status change (for ``peers --watch``)."""
        await self._changed.wait()

    async def wait_decided(self) -> None:
        await self._decided.wait()

    # --- the loop

    async def run(
        self, sender: Sender, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._sender = sender
        self._drain()
        task_status.started()
        core = self.core
        while True:
            timer = core.get_timer()
            if not self._pending():
                with trio.move_on_at(math.inf if timer is None else timer):
                    await self._wakeup.wait()
            self._wakeup = trio.Event()
            behind = self._take_inputs()
            now = trio.current_time()
            if timer is not None and now >= timer:
                behind = behind or now - timer > _LAG_BEHIND
                self._set_health(behind)
                core.handle_timer(now)
            self._drain()
            if self._pending():
                await trio.lowlevel.checkpoint()  # let the links and other tasks run

    def _pending(self) -> bool:
        return bool(self._election or self._gossip or self._discovered is not None)

    def _take_inputs(self) -> bool:
        """Feed the core every election message, the discovery answer, then a batch of
        gossip; True when gossip is left waiting (the node is behind)."""
        core = self.core
        statistics = self.statistics
        election = self._election
        while election:
            item = election.popleft()
            statistics.received += 1
            core.receive(item.message, item.peer, trio.current_time())
        if self._discovered is not None:
            discovered, self._discovered = self._discovered, None
            core.discovered(discovered.addresses, trio.current_time())
        gossip = self._gossip
        for _ in range(min(_GOSSIP_BATCH, len(gossip))):
            item = gossip.pop(next(iter(gossip)))
            statistics.received += 1
            core.receive(item.message, item.peer, trio.current_time())
        return bool(gossip)

    def _set_health(self, behind: bool) -> None:
        statistics = self.statistics
        score = statistics.health_score
        score = min(MAX_HEALTH_SCORE, score + 1) if behind else max(0, score - 1)
        if score != statistics.health_score:
            statistics.health_score = score
            self.core.set_slowness(1.0 + score)

    def _drain(self) -> None:
        while (event := self.core.next_event()) is not None:
            if isinstance(event, Persist):
                self._store.save_gossip(event.state)
                self.core.persisted(event.generation)
            self._note(event)
        if self._sender is not None:
            for send in self.core.messages_to_send():
                self._sender.send_nowait(send)

    def _note(self, event: Event) -> None:
        if isinstance(event, StatusChanged):
            self._status = event.status
            log.info("%s", event.status.text)
            self._changed.set()
            self._changed = trio.Event()
        elif isinstance(event, Decided):
            # The status line that comes with it says the same in words.
            log.debug(
                "decided: %s in cluster %s (init node %s at %s)",
                event.role,
                event.decision.cluster_id,
                event.decision.init_node,
                event.decision.init_host,
            )
            if self.decided_at is None:
                self.decided_at = trio.current_time()
            self._decided.set()
        elif isinstance(event, SplitDetected):
            # Named as the status line names it: its first address, else a short id.
            known = [p.addresses for p in self.peers() if p.node_id == event.source]
            source = known[0][0] if known and known[0] else event.source[:8]
            log.error(
                "two clusters in one fleet: ours %s, %s reports %s; see docs/OPERATIONS.md",
                event.ours.cluster_id,
                source,
                event.theirs.cluster_id,
            )
        elif isinstance(event, DuplicateNodeId):
            log.error(
                "another machine uses this node id %s (at %s): a cloned data dir? "
                "remove its node-id file and restart it",
                event.node_id,
                ", ".join(event.addresses) or "an unknown address",
            )
        elif isinstance(event, ProtocolViolation):
            self._violations.note(event.peer, event.reason, trio.current_time())
        elif isinstance(event, PeerAlive):
            log.debug("peer %s (%s) alive at %s", event.node_id, event.role, event.addresses)
        elif isinstance(event, PeerExpired):
            log.debug("peer %s expired", event.node_id)
        if self._on_event is not None:
            self._on_event(event)
