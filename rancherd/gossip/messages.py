"""Every message of the gossip protocol, as frozen dataclasses.

This module is the wire contract. The codec (``codec.py``) encodes a message as
``[tag, field, field, ...]`` in field order, walking the type hints below, so:

- ``Tag`` is append-only: never renumber or reuse a value.
- Changing the fields of a message, or of a type a message carries, changes the wire
  format and needs a ``PROTOCOL_VERSION`` bump.
- Field types are limited to what the codec knows: ``int``, ``bool``, ``str``, ``bytes``,
  ``IntEnum`` subclasses, ``tuple[T, ...]``, ``T | None`` and the frozen dataclasses here.

Node ids are 32 lowercase hex characters (128 random bits, persisted by the caller); they
are the stable key the election orders by. Addresses are ``host:port`` strings (IPv6 hosts
in brackets) and are never used for ordering.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum

# Node ids are defined once, in rancherd.addresses; re-exported for the protocol modules.
from rancherd.addresses import NODE_ID_LENGTH as NODE_ID_LENGTH
from rancherd.addresses import is_node_id as is_node_id
from rancherd.kinds import Role as Role  # defined once, for config and gossip alike

PROTOCOL_VERSION = 3
"""The version this build speaks; peers agree on ``min(max_a, max_b)`` in the hello.

