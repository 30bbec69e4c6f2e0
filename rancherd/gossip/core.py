"""The sans-IO gossip node: membership plus election behind one aioquic-shaped API.

The driver (trio in production, a heapq loop in ``sim/``, hand wiring in unit tests) does:

    core.receive(message, src, now) / core.discovered(addresses, now) / core.handle_timer(now)
    while (event := core.next_event()) is not None:
        if isinstance(event, Persist):
            write_and_fsync(event.state); core.persisted(event.generation)
        ...
    for send in core.messages_to_send(): transmit(send)
    arm_timer(core.get_timer())

Output queued after a ``Persist`` event is held back until that generation is confirmed,
so nothing that depends on a vote or decision can leave before it is on disk.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from rancherd.gossip.config import GossipConfig
from rancherd.gossip.messages import (
    Address,
    Decision,
    Message,
    NodeId,
    NodeRecord,
    Progress,
    Role,
    Vote,
)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this node is; fixed for the life of a core."""

    node_id: NodeId
    role: Role
    addresses: tuple[Address, ...]
    """Own gossip endpoints, as peers should dial them."""
    api_host: str
    """Host at which this node would serve the Kubernetes API."""


@dataclass(frozen=True, slots=True)
class PersistedState:
    """Everything the core needs to survive a restart; the driver writes it atomically."""

    incarnation: int = 0
    vote: Vote | None = None
    next_round: int = 0
    released: tuple[Vote, ...] = ()
    decision: Decision | None = None


@dataclass(frozen=True, slots=True)
class Peer:
    """The sender of a message, as the authenticated channel established it."""

    node_id: NodeId
    boot_id: int
    address: Address | None = None


@dataclass(frozen=True, slots=True)
class Send:
    """One message for the driver to transmit."""

    to: NodeId | None
    """The receiving node when known: reuse a connection to it if there is one."""
    addresses: tuple[Address, ...]
    """Where to connect otherwise (the first that answers)."""
    message: Message


class JoinRole(StrEnum):
    CLUSTER_INIT = "cluster-init"
    SERVER = "server"
    AGENT = "agent"


# Events (drained with next_event()).


@dataclass(frozen=True, slots=True)
class Persist:
    """Write ``state`` durably, then call ``core.persisted(generation)``."""

    generation: int
    state: PersistedState


@dataclass(frozen=True, slots=True)
class Decided:
    decision: Decision
    role: JoinRole


@dataclass(frozen=True, slots=True)
class SplitDetected:
    ours: Decision
    theirs: Decision
    source: NodeId


@dataclass(frozen=True, slots=True)
class DuplicateNodeId:
    node_id: NodeId
    other_boot_id: int
    addresses: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class PeerAlive:
    node_id: NodeId
    role: Role
    addresses: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class PeerExpired:
    node_id: NodeId


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    peer: NodeId
    reason: str


class Phase(StrEnum):
    DISCOVERING = "discovering"
    PROPOSING = "proposing"
    VOTED = "voted"
    BACKOFF = "backoff"
    DECIDED = "decided"


@dataclass(frozen=True, slots=True)
class Status:
    """What the node waits for, in data and in one plain sentence (``text``)."""

    phase: Phase
    text: str
    node_id: NodeId
    role: Role
    expected_servers: int
    view: tuple[NodeId, ...]
    waiting_for: tuple[NodeId, ...]
    vote: Vote | None
    decision: Decision | None
    split: bool
    duplicate_id: bool


@dataclass(frozen=True, slots=True)
class StatusChanged:
    status: Status


Event = (
    Persist
    | Decided
    | SplitDetected
    | DuplicateNodeId
    | PeerAlive
    | PeerExpired
    | ProtocolViolation
    | StatusChanged
)


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One row of ``rancherd peers``."""

    node_id: NodeId
    role: Role
    addresses: tuple[Address, ...]
    alive: bool
    last_heard: float
    """Seconds since its freshness last grew, at the ``now`` given to ``peers()``."""
    learned: str
    """``discovery``, ``gossip`` or ``direct``."""
    agrees: bool
    """Its view equals this node's view."""
    vote: Vote | None
    decision: Decision | None
    progress: Progress


class GossipCore:
    """One node of the protocol in docs/PROTOCOL.md. Never reads a clock or a socket."""

    def __init__(
        self,
        config: GossipConfig,
        identity: Identity,
        persisted: PersistedState | None,
        rng: random.Random,
        now: float,
    ) -> None:
        raise NotImplementedError

    @property
    def node_id(self) -> NodeId:
        raise NotImplementedError

    @property
    def boot_id(self) -> int:
        raise NotImplementedError

    def record(self) -> NodeRecord:
        """This node's own current record."""
        raise NotImplementedError

    def discovered(self, addresses: Iterable[Address], now: float) -> None:
        """The discovery provider's current answer (gossip endpoints, own ones included)."""
        raise NotImplementedError

    def receive(self, message: Message, src: Peer, now: float) -> None:
        raise NotImplementedError

    def handle_timer(self, now: float) -> None:
        raise NotImplementedError

    def get_timer(self) -> float | None:
        raise NotImplementedError

    def messages_to_send(self) -> list[Send]:
        raise NotImplementedError

    def next_event(self) -> Event | None:
        raise NotImplementedError

    def persisted(self, generation: int) -> None:
        raise NotImplementedError

    def set_progress(self, progress: Progress, now: float) -> None:
        """The installer's progress, carried in this node's record."""
        raise NotImplementedError

    def status(self, now: float) -> Status:
        raise NotImplementedError

    def peers(self, now: float) -> list[PeerInfo]:
        raise NotImplementedError
