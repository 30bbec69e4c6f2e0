"""One simulated run: a fleet, its faults, one algorithm, one seed.

The world owns everything that is not the algorithm: virtual time (``EventLoop``), the
network, mDNS, disks, clocks, boots, crashes and restarts, and the invariant checker,
which it consults after every delivered event. ``World(scenario, seed, algorithm).run()``
returns a ``RunResult``; the same arguments always give the same result and trace hash.

Randomness: the scenario's own draws (addresses, clock offsets, boot times, fault times,
which node a ``random-*`` crash hits) come from the ``scenario`` stream; each node
incarnation gets ``node:<name>:<boot>``; the network draws per sender, mDNS per querier,
disks per machine. Node ids are ``sha256(seed:node-id:<name>:<identity>)[:32]``.

Measured (see ``docs/SIMULATION.md``): ``start`` is ``measure_from`` or the boot of the
N-th server to boot; ``all_decided_at`` is the first moment at or after ``start`` when every
node that is up holds a decision (and at least one decision exists);
``time_to_decision = all_decided_at - start``. Messages are the algorithm's unicast
messages (mDNS is counted apart), per node-second of uptime, both up to ``all_decided_at``
(or the end of the run when that never came).
"""

from __future__ import annotations

import contextlib
import math
import random
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from rancherd.addresses import host_of
from sim.algorithms import ALGORITHMS, AlgorithmOptions
from sim.algorithms.base import Algorithm, Process
from sim.discovery import MdnsModel
from sim.faults import Buggify, CrashAt
from sim.fingerprint import Fingerprinter
from sim.invariants import InvariantChecker
from sim.loop import EventLoop, StopSimulation, TraceRecord
from sim.network import Network
from sim.rng import derive_hex, derive_rng
from sim.scenario import NodeSpec, Scenario, command_name

BASE_EPOCH = 1_700_000_000.0
"""Virtual time 0 on an unskewed node's clock (an epoch-like reading, as on a real host)."""

MAX_TIMERS_AT_ONE_INSTANT = 10_000
"""A node whose timer keeps firing without time moving is a busy loop: stop the run."""


class Audit(Protocol):
    """An algorithm's own checks of what the world sees (``sim/audit.py``)."""

    def sent(self, node_id: str, disk: object, payload: object, now: float) -> None: ...

    def delivered(self, node_id: str, payload: object) -> None: ...

    def written(self, node_id: str, old: object, new: object, now: float) -> None: ...


@dataclass(slots=True)
class _Armed:
    """A ``crash_at`` fault waiting on one node (``World.arm_crash``)."""

    fault: CrashAt
    left: int
    """Boundaries still to reach; the node crashes at the one that brings it to 0."""
    restart_after: float | None


class SimulationError(RuntimeError):
    """The algorithm under test misbehaved in a way that is not a safety violation."""


def reproduce_command(scenario: Scenario, seed: int, algorithm: str) -> str:
    parts = ["python", "-m", "sim", "run", command_name(scenario), "--seed", str(seed)]
    parts += ["--algorithm", algorithm]
    for override in scenario.overrides:
        parts += ["--set", override]
    return shlex.join(parts)


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    name: str
    role: str
    node_id: str
    up: bool
    decision: str | None
    decided_role: str | None
    decided_at: float | None
    first_boot: float | None


