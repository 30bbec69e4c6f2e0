"""A deterministic, hand-wired network of gossip cores on a virtual clock.

Like h11's ``ConnectionPair`` or aioquic's ``transfer(sender, receiver)``, scaled to a few
nodes: ``Network`` owns virtual time, every core, their "disks", and the messages in
flight. It drains each core after every call (confirming ``Persist`` events unless a node
is told to hold them), delivers ``Send``s by node id or address, and can drop, duplicate,
reorder, partition, crash and restart. Messages pass through the real codec by default, so
anything a core emits must also be encodable.

Two ways to drive it:

- ``run(duration)`` / ``run_until(predicate)``: an event loop; each message arrives
  ``latency`` (plus optional jitter) after it was sent, each core's timer fires on time.
- step by step (the hypothesis state machine): ``in_flight``, ``deliver(index)``,
  ``drop(index)``, ``duplicate(index)``, ``advance(dt)`` (fires timers, delivers nothing).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from rancherd.gossip import codec
from rancherd.gossip.config import GossipConfig
from rancherd.gossip.core import (
    Decided,
    Event,
    GossipCore,
    Identity,
    JoinRole,
    Peer,
    Persist,
    PersistedState,
    ProtocolViolation,
    Send,
)
from rancherd.gossip.messages import Address, Decision, NodeId, Role

E = TypeVar("E", bound=Event)

START = 1000.0
"""Virtual time at which every network starts (any value works: time is only relative)."""


@dataclass
class Envelope:
    seq: int
    sent_at: float
    deliver_at: float
    sender: str
    """Name of the sending node."""
    src: Peer
    send: Send


@dataclass
class Node:
    name: str
    identity: Identity
    core: GossipCore | None
    disk: PersistedState | None = None
    """The last state whose persist was confirmed (survives crashes)."""
    events: list[Event] = field(default_factory=list)
    """Every event of every incarnation, in order."""
    hold_persists: bool = False
    """Leave Persist events unconfirmed until ``Network.confirm``."""
    unconfirmed: list[Persist] = field(default_factory=list)
    incarnations: int = 1
    crashed_at: float | None = None

    @property
    def up(self) -> bool:
        return self.core is not None

    @property
    def node_id(self) -> NodeId:
        return self.identity.node_id

    @property
    def address(self) -> Address:
        return self.identity.addresses[0]

    def decided(self) -> list[Decided]:
        return [event for event in self.events if isinstance(event, Decided)]

    def violations(self) -> list[ProtocolViolation]:
        return [event for event in self.events if isinstance(event, ProtocolViolation)]

    def of_type(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]


class Network:
    def __init__(
        self,
        config: GossipConfig | None = None,
        seed: int = 0,
        *,
        latency: float = 0.001,
        jitter: float = 0.0,
        check_codec: bool = True,
    ) -> None:
        self.config = config if config is not None else GossipConfig.lan()
        self.seed = seed
        self.rng = random.Random(f"network-{seed}")
        self.now = START
        self.latency = latency
        self.jitter = jitter
        self.check_codec = check_codec
        self.nodes: dict[str, Node] = {}
        self.in_flight: list[Envelope] = []
        self.loss = 0.0
        self.duplication = 0.0
        self.drop_filter: Callable[[Envelope], bool] | None = None
        """Messages it returns True for are lost when sent."""
        self.send_hook: Callable[[Node, Send], None] | None = None
        """Called with every message as it leaves its core (before any loss)."""
        self._groups: dict[str, int] | None = None
        self._blocked: set[tuple[str, str]] = set()
        self._seq = 0
        self.trace: list[tuple[float, str, str, str]] = []
        """(time, sender, receiver, message type) of every delivered message."""
        self.sent = 0
        self.delivered = 0

    # --- building

    def add(
        self,
        role: Role = Role.SERVER,
        name: str | None = None,
        *,
        node_id: NodeId | None = None,
        config: GossipConfig | None = None,
        persisted: PersistedState | None = None,
    ) -> Node:
        index = len(self.nodes) + 1
        if name is None:
            prefix = "s" if role is Role.SERVER else "a"
            name = f"{prefix}{sum(1 for n in self.nodes.values() if n.identity.role is role)}"
        if node_id is None:
            node_id = f"{self.rng.getrandbits(128):032x}"
        host = f"10.0.{index // 250}.{index % 250 + 1}"
        identity = Identity(node_id, role, (f"{host}:8443",), host)
        node = Node(name, identity, None, disk=persisted)
        self.nodes[name] = node
        node.core = GossipCore(
            config or self.config, identity, persisted, self._node_rng(node), self.now
        )
        self._drain(node)
        return node

    def add_servers(self, count: int) -> list[Node]:
        return [self.add(Role.SERVER) for _ in range(count)]

    def add_agents(self, count: int) -> list[Node]:
        return [self.add(Role.AGENT) for _ in range(count)]

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def core(self, name: str) -> GossipCore:
        core = self.nodes[name].core
        assert core is not None, f"{name} is down"
        return core

    def _node_rng(self, node: Node) -> random.Random:
        return random.Random(f"{self.seed}-{node.name}-{node.incarnations}")

    # --- discovery

    def discover(self, name: str, addresses: Iterable[Address] | None = None) -> None:
        """Give ``name`` a discovery answer (by default every node's address, own included)."""
        node = self.nodes[name]
        if node.core is None:
            return
        if addresses is None:
            addresses = [n.address for n in self.nodes.values()]
        node.core.discovered(list(addresses), self.now)
        self._drain(node)

    def discover_all(self) -> None:
        for name in list(self.nodes):
            self.discover(name)

    # --- draining

    def _drain(self, node: Node) -> None:
        core = node.core
        assert core is not None
        while True:
            event = core.next_event()
            if event is None:
                break
            node.events.append(event)
            if isinstance(event, Persist):
                if node.hold_persists:
                    node.unconfirmed.append(event)
                else:
                    node.disk = event.state
                    core.persisted(event.generation)
        for send in core.messages_to_send():
            self._queue(node, core, send)

    def confirm(self, name: str, count: int | None = None) -> None:
        """Confirm the oldest ``count`` held persists of ``name`` (all by default)."""
        node = self.nodes[name]
        core = node.core
        assert core is not None
        held = node.unconfirmed if count is None else node.unconfirmed[:count]
        for persist in held:
            node.disk = persist.state
            core.persisted(persist.generation)
        node.unconfirmed = node.unconfirmed[len(held) :]
        self._drain(node)

    def _queue(self, node: Node, core: GossipCore, send: Send) -> None:
        self.sent += 1
        if self.send_hook is not None:
            self.send_hook(node, send)
        if self.check_codec:
            data = codec.encode(send.message)
            send = Send(send.to, send.addresses, codec.decode(data))
        if self.loss and self.rng.random() < self.loss:
            return
        copies = 2 if self.duplication and self.rng.random() < self.duplication else 1
        src = Peer(core.node_id, core.boot_id, node.address)
        for _ in range(copies):
            self._seq += 1
            delay = self.latency + (self.rng.random() * self.jitter if self.jitter else 0.0)
            envelope = Envelope(self._seq, self.now, self.now + delay, node.name, src, send)
            if self.drop_filter is not None and self.drop_filter(envelope):
                continue
            self.in_flight.append(envelope)

    # --- delivering

    def target_of(self, envelope: Envelope) -> Node | None:
        """Who receives ``envelope``: the node with ``send.to`` (by its address when two
        machines share an id), else the first address that answers."""
        send = envelope.send
        up = [n for n in self.nodes.values() if n.up]
        if send.to is not None:
            owners = [n for n in up if n.node_id == send.to]
            if len(owners) == 1:
                return owners[0]
            for address in send.addresses:
                for n in owners:
                    if n.address == address:
                        return n
            if owners:
                return owners[0]
            return None
        for address in send.addresses:
            for n in up:
                if n.address == address:
                    return n
        return None

    def _reachable(self, sender: str, receiver: str) -> bool:
        if (sender, receiver) in self._blocked:
            return False
        groups = self._groups
        return groups is None or groups.get(sender, -1) == groups.get(receiver, -2)

    def deliver(self, index: int = 0) -> None:
        """Deliver ``in_flight[index]`` now (whatever its ``deliver_at``)."""
        envelope = self.in_flight.pop(index)
        target = self.target_of(envelope)
        if target is None or target.core is None:
            return
        if not self._reachable(envelope.sender, target.name):
            return
        self.delivered += 1
        message = envelope.send.message
        self.trace.append((self.now, envelope.sender, target.name, type(message).__name__))
        target.core.receive(message, envelope.src, self.now)
        self._drain(target)

    def drop(self, index: int = 0) -> None:
        self.in_flight.pop(index)

    def duplicate(self, index: int = 0) -> None:
        self._seq += 1
        original = self.in_flight[index]
        self.in_flight.append(
            Envelope(
                self._seq,
                original.sent_at,
                original.deliver_at,
                original.sender,
                original.src,
                original.send,
            )
        )

    def deliver_all(self, max_messages: int = 100_000) -> int:
        """Deliver in send order until nothing is in flight (time does not move)."""
        count = 0
        while self.in_flight:
            if count >= max_messages:
                raise AssertionError("messages keep flowing without time moving")
            self.deliver(0)
            count += 1
        return count

    def drop_where(self, predicate: Callable[[Envelope], bool]) -> int:
        kept = [e for e in self.in_flight if not predicate(e)]
        dropped = len(self.in_flight) - len(kept)
        self.in_flight = kept
        return dropped

    # --- time

    def next_timer(self) -> tuple[float, Node] | None:
        best: tuple[float, Node] | None = None
        for node in self.nodes.values():
            if node.core is None:
                continue
            timer = node.core.get_timer()
            if timer is not None and (best is None or timer < best[0]):
                best = (timer, node)
        return best

    def fire(self, node: Node) -> None:
        core = node.core
        assert core is not None
        for _ in range(1000):
            timer = core.get_timer()
            if timer is None or timer > self.now:
                return
            core.handle_timer(self.now)
            self._drain(node)
        raise AssertionError(f"{node.name}: the timer does not move past now={self.now}")

    def poke(self, name: str) -> None:
        """Call ``handle_timer(now)`` on ``name`` whether or not its timer is due."""
        node = self.nodes[name]
        assert node.core is not None
        node.core.handle_timer(self.now)
        self._drain(node)

    def advance(self, dt: float) -> None:
        """Move time by ``dt``, firing every timer due on the way; deliver nothing."""
        end = self.now + dt
        while True:
            upcoming = self.next_timer()
            if upcoming is None or upcoming[0] > end:
                break
            self.now = max(self.now, upcoming[0])
            self.fire(upcoming[1])
        self.now = end

    def advance_to_next_timer(self) -> float | None:
        upcoming = self.next_timer()
        if upcoming is None:
            return None
        self.now = max(self.now, upcoming[0])
        self.fire(upcoming[1])
        return self.now

    def step(self) -> bool:
        """One event of the loop: the earliest message or timer. False when there is none."""
        message_at = min((e.deliver_at, e.seq) for e in self.in_flight) if self.in_flight else None
        upcoming = self.next_timer()
        if message_at is None and upcoming is None:
            return False
        if upcoming is None or (message_at is not None and message_at[0] <= upcoming[0]):
            assert message_at is not None
            index = next(i for i, e in enumerate(self.in_flight) if e.seq == message_at[1])
            self.now = max(self.now, message_at[0])
            self.deliver(index)
        else:
            self.now = max(self.now, upcoming[0])
            self.fire(upcoming[1])
        return True

    def run(self, duration: float) -> None:
        self.run_until(lambda: False, duration)

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Run the loop until ``predicate()`` holds (True) or ``timeout`` passes (False)."""
        end = self.now + timeout
        while not predicate():
            if not self._next_at_or_before(end):
                self.now = max(self.now, end)
                return predicate()
            self.step()
        return True

    def _next_at_or_before(self, end: float) -> bool:
        times = [e.deliver_at for e in self.in_flight]
        upcoming = self.next_timer()
        if upcoming is not None:
            times.append(upcoming[0])
        return bool(times) and min(times) <= end

    # --- faults

    def partition(self, *groups: Iterable[str]) -> None:
        """Only nodes in the same group hear each other (nodes in no group hear nobody)."""
        self._groups = {name: index for index, group in enumerate(groups) for name in group}

    def heal(self) -> None:
        self._groups = None
        self._blocked.clear()

    def block(self, sender: str, receiver: str, both: bool = True) -> None:
        self._blocked.add((sender, receiver))
        if both:
            self._blocked.add((receiver, sender))

    def crash(self, name: str) -> None:
        """The process dies: its core and unconfirmed writes are gone, its disk stays."""
        node = self.nodes[name]
        node.core = None
        node.unconfirmed = []
        node.crashed_at = self.now

    def restart(self, name: str, *, wipe: bool = False) -> Node:
        """A new process from the node's disk (or an empty one), with a new generator."""
        node = self.nodes[name]
        assert node.core is None, f"{name} is running"
        node.incarnations += 1
        if wipe:
            node.disk = None
        node.crashed_at = None
        node.core = GossipCore(
            self.config, node.identity, node.disk, self._node_rng(node), self.now
        )
        self._drain(node)
        return node

    # --- questions

    def live(self) -> list[Node]:
        return [node for node in self.nodes.values() if node.up]

    def decision_of(self, name: str) -> Decision | None:
        node = self.nodes[name]
        if node.core is not None:
            return node.core.decision
        return node.disk.decision if node.disk is not None else None

    def all_decided(self, names: Iterable[str] | None = None) -> bool:
        chosen = self.live() if names is None else [self.nodes[n] for n in names]
        return all(node.core is not None and node.core.decision is not None for node in chosen)

    def cluster_inits(self) -> set[tuple[str, str]]:
        """(node name, cluster id) of every node that was ever told to be cluster-init."""
        return {
            (node.name, event.decision.cluster_id)
            for node in self.nodes.values()
            for event in node.decided()
            if event.role is JoinRole.CLUSTER_INIT
        }

    def cluster_ids(self) -> set[str]:
        return {
            event.decision.cluster_id for node in self.nodes.values() for event in node.decided()
        }


def measure_receive(role: Role, peers: int = 100, servers: int = 5, rounds: int = 5000) -> str:
    """Wall time of ``receive()`` of a typical periodic Gossip (8 records, 4 of them servers)
    by a core of ``role`` that holds ``peers`` peers; for the engineering report:

        python -c "import sys; sys.path.insert(0, 'tests'); import gossip_harness as h; \\
                   from rancherd.gossip.messages import Role; \\
                   print(h.measure_receive(Role.AGENT)); print(h.measure_receive(Role.SERVER))"
    """
    import time

    from rancherd.gossip.messages import EMPTY_VIEW_DIGEST, Gossip, NodeRecord, Progress
    from rancherd.gossip.messages import view_digest as digest_of

    rng = random.Random(1)
    ids = sorted(f"{rng.getrandbits(128):032x}" for _ in range(peers))
    server_ids = ids[:servers]
    me = ids[0] if role is Role.SERVER else ids[-1]
    config = GossipConfig.lan()
    core = GossipCore(config, Identity(me, role, ("10.9.0.1:8443",), "10.9.0.1"), None, rng, 0.0)

    def record(index: int, heartbeat: int) -> NodeRecord:
        node_id = ids[index]
        server = node_id in server_ids
        host = f"10.9.{index // 200}.{index % 200 + 2}"
        return NodeRecord(
            node_id,
            1,
            7,
            heartbeat,
            Role.SERVER if server else Role.AGENT,
            (f"{host}:8443",),
            host,
            digest_of(tuple(server_ids)) if server else EMPTY_VIEW_DIGEST,
            len(server_ids) if server else 0,
            None,
            (),
            None,
            Progress.NONE,
        )

    def drain() -> None:
        while (event := core.next_event()) is not None:
            if isinstance(event, Persist):
                core.persisted(event.generation)
        core.messages_to_send()

    others = [i for i in range(peers) if ids[i] != me]
    other_servers = [i for i in range(servers) if ids[i] != me]
    for i in others:
        core.receive(Gossip((record(i, 1),), False), Peer(ids[i], 7), 0.1)
        drain()
    messages = []
    for k in range(rounds):
        sender = others[k % len(others)]
        relayed = [others[(k + j) % len(others)] for j in range(1, 4)]
        chosen = [sender, *other_servers[:4], *relayed][:8]
        records = tuple(record(i, k + 2) for i in chosen)
        messages.append((Gossip(records, False), Peer(ids[sender], 7)))
    timings = []
    for _ in ("fresher", "stale"):  # the second pass brings nothing new
        start = time.perf_counter()
        for k, (message, src) in enumerate(messages):
            core.receive(message, src, 1.0 + k * 1e-4)
            drain()
        timings.append((time.perf_counter() - start) / rounds * 1e6)
    return (
        f"receive(Gossip of 8 records) by {'an agent' if role is Role.AGENT else 'a server'}"
        f" holding {peers} peers: "
        f"{timings[0]:.1f} us when every record is fresher, {timings[1]:.1f} us when none is"
    )
