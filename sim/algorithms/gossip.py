"""The rancherd gossip protocol: one ``GossipCore`` per node, driven like the trio driver.

This adapter is the simulator's driver (``rancherd/gossip/core.py`` describes the contract):

- boot: ``GossipCore(config, Identity(node_id, role, (ip:port,), ip), persisted, rng, now)``
  with ``persisted`` the state this machine last confirmed on disk (``None`` on a fresh or
  wiped data dir) and ``rng`` the incarnation's own seeded generator;
- every input (``receive``, ``discovered``, ``handle_timer``) is followed by the same pump:
  drain ``next_event()``; a ``Persist`` starts a disk write (fsync delay from the scenario)
  and **every later event waits** until that write is confirmed with
  ``core.persisted(generation)``, so a ``Decided`` is recorded only once it is durable;
  then ``messages_to_send()`` go out (the core itself holds back what depends on an
  unconfirmed write) and the timer is re-armed at ``min(get_timer(), next mDNS query)``;
- a ``Send`` goes to the machine whose current data dir holds ``to`` when there is one,
  else to the machine owning the first of ``addresses``; the receiver gets the message
  with ``Peer(sender id, sender boot id, sender address)``, as an authenticated channel
  would establish it;
- discovery: servers advertise ``ip:port``; every node queries mDNS when the real
  provider would (``sim.discovery.QuerySchedule``: start-up queries, then a few per
  ``serverCacheDuration``), keeps each answer ``discovery.cache`` seconds (as
  a zeroconf browser keeps records) and feeds the cached set to ``core.discovered``.

With ``codec`` every message is encoded and decoded by ``rancherd.gossip.codec`` on the
way, to exercise it; where the codec takes a ``keep`` pre-filter, the receiver's
``core.wants_record`` is passed, as the real driver would, so a codec run also checks that
declining stale relayed records changes nothing (the trace stays that of a plain run).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from rancherd.gossip import codec
from rancherd.gossip.config import GossipConfig
from rancherd.gossip.core import (
    Decided,
    DuplicateNodeId,
    Event,
    GossipCore,
    Identity,
    Peer,
    Persist,
    PersistedState,
    ProtocolViolation,
    SplitDetected,
)
from rancherd.gossip.messages import Ack, Commit, Gossip, Message, Propose, Refuse, Release, Role
from sim.algorithms.base import Host
from sim.audit import ElectionAudit
from sim.discovery import QuerySchedule
from sim.invariants import InvariantChecker
from sim.scenario import Scenario

GOSSIP_PORT = 7946

MESSAGE_KINDS: dict[type, str] = {
    Propose: "propose",
    Ack: "ack",
    Refuse: "refuse",
    Release: "release",
    Commit: "commit",
    Gossip: "gossip",
}
"""What a ``buggify`` or ``crash_at`` fault calls each message (``sim/faults.py``)."""


def make_config(scenario: Scenario) -> GossipConfig:
    """The scenario's preset, with its ``expectedServers`` and ``serverCacheDuration``."""
    return GossipConfig.for_fleet(
        scenario.gossip.preset,
        expected_servers=scenario.expected_servers,
        server_cache_duration=scenario.server_cache_duration,
    )


Keep = Callable[[str, int, int, "str | None"], bool]
Roundtrip = Callable[[Message, "Keep | None"], Message]


def codec_roundtrip() -> Roundtrip:
    """Encode and decode through ``rancherd.gossip.codec``, the receiver's ``keep`` applied."""

    def roundtrip(message: Message, keep: Keep | None) -> Message:
        return codec.decode(codec.encode(message), keep=keep)

    return roundtrip


