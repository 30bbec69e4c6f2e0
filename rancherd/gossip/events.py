"""The core's events (drained with ``GossipCore.next_event()``), as frozen dataclasses,
with the two records a driver hands the core (``Identity``) and keeps for it
(``PersistedState``).

aioquic's ``events.py`` and h11's ``_events.py`` are the model: what a driver can be told
is listed in one place. ``Decided`` is the election's own effect, passed on as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from rancherd.gossip.election import Decided, Phase
from rancherd.gossip.messages import Address, Decision, NodeId, Progress, Role, Vote

__all__ = [
    "Decided",
    "DuplicateNodeId",
    "Event",
    "Identity",
    "PeerAlive",
    "PeerExpired",
    "PeerInfo",
    "Persist",
    "PersistedState",
    "ProtocolViolation",
    "SplitDetected",
    "Status",
    "StatusChanged",
]


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
class Persist:
    """Write ``state`` durably, then call ``core.persisted(generation)``."""

    generation: int
    state: PersistedState


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
