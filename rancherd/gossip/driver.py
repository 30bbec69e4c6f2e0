"""The trio shell around a ``GossipCore``: feed it, transmit its output, re-arm its timer.

As small as aioquic's asyncio protocol. Inputs (messages from ``Links``, answers from a
discovery provider) arrive on one channel; after each input or timer the driver drains the
core: ``Persist`` is written through the ``Store`` and confirmed, other events go to the
log and to whoever waits on them, and messages go to ``Links.send_nowait``. The clock is
``trio.current_time()``, so the same driver runs on a ``MockClock`` in tests.
"""

from __future__ import annotations

import contextlib
import logging
import math
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
from rancherd.gossip.messages import Address, Message, Progress

__all__ = ["Discovered", "Driver", "Received", "Sender", "Store"]

log = logging.getLogger("rancherd.gossip")

_INPUT_QUEUE = 1024
"""Inputs buffered for the core; beyond it messages are dropped (the core expects loss)."""


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


class Driver:
    """Runs one core. Create, hand ``deliver``/``discovered_nowait`` to the producers,
    ``await nursery.start(driver.run)``."""

    def __init__(
        self, core: GossipCore, store: Store, *, on_event: Callable[[Event], None] | None = None
    ) -> None:
        self.core = core
        self._store = store
        self._sender: Sender | None = None
        self._on_event = on_event
        self._inputs_send, self._inputs = trio.open_memory_channel[Received | Discovered](
            _INPUT_QUEUE
        )
        self._changed = trio.Event()
        self._decided = trio.Event()
        self.decided_at: float | None = None
        """When this driver first learned the decision (trio time)."""
        self._status = core.status(trio.current_time())

    # --- inputs (synchronous: callable from any trio task)

    def deliver(self, message: Message, peer: Peer) -> None:
        self._put(Received(message, peer))

    def discovered_nowait(self, addresses: Iterable[Address]) -> None:
        self._put(Discovered(frozenset(addresses)))

    def _put(self, item: Received | Discovered) -> None:
        with contextlib.suppress(trio.WouldBlock):  # the core expects loss
            self._inputs_send.send_nowait(item)

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
        while True:
            timer = self.core.get_timer()
            deadline = math.inf if timer is None else timer
            with trio.move_on_at(deadline):
                item = await self._inputs.receive()
                now = trio.current_time()
                if isinstance(item, Received):
                    self.core.receive(item.message, item.peer, now)
                else:
                    self.core.discovered(item.addresses, now)
            now = trio.current_time()
            if timer is not None and now >= timer:
                self.core.handle_timer(now)
            self._drain()

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
            log.warning("peer %s broke the protocol: %s", event.peer, event.reason)
        elif isinstance(event, PeerAlive):
            log.debug("peer %s (%s) alive at %s", event.node_id, event.role, event.addresses)
        elif isinstance(event, PeerExpired):
            log.debug("peer %s expired", event.node_id)
        if self._on_event is not None:
            self._on_event(event)