@dataclass(frozen=True, slots=True)
class RunResult:
    scenario: str
    algorithm: str
    seed: int
    decided: bool
    """Every live node held a decision at some moment at or after ``start``."""
    start: float
    all_decided_at: float | None
    first_decision_at: float | None
    time_to_decision: float | None
    end_time: float
    messages: int
    messages_per_node_second: float
    mdns_queries: int
    clusters: int
    init_identities: int
    violations: tuple[str, ...]
    tolerated: tuple[str, ...]
    late_join_max: float | None
    """Longest boot-to-decision of a node that first booted after ``all_decided_at``."""
    late_undecided: int
    notes: tuple[tuple[str, int], ...]
    trace_hash: str
    events: int
    reproduce: str
    nodes: tuple[NodeOutcome, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.violations


class Slot:
    """One machine: its address and clock stay; its process and identity come and go."""

    __slots__ = (
        "advertised",
        "boots",
        "decided_at",
        "decided_role",
        "decision",
        "disk",
        "disk_busy_until",
        "down_since",
        "epoch",
        "identity",
        "identity_first_boot",
        "index",
        "ip",
        "name",
        "node_id",
        "offset",
        "process",
        "role",
        "same_instant",
        "timer_deadline",
        "timer_due",
        "timer_scheduled",
        "up",
        "up_since",
        "uptime",
    )

    def __init__(self, spec: NodeSpec, ip: str, offset: float, node_id: str) -> None:
        self.name = spec.name
        self.role = spec.role
        self.index = spec.index
        self.ip = ip
        self.offset = offset
        self.up = False
        self.epoch = 0
        self.boots = 0
        self.identity = 0
        self.node_id = node_id
        self.identity_first_boot: float | None = None
        self.disk: object | None = None
        self.disk_busy_until = 0.0
        self.process: Process | None = None
        self.timer_deadline: float | None = None
        """The node-clock time of ``timer_due`` (kept across a clock jump)."""
        self.timer_due: float | None = None
        self.timer_scheduled: float | None = None
        self.same_instant = (0.0, 0)
        self.advertised: str | None = None
        self.down_since: float | None = None
        self.up_since = 0.0
        self.uptime: list[tuple[float, float]] = []
        self.decision: str | None = None
        self.decided_role: str | None = None
        self.decided_at: float | None = None


class NodeHost:
    """The ``Host`` one node incarnation sees (``sim.algorithms.base.Host``)."""

    __slots__ = ("_epoch", "_rng", "_slot", "_world")

    def __init__(self, world: World, slot: Slot) -> None:
        self._world = world
        self._slot = slot
        self._epoch = slot.epoch
        self._rng = derive_rng(world.seed, "node", slot.name, slot.boots)

    @property
    def name(self) -> str:
        return self._slot.name

    @property
    def role(self) -> str:
        return self._slot.role

    @property
    def node_id(self) -> str:
        return self._slot.node_id

    @property
    def ip(self) -> str:
        return self._slot.ip

    @property
    def rng(self) -> random.Random:
        return self._rng

    @property
    def expected_servers(self) -> int:
        return self._world.scenario.expected_servers

    @property
    def server_cache_duration(self) -> float:
        return self._world.scenario.server_cache_duration

    def _live(self) -> bool:
        return self._slot.up and self._slot.epoch == self._epoch

    def now(self) -> float:
        return (BASE_EPOCH + self._slot.offset) + self._world.loop.now

    def disk(self) -> object | None:
        return self._slot.disk

    def write_disk(self, state: object) -> None:
        if self._live():
            self._world.write_disk(self._slot, state)

    def send(self, target: str, payload: object, *, within: float | None = None) -> None:
        if self._live():
            self._world.send(self._slot, target, payload, within)

    def machine_at(self, address: str) -> str | None:
        return self._world.machine_at(address)

    def machine_with_id(self, node_id: str) -> str | None:
        return self._world.machine_with_id(node_id)

    def set_timer(self, deadline: float | None) -> None:
        if self._live():
            self._world.set_timer(self._slot, deadline)

    def query_discovery(self, window: float) -> None:
        if self._live():
            self._world.query_discovery(self._slot, window)

    def advertise(self, address: str | None) -> None:
        if self._live():
            self._world.advertise(self._slot, address)

    def decide(self, cluster_id: str, role: str) -> None:
        if self._live():
            self._world.decide(self._slot, cluster_id, role)

    def note(self, kind: str) -> None:
        self._world.notes[kind] = self._world.notes.get(kind, 0) + 1


def _ip_for(k: int) -> str:
    # Last octets 10..209: string order differs from numeric order ("10.0.0.100" sorts
    # before "10.0.0.11"), as on real networks the classic algorithm sorts.
    return f"10.0.{k // 200}.{k % 200 + 10}"


class World:
    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        algorithm: str,
        *,
        trace: Callable[[TraceRecord], None] | None = None,
        codec: bool = False,
        implementation: Algorithm | None = None,
        audit: bool = True,
    ) -> None:
        """``implementation`` runs an algorithm object not in the registry (tests);
        ``audit=False`` leaves out the algorithm's own checks (``sim/audit.py``), so that
        only the decision invariants judge the run."""
        if implementation is None and algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}")
        self.scenario = scenario
        self.seed = seed
        self.algorithm_name = algorithm
        self.loop = EventLoop()
        self.loop.after_event = self._after_event
        self.loop.record_to(trace)
        self.network = Network(scenario.network, seed)
        self.mdns = MdnsModel(scenario.discovery, seed)
        self.checker = InvariantChecker(scenario.allow_split)
        self.algorithm = implementation or ALGORITHMS[algorithm](
            scenario, AlgorithmOptions(codec=codec)
        )
        self.notes: dict[str, int] = {}
        self.fingerprints = Fingerprinter()
        self.messages = 0
        self.mdns_queries = 0
        self.messages_at_decision: int | None = None
        self.all_decided_at: float | None = None
        self.scenario_pending = 0
        self._undecided_up: set[str] = set()
        self._stopping = False
        self._advertisers: dict[int, Slot] = {}
        self._advertiser_order: list[Slot] | None = []
        self._disk_rngs: dict[str, random.Random] = {}
        self._crash_picks: list[random.Random] = []
        self._buggify: dict[str, list[Buggify]] = {}
        self._armed: dict[str, list[_Armed]] = {}
        self._views: dict[str, frozenset[str]] = {}
        self._buggify_rngs: dict[str, random.Random] = {}
        self._kind_of: Callable[[object], str | None] | None = getattr(
            self.algorithm, "message_kind", None
        )
        audit_factory = getattr(self.algorithm, "new_audit", None) if audit else None
        self.audit: Audit | None = (
            audit_factory(self.checker, scenario) if audit_factory is not None else None
        )

        rng = derive_rng(seed, "scenario")
        specs = scenario.node_specs()
        places = list(range(len(specs)))
        rng.shuffle(places)
        offsets = dict(scenario.clock.offsets)
        self.slots: list[Slot] = []
        for spec in specs:
            offset = offsets.get(spec.name)
            if offset is None:
                spread = scenario.clock.spread
                offset = spread.sample(rng) if spread is not None else 0.0
            node_id = derive_hex(seed, "node-id", spec.name, 0)
            self.slots.append(Slot(spec, _ip_for(places[spec.index]), offset, node_id))
        self.by_name = {slot.name: slot for slot in self.slots}
        self.by_ip = {slot.ip: slot for slot in self.slots}
        self.by_node_id = {slot.node_id: slot for slot in self.slots}

        server_boots: list[float] = []
        for slot, spec in zip(self.slots, specs, strict=True):
            at = spec.boot.sample(rng)
            if slot.role == "server":
                server_boots.append(at)
            self._schedule(at, self._boot, slot)
        server_boots.sort()
        if scenario.measure_from is not None:
            self.start = scenario.measure_from
        else:
            n = min(scenario.expected_servers, len(server_boots))
            self.start = server_boots[n - 1]
        for fault in scenario.faults:
            fault.plan(self, rng)

    # Scheduling scenario events (the run cannot settle while any is pending).

    def _schedule(
        self, at: float, handler: Callable[..., TraceRecord | None], *args: object
    ) -> None:
        self.scenario_pending += 1
        self.loop.call_at(at, self._scenario_event, handler, args)

    def _scenario_event(
        self, handler: Callable[..., TraceRecord | None], args: tuple[object, ...]
    ) -> TraceRecord | None:
        self.scenario_pending -= 1
        return handler(*args)

    def at(self, when: float, verb: Callable[..., TraceRecord | None], *args: object) -> None:
        """Call ``verb(*args)`` at ``when`` as a scenario event (traced, keeps the run on)."""
        self._schedule(when, verb, *args)

    def during(
        self,
        label: str,
        start: float,
        end: float,
        on: Callable[..., None],
        off: Callable[..., None],
        *args: object,
    ) -> None:
        """``on(*args)`` at ``start`` and ``off(*args)`` at ``end`` (``inf``: never), each
        before any other event of its instant, and a trace mark for each."""
        self.loop.call_first_at(start, on, *args)
        self._schedule(start, self._mark, f"{label}-start")
        if end != math.inf:
            self.loop.call_first_at(end, off, *args)
            self._schedule(end, self._mark, f"{label}-end")

    def crash_pick(self) -> random.Random:
        """The generator of the next crash fault's ``random-*`` choice (``crash:<i>``)."""
        pick = derive_rng(self.seed, "crash", len(self._crash_picks))
        self._crash_picks.append(pick)
        return pick

    # The verbs faults use (``sim/faults.py``). Links:

    def partition(self, groups: tuple[tuple[str, ...], ...]) -> None:
        """Nodes of different groups stop reaching each other."""
        for a, b in _across(groups):
            self.network.cut(a, b)

    def repair(self, groups: tuple[tuple[str, ...], ...]) -> None:
        for a, b in _across(groups):
            self.network.mend(a, b)

    def cut(self, src: tuple[str, ...], dst: tuple[str, ...]) -> None:
        """Messages from ``src`` to ``dst`` are dropped (one way)."""
        for a in src:
            for b in dst:
                self.network.cut(a, b)

    def mend(self, src: tuple[str, ...], dst: tuple[str, ...]) -> None:
        for a in src:
            for b in dst:
                self.network.mend(a, b)

    def hold(self, src: tuple[str, ...], dst: tuple[str, ...], until: float) -> None:
        """What arrives from ``src`` at ``dst`` waits until ``until``."""
        for a in src:
            for b in dst:
                self.network.hold(a, b, until)

    def release(self, src: tuple[str, ...], dst: tuple[str, ...], until: float) -> None:
        for a in src:
            for b in dst:
                self.network.release(a, b, until)

    def buggify(self, rule: Buggify) -> None:
        """Messages of ``rule.messages`` are dropped, duplicated or delayed on their own."""
        for kind in rule.messages:
            self._buggify.setdefault(kind, []).append(rule)

    def unbuggify(self, rule: Buggify) -> None:
        for kind in rule.messages:
            rules = self._buggify.get(kind, [])
            if rule in rules:
                rules.remove(rule)
            if not rules:
                self._buggify.pop(kind, None)

    # Nodes:

    def bounce(
        self, selector: str, pick: random.Random, restart_after: float | None, wipe: bool
    ) -> TraceRecord:
        """Crash a named machine, or a random one of those up now (``random-*``), and
        restart it ``restart_after`` seconds later (``None``: it stays down)."""
        slot = self._select(selector, pick)
        if slot is None:
            return ("crash-missed", selector)
        return self.crash(slot, restart_after, wipe)

    def _select(self, selector: str, pick: random.Random) -> Slot | None:
        if selector.startswith("random-"):
            role = selector.removeprefix("random-")
            pool = [s for s in self.slots if s.up and (role == "node" or s.role == role)]
            return pick.choice(pool) if pool else None
        return self.by_name[selector]

    def arm_crash(
        self, fault: CrashAt, pick: random.Random, restart_after: float | None, after: int
    ) -> TraceRecord:
        """From now on, crash the node the ``after``-th time it reaches the boundary."""
        slot = self._select(fault.node, pick)
        if slot is None:
            return ("crash-missed", fault.node)
        self._armed.setdefault(slot.name, []).append(_Armed(fault, after, restart_after))
        return ("armed", slot.name, fault.on)

    def _boundary(self, slot: Slot, point: str, kind: str | None = None) -> bool:
        """``slot`` reached an effect boundary: crash it now if a ``crash_at`` waits for it
        (and say so)."""
        armed = self._armed.get(slot.name)
        if not armed or not slot.up:
            return False
        for entry in armed:
            fault = entry.fault
            if fault.on != point or (kind is not None and kind not in fault.messages):
                continue
            entry.left -= 1
            if entry.left <= 0:
                armed.remove(entry)
                self.notes[f"crash-at-{point}"] = self.notes.get(f"crash-at-{point}", 0) + 1
                self.crash(slot, entry.restart_after, fault.wipe)
                return True
            return False
        return False

    def narrow_views(self, subsets: tuple[tuple[str, frozenset[str]], ...]) -> None:
        """Discovery answers each named node only from its subset."""
        for name, visible in subsets:
            self._views[name] = visible

    def widen_views(self, subsets: tuple[tuple[str, frozenset[str]], ...]) -> None:
        for name, _ in subsets:
            self._views.pop(name, None)

    def jump_clock(self, name: str, by: float) -> TraceRecord:
        """``name``'s clock jumps by ``by`` seconds; its timer keeps its clock deadline."""
        slot = self.by_name[name]
        slot.offset += by
        if slot.up and slot.timer_deadline is not None and slot.timer_due is not None:
            self.set_timer(slot, slot.timer_deadline)
        return ("clock-jump", name, by)

    def clone(self, name: str, of: str) -> None:
        """``name`` boots with ``of``'s data dir: the same node id on two machines."""
        slot = self.by_name[name]
        original = self.by_name[of]
        # Messages to that id go by address from now on, as the real transport's do.
        self.by_node_id.pop(slot.node_id, None)
        self.by_node_id.pop(original.node_id, None)
        slot.node_id = original.node_id

    def _mark(self, label: str) -> TraceRecord:
        return ("fault", label)

    # Lifecycle.

    def _boot(self, slot: Slot) -> TraceRecord | None:
        if slot.up:
            return None
        now = self.loop.now
        slot.up = True
        slot.epoch += 1
        slot.boots += 1
        slot.up_since = now
        slot.down_since = None
        slot.same_instant = (now, 0)
        if slot.identity_first_boot is None:
            slot.identity_first_boot = now
        if slot.decision is None:
            self._undecided_up.add(slot.name)
        process = self.algorithm.new_process(NodeHost(self, slot))
        slot.process = process
        process.on_boot()
        return ("boot", slot.name, slot.node_id, slot.boots)

    def crash(self, slot: Slot, restart_after: float | None, wipe: bool) -> TraceRecord:
        if not slot.up:
            return ("crash-missed", slot.name)
        now = self.loop.now
        slot.up = False
        slot.process = None
        slot.down_since = now
        slot.timer_due = None
        slot.timer_scheduled = None
        slot.disk_busy_until = now  # writes in flight are lost, not waited for
        slot.uptime.append((slot.up_since, now))
        self._undecided_up.discard(slot.name)
        if restart_after is not None:
            self._schedule(now + restart_after, self._restart, slot, wipe)
        return ("crash", slot.name)

    def _restart(self, slot: Slot, wipe: bool) -> TraceRecord | None:
        if wipe:
            self.by_node_id.pop(slot.node_id, None)
            slot.identity += 1
            slot.node_id = derive_hex(self.seed, "node-id", slot.name, slot.identity)
            self.by_node_id[slot.node_id] = slot
            slot.identity_first_boot = None
            slot.disk = None
            slot.decision = None
            slot.decided_role = None
            slot.decided_at = None
            slot.advertised = None
            self._advertisers.pop(slot.index, None)
            self._advertiser_order = None
        return self._boot(slot)

    # Services for hosts.

    def machine_at(self, address: str) -> str | None:
        slot = self.by_ip.get(host_of(address))
        return None if slot is None else slot.name

    def machine_with_id(self, node_id: str) -> str | None:
        slot = self.by_node_id.get(node_id)
        return None if slot is None else slot.name

    def send(self, slot: Slot, target: str, payload: object, within: float | None) -> None:
        dst = self.by_name.get(target)
        if dst is None:
            return
        self.messages += 1
        kind = None
        if self._kind_of is not None and (self._buggify or self._armed):
            kind = self._kind_of(payload)
        if self.audit is not None:
            self.audit.sent(slot.node_id, slot.disk, payload, self.loop.now)
        if dst.up:
            self._transmit(slot, dst, payload, within, kind)
        if kind is not None and slot.name in self._armed:
            self._boundary(slot, "send", kind)

    def _transmit(
        self, slot: Slot, dst: Slot, payload: object, within: float | None, kind: str | None
    ) -> None:
        now = self.loop.now
        fingerprint = self.fingerprints.of(payload)
        if within is None:
            delays = self.network.transit(slot.name, dst.name)
        else:
            delay = self.network.reliable_transit(slot.name, dst.name, within)
            delays = [] if delay is None else [delay]
        rules = self._buggify.get(kind) if kind is not None else None
        if rules:
            delays = self._buggified(slot.name, dst.name, rules, delays)
        for delay in delays:
            self.loop.call_at(
                now + delay, self._deliver, dst, dst.epoch, slot.name, payload, fingerprint
            )

    def _buggified(
        self, src: str, dst: str, rules: list[Buggify], delays: list[float]
    ) -> list[float]:
        """Each rule that covers the link may drop, copy or delay this message's copies."""
        rng = self._buggify_rngs.get(src)
        if rng is None:
            rng = self._buggify_rngs[src] = derive_rng(self.seed, "buggify", src)
        for rule in rules:
            if not delays or src not in rule.src or dst not in rule.dst:
                continue
            if rule.drop and rng.random() < rule.drop:
                self.notes["buggify-drop"] = self.notes.get("buggify-drop", 0) + 1
                return []
            if rule.duplicate and rng.random() < rule.duplicate:
                delays = [*delays, delays[0]]
            if rule.delay is not None:
                delays = [
                    d + rule.delay.sample(rng) if rng.random() < rule.delay_chance else d
                    for d in delays
                ]
        return delays

    def _deliver(
        self, dst: Slot, epoch: int, src: str, payload: object, fingerprint: str
    ) -> TraceRecord | None:
        if dst.epoch != epoch or not dst.up or dst.process is None:
            return None
        if self.network.blocked(src, dst.name):
            return None
        held_until = self.network.held_until(src, dst.name)
        if held_until is not None:
            self.loop.call_at(held_until, self._deliver, dst, epoch, src, payload, fingerprint)
            return None
        if self.audit is not None:
            self.audit.delivered(dst.node_id, payload)
        dst.process.on_message(src, payload)
        return ("msg", dst.name, src, fingerprint)

    def set_timer(self, slot: Slot, deadline: float | None) -> None:
        slot.timer_deadline = deadline
        if deadline is None:
            slot.timer_due = None
            return
        base = BASE_EPOCH + slot.offset
        at = deadline - base
        # The node must read at least its own deadline when the timer fires.
        while at + base < deadline:
            at = math.nextafter(at, math.inf)
        at = max(at, self.loop.now)
        slot.timer_due = at
        if slot.timer_scheduled is None or at < slot.timer_scheduled:
            slot.timer_scheduled = at
            self.loop.call_at(at, self._timer, slot, slot.epoch, at)

    def _timer(self, slot: Slot, epoch: int, at: float) -> TraceRecord | None:
        if slot.epoch != epoch or not slot.up or slot.timer_scheduled != at:
            return None
        slot.timer_scheduled = None
        due = slot.timer_due
        if due is None:
            return None
        if due > at:
            slot.timer_scheduled = due
            self.loop.call_at(due, self._timer, slot, epoch, due)
            return None
        slot.timer_due = None
        when, count = slot.same_instant
        count = count + 1 if when == at else 1
        slot.same_instant = (at, count)
        if count > MAX_TIMERS_AT_ONE_INSTANT:
            raise SimulationError(f"{slot.name}: timer fired {count} times at t={at!r}")
        assert slot.process is not None
        slot.process.on_timer()
        return ("timer", slot.name)

    def advertise(self, slot: Slot, address: str | None) -> None:
        slot.advertised = address
        if address is None:
            self._advertisers.pop(slot.index, None)
        else:
            self._advertisers[slot.index] = slot
        self._advertiser_order = None

    def query_discovery(self, slot: Slot, window: float) -> None:
        self.mdns_queries += 1
        now = self.loop.now
        order = self._advertiser_order
        if order is None:
            order = self._advertiser_order = [
                self._advertisers[i] for i in sorted(self._advertisers)
            ]
        stale = self.scenario.discovery.stale
        visible = self._views.get(slot.name)
        answers: list[str] = []
        for responder in order:
            if responder.advertised is None:
                continue
            if not responder.up and (
                responder.down_since is None or now - responder.down_since >= stale
            ):
                continue
            if self.network.blocked(slot.name, responder.name) or self.network.blocked(
                responder.name, slot.name
            ):
                continue
            if visible is not None and responder.name not in visible:
                continue
            if self.mdns.lost(slot.name, responder.name):
                continue
            answers.append(responder.advertised)
        self.loop.call_at(now + window, self._discovered, slot, slot.epoch, tuple(answers))

    def _discovered(self, slot: Slot, epoch: int, addresses: tuple[str, ...]) -> TraceRecord | None:
        if slot.epoch != epoch or not slot.up or slot.process is None:
            return None
        slot.process.on_discovery(addresses)
        return ("mdns", slot.name, addresses)

    def write_disk(self, slot: Slot, state: object) -> None:
        rng = self._disk_rngs.get(slot.name)
        if rng is None:
            rng = self._disk_rngs[slot.name] = derive_rng(self.seed, "disk", slot.name)
        done = max(self.loop.now, slot.disk_busy_until) + self.scenario.fsync.sample(rng)
        slot.disk_busy_until = done
        self.loop.call_at(done, self._disk_done, slot, slot.epoch, state)
        if slot.name in self._armed:
            self._boundary(slot, "write")

    def _disk_done(self, slot: Slot, epoch: int, state: object) -> TraceRecord | None:
        if slot.epoch != epoch or not slot.up or slot.process is None:
            return None  # the machine crashed before the fsync returned: the write is lost
        if self.audit is not None:
            self.audit.written(slot.node_id, slot.disk, state, self.loop.now)
        slot.disk = state
        if slot.name in self._armed and self._boundary(slot, "written"):
            return ("disk", slot.name)  # crashed before it could act on the write
        slot.process.on_disk_written(state)
        return ("disk", slot.name)

    def decide(self, slot: Slot, cluster_id: str, role: str) -> None:
        now = self.loop.now
        first_boot = slot.identity_first_boot if slot.identity_first_boot is not None else now
        identity = f"{slot.name}/{slot.node_id[:8]}"
        self.checker.decided(identity, first_boot, cluster_id, role, now)
        if slot.decision is None:
            slot.decision = cluster_id
            slot.decided_role = role
            slot.decided_at = now
            self._undecided_up.discard(slot.name)

    # After every delivered event.

    def _after_event(self) -> None:
        if self.checker.violations:
            raise StopSimulation
        if self._undecided_up or self.checker.first_decision is None:
            return
        now = self.loop.now
        if self.all_decided_at is None and now >= self.start:
            self.all_decided_at = now
            self.messages_at_decision = self.messages
        if self.all_decided_at is not None and not self.scenario_pending and not self._stopping:
            self._stopping = True
            self.loop.stop_at = now + self.scenario.settle

    # Running.

    def run(self) -> RunResult:
        with contextlib.suppress(StopSimulation):
            self.loop.run(until=self.scenario.duration)
        return self._result()

    def _node_seconds(self, until: float) -> float:
        total = 0.0
        for slot in self.slots:
            spans = list(slot.uptime)
            if slot.up:
                spans.append((slot.up_since, until))
            for start, end in spans:
                total += max(0.0, min(end, until) - min(start, until))
        return total

    def _result(self) -> RunResult:
        end = self.loop.now
        decided_at = self.all_decided_at
        window_end = decided_at if decided_at is not None else end
        messages = self.messages
        if decided_at is not None and self.messages_at_decision is not None:
            messages = self.messages_at_decision
        node_seconds = self._node_seconds(window_end)
        late: list[float] = []
        late_undecided = 0
        if decided_at is not None:
            for slot in self.slots:
                boot = slot.identity_first_boot
                if boot is None or boot <= decided_at:
                    continue
                if slot.decided_at is None:
                    late_undecided += slot.up
                else:
                    late.append(slot.decided_at - boot)
        nodes = tuple(
            NodeOutcome(
                s.name,
                s.role,
                s.node_id,
                s.up,
                s.decision,
                s.decided_role,
                s.decided_at,
                s.identity_first_boot,
            )
            for s in self.slots
        )
        return RunResult(
            scenario=self.scenario.name,
            algorithm=self.algorithm_name,
            seed=self.seed,
            decided=decided_at is not None,
            start=self.start,
            all_decided_at=decided_at,
            first_decision_at=self.checker.first_decision,
            time_to_decision=None if decided_at is None else max(0.0, decided_at - self.start),
            end_time=end,
            messages=messages,
            messages_per_node_second=messages / node_seconds if node_seconds > 0 else 0.0,
            mdns_queries=self.mdns_queries,
            clusters=self.checker.clusters,
            init_identities=self.checker.init_identities,
            violations=tuple(
                f"{f.kind} at {f.time:.3f}s: {f.text}" for f in self.checker.violations
            ),
            tolerated=tuple(f"{f.kind} at {f.time:.3f}s: {f.text}" for f in self.checker.tolerated),
            late_join_max=max(late) if late else None,
            late_undecided=late_undecided,
            notes=tuple(sorted(self.notes.items())),
            trace_hash=self.loop.trace_hash,
            events=self.loop.delivered,
            reproduce=reproduce_command(self.scenario, self.seed, self.algorithm_name),
            nodes=nodes,
        )


def run_seed(
    scenario: Scenario,
    seed: int,
    algorithm: str,
    *,
    trace: Callable[[TraceRecord], None] | None = None,
    codec: bool = False,
    audit: bool = True,
) -> RunResult:
    return World(scenario, seed, algorithm, trace=trace, codec=codec, audit=audit).run()


def _across(groups: tuple[tuple[str, ...], ...]) -> list[tuple[str, str]]:
    """Every directed link between nodes of two different groups."""
    return [
        (a, b)
        for g, group in enumerate(groups)
        for h, other in enumerate(groups)
        if g != h
        for a in group
        for b in other
    ]
