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
so nothing that depends on a vote or decision can leave before it is on disk. That holds
for events too: ``next_event`` returns ``None`` while the next event waits for a
generation, and a ``Persist`` waits for the one before it.

A core never raises on what peers send: anything malformed, or claiming to come from
someone other than its authenticated sender, becomes one ``ProtocolViolation`` event and
changes nothing else. ``LocalProtocolError`` is for misuse of this API by the driver.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from rancherd.gossip.codec import GOSSIP_ENVELOPE_BYTES, MAX_RECORDS, estimate_record_size
from rancherd.gossip.config import GossipConfig, jittered, retransmit_limit
from rancherd.gossip.election import (
    Decided,
    Effect,
    Election,
    JoinRole,
    Phase,
    Split,
    Store,
    Transmit,
    election_message_problem,
    is_other_machine,
)
from rancherd.gossip.errors import LocalProtocolError
from rancherd.gossip.events import (
    DuplicateNodeId,
    Event,
    Identity,
    PeerAlive,
    PeerExpired,
    PeerInfo,
    Persist,
    PersistedState,
    ProtocolViolation,
    SplitDetected,
    Status,
    StatusChanged,
)
from rancherd.gossip.membership import (
    Applied,
    PeerTable,
    id_problem,
    is_fresher,
    is_uint,
    record_problem,
)
from rancherd.gossip.messages import (
    Ack,
    Address,
    Commit,
    Decision,
    Gossip,
    Hello,
    Message,
    NodeId,
    NodeRecord,
    Progress,
    Propose,
    Refuse,
    Release,
    Role,
)
from rancherd.gossip.partners import Partners
from rancherd.gossip.status import StatusWords

__all__ = [
    "Decided",
    "DuplicateNodeId",
    "Event",
    "GossipCore",
    "Identity",
    "JoinRole",
    "Peer",
    "PeerAlive",
    "PeerExpired",
    "PeerInfo",
    "Persist",
    "PersistedState",
    "Phase",
    "ProtocolViolation",
    "Send",
    "SplitDetected",
    "Status",
    "StatusChanged",
]


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


_MAX_DISCOVERED = 4096
"""Discovered addresses remembered (for ``PeerInfo.learned``); oldest forgotten first."""
_MAX_DUPLICATES = 16