class GossipProcess:
    def __init__(self, host: Host, algorithm: GossipAlgorithm) -> None:
        self.host = host
        self.algorithm = algorithm
        self.address = f"{host.ip}:{GOSSIP_PORT}"
        self.core: GossipCore | None = None
        self.peer: Peer | None = None
        self.backlog: deque[Event] = deque()
        self.writing: int | None = None
        """Generation of the disk write in flight; later events wait for it."""
        self.seen: dict[str, float] = {}
        self.next_query = 0.0
        self.schedule = QuerySchedule(0.0, 60.0, random.Random(0))

    def on_boot(self) -> None:
        host = self.host
        role = Role.SERVER if host.role == "server" else Role.AGENT
        if role is Role.SERVER:
            host.advertise(self.address)
        disk = host.disk()
        persisted = disk if isinstance(disk, PersistedState) else None
        identity = Identity(host.node_id, role, (self.address,), host.ip)
        now = host.now()
        core = GossipCore(self.algorithm.config, identity, persisted, host.rng, now)
        self.core = core
        self.peer = Peer(core.node_id, core.boot_id, self.address)
        self.next_query = now
        schedule_rng = random.Random(f"mdns-schedule:{host.node_id}:{now!r}")
        self.schedule = QuerySchedule(
            now, self.algorithm.scenario.server_cache_duration, schedule_rng
        )
        self._query(now)
        self._pump()

    def _query(self, now: float) -> None:
        spec = self.algorithm.scenario.discovery
        self.host.query_discovery(spec.window)
        self.next_query = self.schedule.next_after(now)

    # Inputs.

    def on_discovery(self, addresses: tuple[str, ...]) -> None:
        core = self.core
        assert core is not None
        now = self.host.now()
        cache = self.algorithm.discovery_cache
        for address in addresses:
            self.seen[address] = now
        for address in [a for a, t in self.seen.items() if t + cache < now]:
            del self.seen[address]
        core.discovered(sorted(self.seen), now)
        self._pump()

    def on_message(self, src: str, payload: object) -> None:
        core = self.core
        assert core is not None
        assert isinstance(payload, tuple)
        peer: Peer = payload[0]
        message: Message = payload[1]
        if self.algorithm.roundtrip is not None:
            wants_record = getattr(core, "wants_record", None)
            message = self.algorithm.roundtrip(message, wants_record)
        core.receive(message, peer, self.host.now())
        self._pump()

    def on_timer(self) -> None:
        core = self.core
        assert core is not None
        now = self.host.now()
        due = core.get_timer()
        if due is not None and due <= now:
            core.handle_timer(now)
        if self.next_query <= now:
            self._query(now)
        self._pump()

    def on_disk_written(self, state: object) -> None:
        core = self.core
        assert core is not None
        assert self.writing is not None
        generation, self.writing = self.writing, None
        core.persisted(generation)
        self._pump()

    # The pump: events, then sends, then the timer.

    def _pump(self) -> None:
        core = self.core
        assert core is not None
        host = self.host
        while (event := core.next_event()) is not None:
            self.backlog.append(event)
        while self.backlog and self.writing is None:
            event = self.backlog.popleft()
            if isinstance(event, Persist):
                self.writing = event.generation
                host.write_disk(event.state)
            elif isinstance(event, Decided):
                host.decide(event.decision.cluster_id, event.role.value)
            elif isinstance(event, SplitDetected):
                host.note("split-detected")
            elif isinstance(event, DuplicateNodeId):
                host.note("duplicate-node-id")
            elif isinstance(event, ProtocolViolation):
                host.note("protocol-violation")
        peer = self.peer
        assert peer is not None
        for send in core.messages_to_send():
            target = host.machine_with_id(send.to) if send.to is not None else None
            if target is None:
                for address in send.addresses:
                    target = host.machine_at(address)
                    if target is not None:
                        break
            if target is not None and target != host.name:
                host.send(target, (peer, send.message))
        due = core.get_timer()
        host.set_timer(self.next_query if due is None else min(due, self.next_query))


class GossipAlgorithm:
    name = "gossip"

    def __init__(self, scenario: Scenario, *, codec: bool = False) -> None:
        self.scenario = scenario
        self.config = make_config(scenario)
        self.discovery_cache = scenario.discovery_cache
        self.roundtrip = codec_roundtrip() if codec else None

    def new_process(self, host: Host) -> GossipProcess:
        return GossipProcess(host, self)

    def message_kind(self, payload: object) -> str | None:
        message = payload[1] if isinstance(payload, tuple) else None
        return MESSAGE_KINDS.get(type(message))

    def new_audit(self, checker: InvariantChecker, scenario: Scenario) -> ElectionAudit:
        return ElectionAudit(checker.protocol, scenario.expected_servers)
