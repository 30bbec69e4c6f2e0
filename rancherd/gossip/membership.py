"""Sans-IO peer table: the freshest record of every peer, expiry, views and what to gossip.

Rules (docs/PROTOCOL.md, sections 1 and 5):

- A record replaces the one held for its node id only when its freshness
  ``(incarnation, heartbeat)`` is greater; freshness is a pair of counters, never a clock.
- A peer whose freshness has not grown for ``server_cache_duration`` of local time is
  forgotten. Its last record stays as a tombstone, so a stale copy still relayed by a slower
  peer cannot bring it back; only a fresher record can.
- The view of a server is the sorted ids of the servers held alive, itself included (at most
  ``MAX_VIEW``, the smallest ids). Agreement on ``V`` needs ``|V| >= N`` and every member's
  freshest record reporting exactly ``V``.
- Gossip carries the sender's own record, then records that changed recently: memberlist's
  transmit-limited queue (``queue.go``), servers before agents, fewest transmissions first,
  newest first among equals. A full-state exchange carries servers first, then a rotating
  window of the others, bounded by a record count and a conservative byte estimate.

Work per received record is O(1) except when the set of servers or a server's view changes
(then O(servers)); nothing here scans the table per message.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum

from rancherd.addresses import NODE_ID_PATTERN
from rancherd.gossip.codec import (
    CLUSTER_ID_PATTERN,
    GOSSIP_ENVELOPE_BYTES,
    MAX_ADDRESS_LENGTH,
    MAX_ADDRESSES,
    MAX_HOST_LENGTH,
    MAX_RECORDS,
    MAX_RELEASED,
    MAX_UINT,
    MAX_VIEW,
    estimate_record_size,
)
from rancherd.gossip.messages import (
    EMPTY_VIEW_DIGEST,
    VIEW_DIGEST_SIZE,
    Address,
    Decision,
    NodeId,
    NodeRecord,
    Progress,
    Role,
    Vote,
    view_digest,
)
from rancherd.gossip.queue import BroadcastQueue, record_priority

__all__ = [
    "Applied",
    "PeerEntry",
    "PeerTable",
    "decision_problem",
    "id_problem",
    "ids_problem",
    "is_fresher",
    "is_uint",
    "record_problem",
    "vote_problem",
]


def is_fresher(incarnation: int, heartbeat: int, than: NodeRecord) -> bool:
    """Whether a copy with this freshness replaces ``than`` (the one rule of freshness:
    ``(incarnation, heartbeat)`` compared as a pair of counters)."""
    return incarnation > than.incarnation or (
        incarnation == than.incarnation and heartbeat > than.heartbeat
    )


# --- Checks of peer input ------------------------------------------------------------------
#
# The codec already enforces types, ranges and the alphabets of strings on everything it
# decodes. These checks are what the core relies on to never crash and never act on nonsense,
# whoever feeds it (the simulator and tests hand it objects directly). Each returns a reason,
# or None when the value is fine. Ids the table already holds skip the regex.


def is_uint(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_UINT


def id_problem(value: object, known: Container[str] = ()) -> str | None:
    if type(value) is not str:
        return "a node id is not a string"
    if value in known or NODE_ID_PATTERN.fullmatch(value) is not None:
        return None
    return f"malformed node id {value[:40]!r}"


def ids_problem(values: object, known: Container[str], limit: int) -> str | None:
    if type(values) is not tuple or len(values) > limit:
        return f"not a tuple of at most {limit} node ids"
    for value in values:
        problem = id_problem(value, known)
        if problem is not None:
            return problem
    for low, high in itertools.pairwise(values):
        if not low < high:
            return "node ids not sorted, or repeated"
    return None


def _text_problem(value: object, limit: int) -> str | None:
    if type(value) is not str or not 0 < len(value) <= limit:
        return f"not a string of 1..{limit} characters"
    return None


def vote_problem(vote: object, known: Container[str] = ()) -> str | None:
    if type(vote) is not Vote:
        return "not a Vote"
    if not (is_uint(vote.round) and is_uint(vote.nonce)):
        return "vote round or nonce out of range"
    return id_problem(vote.proposer, known)


def decision_problem(decision: object, known: Container[str] = ()) -> str | None:
    if type(decision) is not Decision:
        return "not a Decision"
    if type(decision.cluster_id) is not str or not CLUSTER_ID_PATTERN.fullmatch(
        decision.cluster_id
    ):
        return "malformed cluster id"
    if not is_uint(decision.round):
        return "decision round out of range"
    problem = (
        id_problem(decision.init_node, known)
        or _text_problem(decision.init_host, MAX_HOST_LENGTH)
        or ids_problem(decision.members, known, MAX_VIEW)
    )
    if problem is not None:
        return problem
    if decision.init_node not in decision.members:
        return "the init node is not among the decision's members"
    return None


def record_problem(
    record: object,
    known: Container[str] = (),
    checked: dict[Decision, None] | None = None,
    previous: NodeRecord | None = None,
) -> str | None:
    """Why ``record`` is not a record this node may store and relay, or None.

    ``previous``: a record of the same node that passed before; fields equal to its fields
    are not checked again (a new heartbeat rarely changes anything else). ``checked``
    remembers decisions already found good (every record of a decided fleet carries the
    same one); the caller bounds it.
    """
    if type(record) is not NodeRecord:
        return "not a NodeRecord"
    problem = _identity_problem(record, known)
    if problem is not None:
        return problem
    if previous is not None and previous.node_id != record.node_id:
        previous = None
    return (
        _reach_problem(record, previous)
        or _view_problem(record)
        or _votes_problem(record, known, previous)
        or _record_decision_problem(record, known, checked, previous)
    )


def _identity_problem(record: NodeRecord, known: Container[str]) -> str | None:
    """The node id, the counters, the role and the progress."""
    node_id = record.node_id
    if type(node_id) is not str or (
        node_id not in known and not NODE_ID_PATTERN.fullmatch(node_id)
    ):
        return "malformed node id"
    incarnation, boot_id, heartbeat = record.incarnation, record.boot_id, record.heartbeat
    if (
        type(incarnation) is not int
        or type(boot_id) is not int
        or type(heartbeat) is not int
        or not (0 <= incarnation <= MAX_UINT and 0 <= boot_id <= MAX_UINT)
        or not 0 <= heartbeat <= MAX_UINT
    ):
        return "incarnation, boot id or heartbeat out of range"
    if type(record.role) is not Role or type(record.progress) is not Progress:
        return "unknown role or progress"
    return None


def _reach_problem(record: NodeRecord, previous: NodeRecord | None) -> str | None:
    """The gossip addresses and the API host."""
    addresses = record.addresses
    if previous is None or addresses != previous.addresses:
        if type(addresses) is not tuple or len(addresses) > MAX_ADDRESSES:
            return f"not a tuple of at most {MAX_ADDRESSES} addresses"
        for address in addresses:
            if type(address) is not str or not 0 < len(address) <= MAX_ADDRESS_LENGTH:
                return "malformed address"
    api_host = record.api_host
    if (previous is None or api_host != previous.api_host) and (
        type(api_host) is not str or not 0 < len(api_host) <= MAX_HOST_LENGTH
    ):
        return "malformed api host"
    return None


def _view_problem(record: NodeRecord) -> str | None:
    digest, view_size = record.view_digest, record.view_size
    if type(digest) is not bytes or len(digest) != VIEW_DIGEST_SIZE:
        return "malformed view digest"
    if type(view_size) is not int or not 0 <= view_size <= MAX_VIEW:
        return f"view size outside 0..{MAX_VIEW}"
    if record.role is Role.SERVER and view_size == 0:
        return "a server's view does not count the server itself"
    if record.role is not Role.SERVER and view_size:
        return "an agent's record carries a view"
    return None


def _votes_problem(
    record: NodeRecord, known: Container[str], previous: NodeRecord | None
) -> str | None:
    """The vote held and the rounds released."""
    vote = record.vote
    if vote is not None and (previous is None or vote != previous.vote):
        problem = vote_problem(vote, known)
        if problem is not None:
            return problem
    released = record.released
    if previous is None or released != previous.released:
        if type(released) is not tuple or len(released) > MAX_RELEASED:
            return f"released is not a tuple of at most {MAX_RELEASED} votes"
        for vote in released:
            problem = vote_problem(vote, known)
            if problem is not None:
                return "released: " + problem
            if vote.proposer != record.node_id:
                return "released lists a round of another proposer"
    return None


def _record_decision_problem(
    record: NodeRecord,
    known: Container[str],
    checked: dict[Decision, None] | None,
    previous: NodeRecord | None,
) -> str | None:
    decision = record.decision
    if decision is None or (previous is not None and decision == previous.decision):
        return None
    if checked is not None and type(decision) is Decision:
        try:
            if decision in checked:
                return None
        except TypeError:  # an unhashable field: the check below names it
            pass
    problem = decision_problem(decision, known)
    if problem is not None:
        return problem
    if checked is not None:
        checked[decision] = None
    return None


# --- The table -----------------------------------------------------------------------------


class Applied(IntEnum):
    STALE = 0
    """Not fresher than what is held (or than the tombstone of a forgotten peer)."""
    FRESHER = 1
    NEW = 2


@dataclass(slots=True)
class PeerEntry:
    record: NodeRecord
    last_grew: float
    """Local time its freshness last grew."""
    size: int = -1
    """``estimate_record_size(record)``, computed when first needed."""
    direct: bool = False
    """It has sent us a message itself (not only been relayed)."""


@dataclass(slots=True)
class Tombstone:
    record: NodeRecord
    last_grew: float
    forgotten_at: float


class PeerTable:
    """Every peer this node holds alive, plus tombstones of those it forgot."""

    def __init__(
        self, self_id: NodeId, self_is_server: bool, cache_duration: float, max_tombstones: int
    ) -> None:
        self.self_id = self_id
        self.self_is_server = self_is_server
        self._cache_duration = cache_duration
        self._max_tombstones = max_tombstones
        self._entries: dict[NodeId, PeerEntry] = {}
        self._tombstones: dict[NodeId, Tombstone] = {}  # oldest first
        self._ids: list[NodeId] = []  # for O(1) random picks (order: swap-remove, seeded)
        self._positions: dict[NodeId, int] = {}
        self._servers: list[NodeId] = []  # sorted, without self
        self._by_address: dict[Address, NodeId] = {}
        self._expiry: list[tuple[float, NodeId]] = []  # lazy heap
        self._scheduled: dict[NodeId, float] = {}
        self._cursor = 0
        self.queue = BroadcastQueue()
        self.view: tuple[NodeId, ...] = (self_id,) if self_is_server else ()
        self.view_digest = view_digest(self.view) if self_is_server else EMPTY_VIEW_DIGEST
        self.view_changed = False
        """Set when the view changes; the owner clears it after acting on it."""
        self.servers_changed = False
        """Set when the set of servers or a server's view changes; cleared by the owner."""
        self._disagreeing: tuple[NodeId, ...] | None = ()
        self.slowness = 1.0
        """Multiplies the cache duration (``core.set_slowness``)."""

    # --- reads

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._entries

    def __iter__(self) -> Iterator[NodeId]:
        """Ids in sorted order (for listings; O(n log n), never on a per-message path)."""
        return iter(sorted(self._entries))

    @property
    def entries(self) -> Mapping[NodeId, PeerEntry]:
        """Every peer held alive, by id (read only): a fast membership test for the
        validators, and lookups for hot loops."""
        return self._entries

    def get(self, node_id: NodeId) -> PeerEntry | None:
        return self._entries.get(node_id)

    def tombstones(self) -> list[Tombstone]:
        return [self._tombstones[node_id] for node_id in sorted(self._tombstones)]

    @property
    def servers(self) -> tuple[NodeId, ...]:
        """Server peers held alive, sorted (without this node)."""
        return tuple(self._servers)

    @property
    def server_count(self) -> int:
        return len(self._servers)

    def node_at(self, address: Address) -> NodeId | None:
        return self._by_address.get(address)

    def addresses_of(self, node_id: NodeId) -> tuple[Address, ...]:
        record = self.last_record(node_id)
        return record.addresses if record is not None else ()

    def last_record(self, node_id: NodeId) -> NodeRecord | None:
        """The freshest record of ``node_id``, held alive or forgotten."""
        entry = self._entries.get(node_id)
        if entry is not None:
            return entry.record
        tombstone = self._tombstones.get(node_id)
        return tombstone.record if tombstone is not None else None

    def released_of(self, node_id: NodeId) -> tuple[Vote, ...]:
        entry = self._entries.get(node_id)
        return entry.record.released if entry is not None else ()

    def disagreeing(self) -> tuple[NodeId, ...]:
        """Members of the view whose freshest record reports another view."""
        if self._disagreeing is None:
            digest = self.view_digest
            entries = self._entries
            self._disagreeing = tuple(
                member
                for member in self.view
                if member != self.self_id and entries[member].record.view_digest != digest
            )
        return self._disagreeing

    # --- writes

    def apply(self, record: NodeRecord, now: float) -> Applied:
        """Store ``record`` if it is fresher than what is held; queue it for relaying."""
        node_id = record.node_id
        entry = self._entries.get(node_id)
        if entry is None:
            tombstone = self._tombstones.get(node_id)
            if tombstone is not None:
                if not is_fresher(record.incarnation, record.heartbeat, tombstone.record):
                    return Applied.STALE
                del self._tombstones[node_id]
            entry = PeerEntry(record, now)
            self._entries[node_id] = entry
            self._positions[node_id] = len(self._ids)
            self._ids.append(node_id)
            self._index_addresses((), record.addresses, node_id)
            self._schedule(node_id, now + self._cache_duration)
            if record.role is Role.SERVER:
                self._add_server(node_id)
            self.queue.push(record, record_priority(record, None))
            return Applied.NEW
        old = entry.record
        if not is_fresher(record.incarnation, record.heartbeat, old):
            return Applied.STALE
        entry.record = record
        entry.last_grew = now
        entry.size = -1
        if record.addresses != old.addresses:
            self._index_addresses(old.addresses, record.addresses, node_id)
        if record.role is not old.role:
            if record.role is Role.SERVER:
                self._add_server(node_id)
            else:
                self._remove_server(node_id)
        elif record.role is Role.SERVER and record.view_digest != old.view_digest:
            self.servers_changed = True
            self._disagreeing = None
        self.queue.push(record, record_priority(record, old))
        return Applied.FRESHER

    def mark_direct(self, node_id: NodeId) -> None:
        entry = self._entries.get(node_id)
        if entry is not None:
            entry.direct = True

    def next_expiry(self) -> float | None:
        """When the next peer may expire (possibly early: the heap is checked lazily)."""
        return self._expiry[0][0] if self._expiry else None

    def expire(self, now: float) -> list[NodeRecord]:
        """Forget every peer whose freshness has not grown for the cache duration."""
        forgotten: list[NodeRecord] = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            deadline, node_id = heapq.heappop(heap)
            if self._scheduled.get(node_id) != deadline:
                continue
            entry = self._entries[node_id]
            actual = entry.last_grew + self._cache_duration * self.slowness
            if actual > now:
                self._scheduled[node_id] = actual
                heapq.heappush(heap, (actual, node_id))
                continue
            self._forget(node_id, now)
            forgotten.append(entry.record)
        return forgotten

    # --- what to send

    def sample(self, count: int, rng: random.Random) -> list[NodeId]:
        """Up to ``count`` distinct random peers (seeded; O(count))."""
        ids = self._ids
        if count >= len(ids):
            return list(ids)
        return [ids[i] for i in rng.sample(range(len(ids)), count)]

    def sample_servers(self, count: int, rng: random.Random) -> list[NodeId]:
        """Up to ``count`` distinct random server peers (seeded; O(count))."""
        servers = self._servers
        if count >= len(servers):
            return list(servers)
        return [servers[i] for i in rng.sample(range(len(servers)), count)]

    def full_state(
        self,
        own: NodeRecord,
        own_size: int,
        max_records: int,
        byte_budget: int,
        skip: NodeId | None = None,
    ) -> tuple[NodeRecord, ...]:
        """Own record, every server, then a rotating window of the others, within bounds.

        ``max_records`` bounds the agents only: every server is in, so that one full state
        is enough for a server to know all the others (the codec's ``MAX_RECORDS`` and the
        byte budget still bind; a record without a view list is a few hundred bytes)."""
        records = [own]
        used = GOSSIP_ENVELOPE_BYTES + own_size
        entries = self._entries
        for node_id in self._servers:
            if len(records) >= MAX_RECORDS:
                return tuple(records)
            if node_id == skip:
                continue
            entry = entries[node_id]
            if entry.size < 0:
                entry.size = estimate_record_size(entry.record)
            if used + entry.size > byte_budget:
                return tuple(records)
            records.append(entry.record)
            used += entry.size
        ids = self._ids
        total = len(ids)
        start = self._cursor % total if total else 0
        taken = 0
        while taken < total and len(records) < max_records:
            node_id = ids[(start + taken) % total]
            entry = entries[node_id]
            if entry.record.role is not Role.SERVER and node_id != skip:
                if entry.size < 0:
                    entry.size = estimate_record_size(entry.record)
                if used + entry.size > byte_budget:
                    break
                records.append(entry.record)
                used += entry.size
            taken += 1
        self._cursor = start + taken
        return tuple(records)

    # --- internals

    def _schedule(self, node_id: NodeId, deadline: float) -> None:
        self._scheduled[node_id] = deadline
        heapq.heappush(self._expiry, (deadline, node_id))

    def _index_addresses(
        self, old: tuple[Address, ...], new: tuple[Address, ...], node_id: NodeId
    ) -> None:
        for address in old:
            if self._by_address.get(address) == node_id:
                del self._by_address[address]
        for address in new:
            self._by_address[address] = node_id

    def _add_server(self, node_id: NodeId) -> None:
        bisect.insort(self._servers, node_id)
        self._servers_set_changed()

    def _remove_server(self, node_id: NodeId) -> None:
        index = bisect.bisect_left(self._servers, node_id)
        if index < len(self._servers) and self._servers[index] == node_id:
            del self._servers[index]
            self._servers_set_changed()

    def _servers_set_changed(self) -> None:
        self.servers_changed = True
        self._disagreeing = None
        if self.self_is_server:
            members = self._servers[:MAX_VIEW]
            bisect.insort(members, self.self_id)
            view = tuple(members[:MAX_VIEW])
            if view != self.view:
                self.view = view
                self.view_digest = view_digest(view)
                self.view_changed = True

    def _forget(self, node_id: NodeId, now: float) -> None:
        entry = self._entries.pop(node_id)
        del self._scheduled[node_id]
        position = self._positions.pop(node_id)
        last = self._ids.pop()
        if last != node_id:
            self._ids[position] = last
            self._positions[last] = position
        self._index_addresses(entry.record.addresses, (), node_id)
        if entry.record.role is Role.SERVER:
            self._remove_server(node_id)
        self.queue.discard(node_id)
        self._tombstones[node_id] = Tombstone(entry.record, entry.last_grew, now)
        while len(self._tombstones) > self._max_tombstones:
            del self._tombstones[next(iter(self._tombstones))]