2: a record carries a digest of its view (``view_digest``, ``view_size``) instead of the
list of ids, so a record's size no longer grows with the number of servers.
3: the handshake gives forward secrecy and refuses replayed hellos: ``Hello.nonce`` is an
ephemeral X25519 public key, the session keys mix in the shared secret, the responder's
hello is bound to the initiator's, and the initiator sends a finished frame
(``security.py``). The messages themselves are those of version 2."""
MIN_PROTOCOL_VERSION = 3
"""The oldest version this build still speaks. A version 2 peer derives its session keys
without the ephemeral exchange, and a version 1 peer's records carry the whole view: both
are refused at the hello ("no common protocol version")."""

NodeId = str
Address = str

VIEW_DIGEST_SIZE = 8
"""Bytes of ``NodeRecord.view_digest``. Agreement compares digests, so a collision could at
worst make a proposer believe in an agreement that is not there; its round then fails
(voters check the ``Propose.view`` list itself), which safety never depends on."""


class Tag(IntEnum):
    """Message tags. Append-only."""

    HELLO = 1
    GOSSIP = 2
    PROPOSE = 3
    ACK = 4
    REFUSE = 5
    RELEASE = 6
    COMMIT = 7


class Progress(IntEnum):
    """How far a decided node is with installing the runtime (carried by gossip)."""

    NONE = 0
    """Not decided yet, or decided and not started."""
    WAITING = 1
    """Decided; waiting for the init node or for its turn to join."""
    INSTALLING = 2
    READY = 3
    """The runtime runs on this node (its done stamp is written)."""
    FAILED = 4


class RefuseReason(IntEnum):
    VOTED_OTHER = 1
    """The voter holds a standing vote for another proposer (see ``Refuse.vote``)."""
    DECIDED = 2
    """The voter already knows a committed decision (see ``Refuse.decision``)."""
    NOT_A_MEMBER = 3
    """The voter is an agent, or is not in the proposed view."""
    STALE_ROUND = 4
    """The proposer itself released this round earlier."""


@dataclass(frozen=True, slots=True)
class Vote:
    """A server's promise to let ``proposer`` create the cluster in ``round``.

    Durable and sticky: a server holds at most one, persists it before it acks, and only
    the proposer that holds it (or an operator's ``rancherd reset``) releases it.
    """

    proposer: NodeId
    round: int
    nonce: int
    """Random 64 bits the proposer drew for this round and persisted with it. Two machines
    that share a node id (a cloned data dir) draw different nonces, so a voter can never
    count one machine's round as the other's."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A committed election: ``init_node`` creates the cluster, everyone else joins it."""

    cluster_id: str
    """Hex id naming this cluster; two different ids in one fleet mean a split."""
    init_node: NodeId
    init_host: str
    """Host (IP or name) where the init node serves the Kubernetes API."""
    round: int
    members: tuple[NodeId, ...]
    """The servers whose acks committed it (sorted)."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What a node says about itself; gossip spreads the freshest copy of each.

    Freshness is ``(incarnation, heartbeat)``: ``incarnation`` is persisted and grows on
    every start, ``heartbeat`` grows while the node runs. Both are counters, never clock
    readings, so nodes with skewed clocks still agree which copy is newer.
    """

    node_id: NodeId
    incarnation: int
    boot_id: int
    """Random per process start (64 bits); two live records with one node id and different
    boot ids are two machines sharing an id (a cloned data dir)."""
    heartbeat: int
    role: Role
    addresses: tuple[Address, ...]
    """Gossip endpoints of this node."""
    api_host: str
    """Host at which this node would serve the Kubernetes API."""
    view_digest: bytes
    """``view_digest(view)`` of the servers this node counts, itself included: two records
    agree on a view when their digests are equal. The list itself travels only in
    ``Propose``, where a voter must see it."""
    view_size: int
    """How many servers the view counts; 0 for agents."""
    vote: Vote | None
    released: tuple[Vote, ...]
    """The last rounds this node released as a proposer (newest last, a few at most), so a
    voter whose ``Release`` was lost frees its vote from gossip alone."""
    decision: Decision | None
    progress: Progress


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame in each direction of a connection; sealed with the token's hello key.

    ``nonce`` is the sender's ephemeral X25519 public key (protocol 3): the session keys of
    the connection are derived from both, so the frames that follow are bound to this pair
    of nodes and this one connection, and cannot be opened with the token alone.
    """

    min_version: int
    max_version: int
    node_id: NodeId
    boot_id: int
    nonce: bytes
    """32 bytes: an X25519 public key, new for every connection."""


@dataclass(frozen=True, slots=True)
class Gossip:
    """Push (and pull, when ``want_reply``) of membership state.

    ``records[0]`` is the sender's own record; the rest are the freshest copies it holds
    of other nodes, servers first.
    """

    records: tuple[NodeRecord, ...]
    want_reply: bool


@dataclass(frozen=True, slots=True)
class Propose:
    """The minimum of an agreed view asks every member of ``view`` for its vote."""

    proposer: NodeId
    round: int
    nonce: int
    view: tuple[NodeId, ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """``voter`` has durably recorded its vote for ``(proposer, round, nonce)``."""

    proposer: NodeId
    round: int
    nonce: int
    voter: NodeId


@dataclass(frozen=True, slots=True)
class Refuse:
    """``voter`` will not vote for ``(proposer, round, nonce)``, and says why."""

    proposer: NodeId
    round: int
    nonce: int
    voter: NodeId
    reason: RefuseReason
    vote: Vote | None
    decision: Decision | None


@dataclass(frozen=True, slots=True)
class Release:
    """The proposer has durably abandoned this round; votes for exactly it are dropped."""

    proposer: NodeId
    round: int
    nonce: int


@dataclass(frozen=True, slots=True)
class Commit:
    """The proposer has durably committed ``decision``."""

    decision: Decision


Message = Hello | Gossip | Propose | Ack | Refuse | Release | Commit

MESSAGE_TYPES: dict[Tag, type[Message]] = {
    Tag.HELLO: Hello,
    Tag.GOSSIP: Gossip,
    Tag.PROPOSE: Propose,
    Tag.ACK: Ack,
    Tag.REFUSE: Refuse,
    Tag.RELEASE: Release,
    Tag.COMMIT: Commit,
}


def view_digest(view: tuple[NodeId, ...]) -> bytes:
    """The digest a record carries for ``view`` (sorted node ids, fixed length each, so
    their concatenation is unambiguous)."""
    return hashlib.blake2b("".join(view).encode(), digest_size=VIEW_DIGEST_SIZE).digest()


EMPTY_VIEW_DIGEST = view_digest(())
"""An agent's record carries this digest (and ``view_size`` 0)."""