def _identity_problem(identity: object) -> str | None:
    if type(identity) is not Identity:
        return "not an Identity"
    problem = id_problem(identity.node_id)
    if problem is not None:
        return problem
    if type(identity.role) is not Role:
        return "identity.role is not a Role"
    if type(identity.addresses) is not tuple or not all(
        type(a) is str and a for a in identity.addresses
    ):
        return "identity.addresses is not a tuple of addresses"
    if type(identity.api_host) is not str or not identity.api_host:
        return "identity.api_host is empty"
    return None


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
        problem = _identity_problem(identity)
        if problem is not None:
            raise LocalProtocolError(f"bad identity: {problem}")
        state = PersistedState() if persisted is None else persisted
        if type(state) is not PersistedState or not is_uint(state.incarnation):
            raise LocalProtocolError("persisted is not a PersistedState")
        self._config = config
        self._identity = identity
        self._id = identity.node_id
        self._rng = rng
        self._is_server = identity.role is Role.SERVER
        self._incarnation = state.incarnation + 1
        self._boot_id = rng.getrandbits(64)
        self._heartbeat = 0
        self._progress = Progress.NONE
        self._now = now
        self._table = PeerTable(
            identity.node_id, self._is_server, config.server_cache_duration, config.max_tombstones
        )
        self._partners = Partners(config.partners, config.server_fanout, self._is_server)
        self._election = Election(
            config,
            identity.node_id,
            self._is_server,
            identity.api_host,
            state.vote,
            state.next_round,
            state.released,
            state.decision,
            now,
        )
        # Output, each item tagged with the persist generation it waits for.
        self._generation = 0
        self._confirmed = 0
        self._sends: deque[tuple[int, Send]] = deque()
        self._events: deque[tuple[int, Event]] = deque()
        # Gossip timers. The first tick comes within one interval, at a random phase.
        self._next_gossip = now + config.gossip_interval * rng.random()
        self._next_push_pull = now + self._push_pull_interval() * (0.5 + 0.5 * rng.random())
        self._last_tick = -math.inf
        self._news = True
        self._announce = False
        """The next tick carries our new decision: it goes to every partner, not fanout."""
        # Discovery.
        self._own_addresses = frozenset(identity.addresses)
        self._discovered: dict[Address, float] = {}  # address -> last seen in an answer
        self._contacts: dict[Address, float] = {}  # unanswered address -> next contact
        self._contact_queue: deque[tuple[float, Address]] = deque()
        self._contacts_ready = now
        self._direct_addresses: dict[NodeId, Address] = {}
        # Anomalies and status.
        self._duplicates: dict[int, tuple[Address, ...]] = {}
        self._words = StatusWords(identity, config, self._election, self._table, self._duplicates)
        self._checked_decisions: dict[Decision, None] = {}
        self._status_dirty = True
        self._status_key: str | None = None
        self._own = self._build_record()
        self._own_size = estimate_record_size(self._own)
        # The new incarnation is on disk before any record carrying it leaves.
        self._persist(self._election.durable())
        if state.decision is not None:
            self._emit(Decided(state.decision, self._election.role_in(state.decision)))
        self._refresh_status(now)

    # --- identity

    @property
    def node_id(self) -> NodeId:
        return self._identity.node_id

    @property
    def boot_id(self) -> int:
        return self._boot_id

    @property
    def incarnation(self) -> int:
        return self._incarnation

    @property
    def config(self) -> GossipConfig:
        return self._config

    @property
    def decision(self) -> Decision | None:
        """The decision this node knows (persisted or waiting to be)."""
        return self._election.decision

    def members_informed(self) -> bool:
        """Every other member of this node's decision has reported it: its freshest
        record (alive, or forgotten after it left) carries the same decision."""
        decision = self._election.decision
        if decision is None:
            return False
        own = self._identity.node_id
        table = self._table
        for member in decision.members:
            if member != own:
                record = table.last_record(member)
                if record is None or record.decision != decision:
                    return False
        return True

    def join_role(self) -> JoinRole | None:
        """This node's part in the decision it knows (the ``Decided`` event's role)."""
        decision = self._election.decision
        return None if decision is None else self._election.role_in(decision)

    def record(self) -> NodeRecord:
        """This node's own current record."""
        return self._own

    # --- inputs

    def discovered(self, addresses: Iterable[Address], now: float) -> None:
        """The discovery provider's current answer (gossip endpoints, own ones included)."""
        now = self._advance(now)
        answer = list(addresses)
        if not all(type(a) is str and a for a in answer):
            raise LocalProtocolError("discovered() takes address strings")
        new: list[Address] = []
        for address in sorted(answer):
            if address in self._own_addresses:
                continue
            self._discovered.pop(address, None)
            self._discovered[address] = now
            if len(self._discovered) > _MAX_DISCOVERED:
                del self._discovered[next(iter(self._discovered))]
            if address not in self._contacts and self._table.node_at(address) is None:
                new.append(address)
        # Each node contacts the fleet in its own order: nodes that discovered the same
        # list would otherwise all contact its first few addresses.
        self._rng.shuffle(new)
        for address in new:
            self._contacts[address] = now
            self._contact_queue.append((now, address))
        self._contact_due(now)
        self._settle(now)

    def receive(self, message: Message, src: Peer, now: float) -> None:
        """One message from an authenticated peer."""
        now = self._advance(now)
        if (
            type(src) is not Peer
            or id_problem(src.node_id) is not None
            or not is_uint(src.boot_id)
            or not (src.address is None or type(src.address) is str)
        ):
            peer = src.node_id if isinstance(src, Peer) and type(src.node_id) is str else "?"
            self._violation(peer, "malformed sender")
            return
        if src.node_id == self._id and src.boot_id == self._boot_id:
            # Our own message came back: we dialled an address of ours that discovery
            # reported in another form. Never contact it again.
            if src.address is not None:
                self._own_addresses = self._own_addresses | {src.address}
                self._contacts.pop(src.address, None)
            return
        kind = type(message)
        if kind is Gossip:
            self._on_gossip(message, src, now)  # type: ignore[arg-type]
        elif kind in (Propose, Ack, Refuse, Release, Commit):
            self._on_election_message(message, src, now)  # type: ignore[arg-type]
        elif kind is Hello:
            self._violation(src.node_id, "a Hello reached the core (the codec consumes them)")
        else:
            self._violation(src.node_id, f"not a message: {kind.__name__}")
        self._settle(now)

    def handle_timer(self, now: float) -> None:
        now = self._advance(now)
        config = self._config
        if now >= self._next_gossip:
            self._last_tick = now
            self._gossip_tick(now)
            # A decided node slows down once it has nothing new to relay: the decision
            # itself, and each node's news of it, still spread at the full rate.
            interval = (
                config.gossip_interval
                if self._election.decision is None or self._news or self._table.queue.has_changes
                else config.decided_gossip_interval
            )
            self._next_gossip = now + jittered(interval, config.gossip_jitter, self._rng.random())
        if now >= self._next_push_pull:
            self._push_pull(now)
            self._next_push_pull = now + jittered(
                self._push_pull_interval(), config.gossip_jitter, self._rng.random()
            )
        self._contact_due(now)
        for record in self._table.expire(now):
            self._emit(PeerExpired(record.node_id))
            self._status_dirty = True
            if record.role is Role.SERVER:
                self._run(self._election.on_member_lost(record.node_id, now, self._rng), now)
        election = self._election
        before = (election.phase, election.in_grace)
        self._run(election.on_timer(now, self._rng), now)
        if (election.phase, election.in_grace) != before:
            self._status_dirty = True
        self._settle(now)

    def get_timer(self) -> float | None:
        timer = self._next_gossip
        if self._next_push_pull < timer:
            timer = self._next_push_pull
        if self._contact_queue:
            contact = max(self._contact_queue[0][0], self._contacts_ready)
            if contact < timer:
                timer = contact
        deadline = self._election.deadline()
        if deadline is not None and deadline < timer:
            timer = deadline
        expiry = self._table.next_expiry()
        if expiry is not None and expiry < timer:
            timer = expiry
        return timer

    def persisted(self, generation: int) -> None:
        """The state of ``Persist(generation)`` (and every earlier one) is on disk."""
        if type(generation) is not int or not 1 <= generation <= self._generation:
            raise LocalProtocolError(
                f"persisted({generation!r}): only generations 1..{self._generation} exist"
            )
        self._confirmed = max(self._confirmed, generation)

    def set_slowness(self, factor: float) -> None:
        """Stretch the election's timeouts and the peer expiry by ``factor`` (>= 1): the
        driver's local health awareness, when this node serves its inputs late. A round
        that times out, or a peer forgotten, only because this node was slow would make
        more work for the node that is already behind."""
        if not (type(factor) is float and 1.0 <= factor <= 100.0):
            raise LocalProtocolError(f"set_slowness({factor!r}): a float in 1..100")
        self._election.slowness = factor
        self._table.slowness = factor

    def set_progress(self, progress: Progress, now: float) -> None:
        """The installer's progress, carried in this node's record."""
        if type(progress) is not Progress:
            raise LocalProtocolError("set_progress() takes a Progress")
        now = self._advance(now)
        if progress is not self._progress:
            self._progress = progress
            self._bump()

    def wants_record(
        self, node_id: NodeId, incarnation: int, heartbeat: int, cluster_id: str | None
    ) -> bool:
        """Whether a relayed record with these fields could change anything here: the
        codec's pre-filter (``decode(keep=...)``), so that stale copies are never converted
        or checked. The same test as the shortcut in ``_on_gossip``; never a reason to act."""
        decision = self._election.decision
        if cluster_id is not None and (decision is None or cluster_id != decision.cluster_id):
            return True
        vote = self._election.vote
        if vote is not None and vote.proposer == node_id:
            return True
        held = self._table.get(node_id)
        return held is None or is_fresher(incarnation, heartbeat, held.record)

    # --- outputs

    def messages_to_send(self) -> list[Send]:
        """Every message whose persist barrier is confirmed, in the order they were queued."""
        sends = self._sends
        out: list[Send] = []
        while sends and sends[0][0] <= self._confirmed:
            out.append(sends.popleft()[1])
        return out

    def next_event(self) -> Event | None:
        events = self._events
        if events and events[0][0] <= self._confirmed:
            return events.popleft()[1]
        return None

    def status(self, now: float) -> Status:
        return self._words.status(now, with_ages=True)

    def peers(self, now: float) -> list[PeerInfo]:
        """Every peer held alive, then those forgotten (``alive=False``), by node id."""
        table = self._table
        digest = table.view_digest
        rows: list[PeerInfo] = []
        for node_id in table:
            entry = table.get(node_id)
            assert entry is not None
            record = entry.record
            rows.append(
                PeerInfo(
                    node_id,
                    record.role,
                    record.addresses,
                    True,
                    max(0.0, now - entry.last_grew),
                    self._learned(node_id, record.addresses, entry.direct),
                    record.view_digest == digest,
                    record.vote,
                    record.decision,
                    record.progress,
                )
            )
        for tombstone in table.tombstones():
            record = tombstone.record
            rows.append(
                PeerInfo(
                    record.node_id,
                    record.role,
                    record.addresses,
                    False,
                    max(0.0, now - tombstone.last_grew),
                    self._learned(record.node_id, record.addresses, False),
                    record.view_digest == digest,
                    record.vote,
                    record.decision,
                    record.progress,
                )
            )
        return rows

    # --- receiving

    @staticmethod
    def _gossip_shape_problem(message: Gossip) -> str | None:
        records: object = message.records  # typed, but a peer's input is checked anyway
        if type(records) is not tuple or not records or len(records) > MAX_RECORDS:
            return f"Gossip needs 1..{MAX_RECORDS} records"
        want_reply: object = message.want_reply
        if type(want_reply) is not bool:
            return "Gossip.want_reply is not a bool"
        return None

    def _on_gossip(self, message: Gossip, src: Peer, now: float) -> None:
        problem = self._gossip_shape_problem(message)
        if problem is not None:
            self._violation(src.node_id, problem)
            return
        records = message.records
        table = self._table
        known = table.entries
        ours = self._election.decision
        ours_id = ours.cluster_id if ours is not None else None
        vote = self._election.vote
        watched = vote.proposer if vote is not None else None
        sender = src.node_id
        table_full = not self._is_server and len(table) >= self._config.max_relayed_agents
        held_entry = known.get
        my_id = self._id
        fresh: list[NodeRecord] = []
        for index, record in enumerate(records):
            if type(record) is not NodeRecord or type(record.node_id) is not str:
                self._violation(sender, f"Gossip.records[{index}] is not a record")
                return
            node_id = record.node_id
            if node_id == my_id and record.boot_id == self._boot_id:
                continue  # our own record, relayed back to us
            held = held_entry(node_id)
            old = held.record if held is not None else None
            if old is record:
                continue  # the very object we took before (in-process relays)
            # Skip, without checking further, what would change nothing: records that are
            # not fresher (or of agents we do not store) whose decision, if any, is ours.
            decision = record.decision
            if (
                decision is None or (type(decision) is Decision and decision.cluster_id == ours_id)
            ) and node_id != watched:
                if old is None:
                    if table_full and record.role is not Role.SERVER and node_id != sender:
                        continue
                else:
                    incarnation, heartbeat = record.incarnation, record.heartbeat
                    if (
                        type(incarnation) is int
                        and type(heartbeat) is int
                        and not is_fresher(incarnation, heartbeat, old)
                    ):
                        continue
            problem = record_problem(record, known, self._checked_decisions, old)
            if problem is not None:
                self._violation(sender, f"Gossip.records[{index}]: {problem}")
                return
            fresh.append(record)
        if len(self._checked_decisions) > 64:
            self._checked_decisions.clear()
        if records[0].node_id != src.node_id:
            self._violation(src.node_id, "Gossip.records[0] is not the sender's own record")
            return
        self._heard_from(src, records[0].addresses, now)
        for record in fresh:
            storable = not table_full or record.role is Role.SERVER or record.node_id == src.node_id
            self._take_record(record, now, storable)
        table.mark_direct(src.node_id)
        self._partners.called(src.node_id, table)
        if message.want_reply and src.node_id != self._id:
            records = table.full_state(
                self._own,
                self._own_size,
                self._config.max_records_per_push_pull,
                self._config.max_message_bytes,
                skip=src.node_id,
            )
            self._send_to(src.node_id, Gossip(records, want_reply=False))

    def _take_record(self, record: NodeRecord, now: float, storable: bool = True) -> None:
        """Act on one checked record. ``storable``: whether a peer not yet held may enter
        the table (an agent holds relayed agents only below ``max_relayed_agents``)."""
        node_id = record.node_id
        election = self._election
        if node_id == self._id:
            self._own_id_record(record, now)
            return
        decision = record.decision
        if decision is not None:
            ours = election.decision
            if ours is None or decision.cluster_id != ours.cluster_id:
                self._run(election.on_decision(decision, node_id, now), now)
        vote = election.vote
        if vote is not None and vote.proposer == node_id and record.released:
            self._run(election.on_released_list(node_id, record.released), now)
        if not storable and node_id not in self._table:
            return
        applied = self._table.apply(record, now)
        if applied is Applied.STALE:
            return
        if applied is Applied.NEW:
            self._emit(PeerAlive(node_id, record.role, record.addresses))
            if self._contacts:
                for address in record.addresses:
                    self._contacts.pop(address, None)
        their_vote = record.vote
        if their_vote is not None and their_vote.proposer == self._id:
            self._run(election.on_peer_vote(node_id, their_vote, now), now)

    def _own_id_record(self, record: NodeRecord, now: float) -> None:
        """A record with this node's id: never stored, but it may reveal a clone."""
        if record.boot_id == self._boot_id:
            return
        if is_other_machine(self._incarnation, record.incarnation):
            self._note_duplicate(record.boot_id, record.addresses, now)
        if record.decision is not None:
            self._run(self._election.on_decision(record.decision, record.node_id, now), now)

    def _on_election_message(
        self, message: Propose | Ack | Refuse | Release | Commit, src: Peer, now: float
    ) -> None:
        problem = election_message_problem(message, src.node_id, self._table.entries)
        if problem is not None:
            self._violation(src.node_id, problem)
            return
        self._heard_from(src, (), now)
        election = self._election
        rng = self._rng
        if src.node_id == self._id:
            # Another machine with our id: report it; only a decision is worth taking.
            addresses = (src.address,) if src.address is not None else ()
            self._note_duplicate(src.boot_id, addresses, now)
            if type(message) is Commit:
                self._run(election.on_decision(message.decision, src.node_id, now), now)
            return
        if type(message) is Propose:
            released = self._table.released_of(message.proposer)
            self._run(election.on_propose(message, now, released), now)
        elif type(message) is Ack:
            self._run(election.on_ack(message, now, rng), now)
        elif type(message) is Refuse:
            self._run(election.on_refuse(message, now, rng), now)
        elif type(message) is Release:
            self._run(election.on_release(message), now)
        else:
            assert type(message) is Commit
            self._run(election.on_decision(message.decision, src.node_id, now), now)
        self._status_dirty = True

    def _heard_from(self, src: Peer, addresses: tuple[Address, ...], now: float) -> None:
        if src.address is not None:
            self._direct_addresses[src.node_id] = src.address
            self._contacts.pop(src.address, None)
        for address in addresses:
            self._contacts.pop(address, None)

    def _note_duplicate(self, boot_id: int, addresses: tuple[Address, ...], now: float) -> None:
        known = self._duplicates.get(boot_id)
        if known is not None:
            if not known and addresses:
                self._duplicates[boot_id] = addresses
            return
        if len(self._duplicates) >= _MAX_DUPLICATES:
            return
        self._duplicates[boot_id] = addresses
        self._emit(DuplicateNodeId(self.node_id, boot_id, addresses))
        self._status_dirty = True
        self._run(self._election.on_duplicate(now, self._rng), now)

    # --- acting

    def _run(self, effects: list[Effect], now: float) -> None:
        """Carry out the election's effects in order (a Store holds back what follows)."""
        if not effects:
            return
        stored = decided = False
        for effect in effects:
            if isinstance(effect, Store):
                self._persist(effect)
                stored = True
            elif isinstance(effect, Transmit):
                self._send_to(effect.to, effect.message)
            elif isinstance(effect, Split):
                ours = self._election.decision
                assert ours is not None
                self._emit(SplitDetected(ours, effect.theirs, effect.source))
            else:
                self._emit(effect)  # Decided: the election's effect is the core's event
                decided = True
        self._status_dirty = True
        if stored:
            self._bump()
            self._changed(now, at_once=decided)

    def _settle(self, now: float) -> None:
        """After every input: act on view changes, maybe propose, report status changes."""
        table = self._table
        if table.view_changed:
            table.view_changed = False
            self._bump()
            self._changed(now)
        if table.servers_changed:
            table.servers_changed = False
            self._status_dirty = True
        if self._is_server and self._election.decision is None:
            agreement = self._election.agreement(table.view, table.disagreeing())
            if agreement is not None:
                self._run(self._election.evaluate(agreement, now, self._rng), now)
        self._refresh_status(now)

    def _persist(self, store: Store) -> None:
        self._generation += 1
        state = PersistedState(
            self._incarnation, store.vote, store.next_round, store.released, store.decision
        )
        self._events.append((self._generation - 1, Persist(self._generation, state)))

    def _emit(self, event: Event) -> None:
        self._events.append((self._generation, event))

    def _violation(self, peer: NodeId, reason: str) -> None:
        self._emit(ProtocolViolation(peer, reason))

    def _send_to(self, node_id: NodeId, message: Message) -> None:
        addresses = self._table.addresses_of(node_id)
        if not addresses:
            direct = self._direct_addresses.get(node_id)
            addresses = (direct,) if direct is not None else ()
        self._sends.append((self._generation, Send(node_id, addresses, message)))

    def _advance(self, now: float) -> float:
        if now > self._now:
            self._now = now
        return self._now

    def _build_record(self) -> NodeRecord:
        election = self._election
        identity = self._identity
        return NodeRecord(
            node_id=identity.node_id,
            incarnation=self._incarnation,
            boot_id=self._boot_id,
            heartbeat=self._heartbeat,
            role=identity.role,
            addresses=identity.addresses,
            api_host=identity.api_host,
            view_digest=self._table.view_digest,
            view_size=len(self._table.view),
            vote=election.vote,
            released=election.record_released(),
            decision=election.decision,
            progress=self._progress,
        )

    def _bump(self, news: bool = True) -> None:
        """A new version of our own record: every change grows the heartbeat. ``news``:
        it says something new (not only a heartbeat), for the next tick to spread."""
        self._news = self._news or news
        self._heartbeat += 1
        self._own = self._build_record()
        self._own_size = estimate_record_size(self._own)

    # --- gossiping

    def _piggyback(self, targets: list[NodeId]) -> tuple[NodeRecord, ...]:
        """Own record plus recently changed ones, counted as sent to every target."""
        config = self._config
        budget = config.max_message_bytes - GOSSIP_ENVELOPE_BYTES - self._own_size
        limit = retransmit_limit(config.retransmit_mult, len(self._table) + 1)
        skip = targets[0] if len(targets) == 1 else None
        relayed = self._table.queue.take(
            config.max_records_per_gossip - 1, budget, limit, skip, copies=len(targets)
        )
        return (self._own, *relayed)

    def _gossip_tick(self, now: float) -> None:
        """Heartbeat, then our record and what waits to be relayed to ``fanout`` partners
        when there is news (our record or a relayed one says something new), to
        ``quiet_fanout`` when the tick only refreshes (memberlist gossips only when it has
        broadcasts; its liveness comes from one probe a second)."""
        config = self._config
        news = self._news or self._table.queue.has_changes
        self._news = False
        self._bump(news=False)
        if self._announce:  # a new decision: every partner
            count = len(self._table)
        else:
            count = config.fanout if news else config.quiet_fanout
        self._announce = False
        servers = min(config.server_fanout, count) if self._is_server else 0
        targets = self._partners.targets(self._table, count, servers, self._rng)
        if not targets:
            return
        gossip = Gossip(self._piggyback(targets), want_reply=False)
        for target in targets:
            self._send_to(target, gossip)

    def _gathering(self) -> bool:
        """A server with no decision, or with one that a member held alive has not
        reported yet: a member's decided record that relays missed (each is sent a
        limited number of times, and an overloaded node drops gossip) would otherwise
        come only with the slow push-pull, and a node waiting for its members to know
        would wait that long. A member forgotten, or reporting another decision (a
        split), is not waited for: no full state will change what it said."""
        if not self._is_server:
            return False
        decision = self._election.decision
        if decision is None:
            return True
        entries = self._table.entries
        for member in decision.members:
            entry = entries.get(member)
            if entry is not None and entry.record.decision is None:
                return True
        return False

    def _push_pull_interval(self) -> float:
        """A server still gathering exchanges full states more often: the existence of a
        server that few peers have heard of spreads slowly as relayed records (each is sent
        a limited number of times), while one full state carries every server."""
        if self._gathering():
            return self._config.gathering_push_pull_interval
        return self._config.push_pull_interval

    def _push_pull(self, now: float) -> None:
        """Full state with one random peer of the whole table (not only the partners),
        and a new partner in place of an old one: the fleet keeps mixing. A server still
        gathering exchanges with a random partner instead, over a connection it has: its
        fast exchanges are for filling in servers, not for mixing."""
        if self._gathering():
            targets = self._partners.targets(self._table, 1, 0, self._rng)
        else:
            self._partners.rotate(self._table, self._rng)
            targets = self._table.sample(1, self._rng)
        if not targets:
            return
        records = self._table.full_state(
            self._own,
            self._own_size,
            self._config.max_records_per_push_pull,
            self._config.max_message_bytes,
            skip=targets[0],
        )
        self._send_to(targets[0], Gossip(records, want_reply=True))

    def _changed(self, now: float, at_once: bool = False) -> None:
        """Our view, vote or decision changed: the node ticks early (at most one tick per
        ``push_on_change_interval``), so the change leaves at once, as an epidemic through
        its partners and their relay queues. An early tick replaces the next regular one,
        so a change costs no frames beyond the tick's, whatever the size of the fleet.

        ``at_once``: we just decided. That tick is not held back and goes to every partner
        (a few frames, once): a node may stop as soon as every member reports the decision
        (``rancherd discover``), and so may the peers a held-back or fanout-only tick
        reached, before they relay it; the other members would then wait for our decision
        until the record expires."""
        if not len(self._table):
            return
        at_once = at_once and self._is_server  # members wait for servers' news only
        if at_once:
            self._announce = True
        due = now if at_once else max(now, self._last_tick + self._config.push_on_change_interval)
        if due < self._next_gossip:
            self._next_gossip = due

    def _contact_due(self, now: float) -> None:
        """Say hello (a Gossip wanting a reply) to discovered addresses nobody answered from."""
        if now < self._contacts_ready:
            return
        queue = self._contact_queue
        contacts = self._contacts
        config = self._config
        sent = 0
        records: tuple[NodeRecord, ...] | None = None
        while queue and queue[0][0] <= now:
            due, address = queue[0]
            if contacts.get(address) != due:
                queue.popleft()  # answered, or rescheduled
                continue
            last_seen = self._discovered.get(address, -math.inf)
            if (
                self._table.node_at(address) is not None
                or now - last_seen > config.server_cache_duration
            ):
                queue.popleft()
                del contacts[address]
                continue
            if sent >= self._contact_budget():
                self._contacts_ready = now + (
                    config.gossip_interval
                    if len(self._table) < config.partners
                    else config.contact_interval
                )
                break
            queue.popleft()
            contacts[address] = now + config.contact_interval
            queue.append((now + config.contact_interval, address))
            if records is None:
                records = self._table.full_state(
                    self._own,
                    self._own_size,
                    config.max_records_per_gossip,
                    config.max_message_bytes,
                )
            self._sends.append((self._generation, Send(None, (address,), Gossip(records, True))))
            sent += 1

    def _contact_budget(self) -> int:
        """Contacts per round: a server still looking for the fleet contacts a few addresses
        at once; one that already has its partners' worth of peers is in the fleet, whose
        gossip will soon name the owners of the rest, so it contacts one at a time. Agents
        always contact one at a time: they never vote, and hundreds of agents that each
        contacted every server at once would fill the servers' connection slots (a
        contact's reply already names up to ``max_records_per_push_pull`` peers)."""
        if self._is_server and len(self._table) < self._config.partners:
            return self._config.max_contacts_per_round
        return 1

    # --- explaining

    def _refresh_status(self, now: float) -> None:
        if not self._status_dirty:
            return
        self._status_dirty = False
        key = self._words.status(now, with_ages=False).text
        if key != self._status_key:
            self._status_key = key
            self._emit(StatusChanged(self._words.status(now, with_ages=True)))

    def _learned(self, node_id: NodeId, addresses: tuple[Address, ...], direct: bool) -> str:
        if direct:
            return "direct"
        if any(address in self._discovered for address in addresses):
            return "discovery"
        return "gossip"
