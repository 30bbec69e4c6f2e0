"""The simulator's faults: one class each, as data (parsed from a scenario) and as a plan.

A fault class says three things and nothing else: its scenario key (``kind``) and the keys
it takes (``keys``), how to read itself from a scenario (``parse``, with the scenario's
validator), and how to act on a world (``plan``): which of the world's verbs to call,
when. The verbs are methods of ``sim.world.World`` (turmoil's ``partition``, ``repair``,
``hold``, ``release``, ``crash`` and ``bounce`` are the model): they change per-link or
per-node state at once, so a message's fate is a look-up, never a scan of fault windows.
A fault with a start and an end changes state before any other event of the same instant
(``World.during``).

Adding a fault is one class here (``kind``, ``keys``, ``parse``, ``plan``); it registers
itself in ``FAULTS`` by subclassing ``Fault``. It may need a new verb on the world when no
existing verb does what it does.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from sim.dists import Distribution, Fixed

if TYPE_CHECKING:
    from sim.scenario import Path_, _Validator
    from sim.world import World

ELECTION_MESSAGES = ("propose", "ack", "refuse", "release", "commit")
"""The gossip algorithm's election messages (``GossipAlgorithm.message_kind``)."""

BOUNDARIES = ("write", "written", "send")
"""Effect boundaries a ``crash_at`` fault can hit: a disk write has started (the write is
lost), a write is durable but the node has not been told (what waited for it never
leaves), a message has just left (what the node would send after it never does)."""


class Fault:
    """Base of every fault; subclasses register themselves by ``kind``."""

    kind: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            FAULTS[cls.kind] = cls

    @classmethod
    def parse(cls, v: _Validator, raw: dict[str, Any], where: Path_) -> Fault | None:
        raise NotImplementedError

    def plan(self, world: World, rng: random.Random) -> None:
        raise NotImplementedError


FAULTS: dict[str, type[Fault]] = {}


def _window(
    start: Distribution, end: Distribution | None, rng: random.Random
) -> tuple[float, float]:
    at = start.sample(rng)
    return at, math.inf if end is None else max(at, end.sample(rng))


def _required(v: _Validator, raw: dict[str, Any], where: Path_, *keys: str) -> None:
    for key in keys:
        if key not in raw:
            v.error((*where, key), "required")


def _links(
    v: _Validator, raw: dict[str, Any], where: Path_
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The required ``from`` and ``to`` node selectors of a fault on links."""
    _required(v, raw, where, "from", "to")
    src = v.selector(raw.get("from", []), (*where, "from"))
    dst = v.selector(raw.get("to", []), (*where, "to"))
    return src, dst


def _messages(
    v: _Validator, raw: dict[str, Any], where: Path_, allowed: tuple[str, ...]
) -> tuple[str, ...]:
    """The ``messages`` a fault is aimed at (a kind or a list of kinds, all of them when
    absent), each one of ``allowed``."""
    messages = raw.get("messages", list(ELECTION_MESSAGES))
    if isinstance(messages, str):
        messages = [messages]
    if not isinstance(messages, list) or not all(m in allowed for m in messages):
        v.error((*where, "messages"), f"expected a list of {', '.join(ELECTION_MESSAGES)}")
        messages = []
    return tuple(messages)


@dataclass(frozen=True, slots=True)
class Partition(Fault):
    """Nodes of different groups cannot reach each other; nodes in no group reach all."""

    kind: ClassVar[str] = "partition"
    keys: ClassVar[tuple[str, ...]] = ("groups", "start", "end")

    groups: tuple[tuple[str, ...], ...]
    start: Distribution
    end: Distribution | None

    @classmethod
    def parse(cls, v: _Validator, raw: dict[str, Any], where: Path_) -> Fault | None:
        groups_raw = raw.get("groups")
        if not isinstance(groups_raw, list) or len(groups_raw) < 2:
            v.error((*where, "groups"), "expected a list of at least two groups of nodes")
            groups_raw = []
        groups = tuple(
            v.selector(group, (*where, "groups", g)) for g, group in enumerate(groups_raw)
        )
        seen: set[str] = set()
        for g, group in enumerate(groups):
            overlap = seen.intersection(group)
            if overlap:
                v.error((*where, "groups", g), f"nodes in two groups: {', '.join(sorted(overlap))}")
            seen.update(group)
        return cls(
            groups=groups,
            start=v.distribution(raw, "start", where, Fixed(0.0)),
            end=v.distribution(raw, "end", where, None),
        )

    def plan(self, world: World, rng: random.Random) -> None:
        start, end = _window(self.start, self.end, rng)
        world.during("partition", start, end, world.partition, world.repair, self.groups)


@dataclass(frozen=True, slots=True)
class OneWay(Fault):
    """Messages from ``src`` to ``dst`` are dropped; the other direction works."""

    kind: ClassVar[str] = "one_way"
    keys: ClassVar[tuple[str, ...]] = ("from", "to", "start", "end")

    src: tuple[str, ...]
    dst: tuple[str, ...]
    start: Distribution
    end: Distribution | None

    @classmethod
    def parse(cls, v: _Validator, raw: dict[str, Any], where: Path_) -> Fault | None:
        src, dst = _links(v, raw, where)
        return cls(
            src,
            dst,
            v.distribution(raw, "start", where, Fixed(0.0)),
            v.distribution(raw, "end", where, None),
        )

    def plan(self, world: World, rng: random.Random) -> None:
        start, end = _window(self.start, self.end, rng)
        world.during("one-way", start, end, world.cut, world.mend, self.src, self.dst)


@dataclass(frozen=True, slots=True)
class Hold(Fault):
    """Messages from ``src`` to ``dst`` are held, then delivered in order at ``end``."""

    kind: ClassVar[str] = "hold"
    keys: ClassVar[tuple[str, ...]] = ("from", "to", "start", "end")

    src: tuple[str, ...]
    dst: tuple[str, ...]
    start: Distribution
    end: Distribution

    @classmethod
    def parse(cls, v: _Validator, raw: dict[str, Any], where: Path_) -> Fault | None:
        src, dst = _links(v, raw, where)
        return cls(
            src,
            dst,
            v.distribution(raw, "start", where, Fixed(0.0)),
            v.distribution(raw, "end", where, v.REQUIRED),
        )

    def plan(self, world: World, rng: random.Random) -> None:
        start, end = _window(self.start, self.end, rng)
        world.during("hold", start, end, world.hold, world.release, self.src, self.dst, end)


@dataclass(frozen=True, slots=True)
class Crash(Fault):
    kind: ClassVar[str] = "crash"
    keys: ClassVar[tuple[str, ...]] = ("node", "at", "restart_after", "wipe")

    node: str
    """A node name or one of ``RANDOM_SELECTORS`` (drawn among the nodes up at ``at``)."""
    at: Distribution
    restart_after: Distribution | None
    """Delay from crash to restart; ``None``: the node stays down."""
    wipe: bool
    """Restart with an empty data dir (a new node id) instead of the persisted state."""

    @classmethod
    def parse(cls, v: _Validator, raw: dict[str, Any], where: Path_) -> Fault | None:
        _required(v, raw, where, "node")
        node = v.selector(raw.get("node", ""), (*where, "node"), allow_random=True, single=True)
        return cls(
            node=node[0] if node else "",
            at=v.distribution(raw, "at", where, v.REQUIRED),
            restart_after=v.distribution(raw, "restart_after", where, None),
            wipe=v.boolean(raw, "wipe", where, False),
        )

    def plan(self, world: World, rng: random.Random) -> None:
        at = self.at.sample(rng)
        delay = self.restart_after.sample(rng) if self.restart_after else None
        world.at(at, world.bounce, self.node, world.crash_pick(), delay, self.wipe)


# --- Faults aimed at the election (issue 14) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Buggify(Fault):
    """FoundationDB's BUGGIFY for chosen message kinds: each message of those kinds from
    ``src`` to ``dst`` is dropped, duplicated or delayed on its own, with these chances."""

    kind: ClassVar[str] = "buggify"
    keys: ClassVar[tuple[str, ...]] = (
        "messages",
        "from",
        "to",
        "drop",
        "duplicate",
        "delay",
        "delay_chance",
        "start",
        "end",
    )

    messages: tuple[str, ...]
    src: tuple[str, ...]
    dst: tuple[str, ...]
    drop: float
    duplicate: float
    delay: Distribution | None
    """Extra delay of a copy (reordering follows); ``None``: no extra delay."""
    delay_chance: float
    start: Distribution
    end: Distribution | None

    @classmethod
    def parse(cls, v: _Validator, raw: dict[str, Any], where: Path_) -> Fault | None:
        return cls(
            messages=_messages(v, raw, where, (*ELECTION_MESSAGES, "gossip")),
            src=v.selector(raw.get("from", "all"), (*where, "from")),
            dst=v.selector(raw.get("to", "all"), (*where, "to")),
            drop=v.probability(raw, "drop", where, 0.0),
            duplicate=v.probability(raw, "duplicate", where, 0.0),
            delay=v.distribution(raw, "delay", where, None),
            delay_chance=v.probability(raw, "delay_chance", where, 1.0),
            start=v.distribution(raw, "start", where, Fixed(0.0)),
            end=v.distribution(raw, "end", where, None),
        )

    def plan(self, world: World, rng: random.Random) -> None:
        start, end = _window(self.start, self.end, rng)
        world.during("buggify", start, end, world.buggify, world.unbuggify, self)


@dataclass(frozen=True, slots=True)
class CrashAt(Fault):
    """Crash ``node`` the ``after``-th time, from ``start`` on, that it reaches an effect
    boundary (``BOUNDARIES``; for ``send``, a message of one of ``messages``). ``after``
    is drawn per run (rounded up), so a scenario's seeds sweep the boundaries."""

    kind: ClassVar[str] = "crash_at"
    keys: ClassVar[tuple[str, ...]] = (
        "node",
        "boundary",
        "messages",
        "after",
        "start",
        "restart_after",
        "wipe",
    )

    node: str
    on: str
    messages: tuple[str, ...]
    after: Distribution
    start: Distribution
    restart_after: Distribution | None
    wipe: bool

    @classmethod
    def parse(cls, v: _Validator, raw: dict[str, Any], where: Path_) -> Fault | None:
        _required(v, raw, where, "node", "boundary")
        node = v.selector(raw.get("node", ""), (*where, "node"), allow_random=True, single=True)
        return cls(
            node=node[0] if node else "",
            on=v.string(raw, "boundary", where, "send", BOUNDARIES),
            messages=_messages(v, raw, where, ELECTION_MESSAGES),
            after=v.distribution(raw, "after", where, Fixed(1.0)),
            start=v.distribution(raw, "start", where, Fixed(0.0)),
            restart_after=v.distribution(raw, "restart_after", where, None),
            wipe=v.boolean(raw, "wipe", where, False),
        )

    def plan(self, world: World, rng: random.Random) -> None:
        start = self.start.sample(rng)
        delay = self.restart_after.sample(rng) if self.restart_after else None
        after = max(1, math.ceil(self.after.sample(rng)))
        world.at(start, world.arm_crash, self, world.crash_pick(), delay, after)


@dataclass(frozen=True, slots=True)
class Views(Fault):
    """Discovery gives each of ``nodes`` a different subset: itself and ``see - 1`` other
    servers drawn per node, from ``start`` to ``end`` (then everyone again)."""

    kind: ClassVar[str] = "views"
    keys: ClassVar[tuple[str, ...]] = ("nodes", "see", "start", "end")

    nodes: tuple[str, ...]
    see: int
    start: Distribution
    end: Distribution | None

    @classmethod
    def parse(cls, v: _Validator, raw: dict[str, Any], where: Path_) -> Fault | None:
        _required(v, raw, where, "see")
        return cls(
            nodes=v.selector(raw.get("nodes", "servers"), (*where, "nodes")),
            see=v.number(raw, "see", where, 1, integer=True, minimum=1),
            start=v.distribution(raw, "start", where, Fixed(0.0)),
            end=v.distribution(raw, "end", where, None),
        )

    def plan(self, world: World, rng: random.Random) -> None:
        start, end = _window(self.start, self.end, rng)
        servers = [s.name for s in world.slots if s.role == "server"]
        subsets: list[tuple[str, frozenset[str]]] = []
        for name in self.nodes:
            others = [s for s in servers if s != name]
            subsets.append(
                (name, frozenset([name, *rng.sample(others, min(self.see - 1, len(others)))]))
            )
        world.during("views", start, end, world.narrow_views, world.widen_views, tuple(subsets))


@dataclass(frozen=True, slots=True)
class ClockJump(Fault):
    """The clocks of ``nodes`` jump by ``by`` seconds (forward or back) at ``at``."""

    kind: ClassVar[str] = "clock_jump"
    keys: ClassVar[tuple[str, ...]] = ("nodes", "at", "by")

    nodes: tuple[str, ...]
    at: Distribution
    by: Distribution

    @classmethod
    def parse(cls, v: _Validator, raw: dict[str, Any], where: Path_) -> Fault | None:
        _required(v, raw, where, "nodes", "at", "by")
        by = raw.get("by")
        return cls(
            nodes=v.selector(raw.get("nodes", []), (*where, "nodes")),
            at=v.distribution(raw, "at", where, v.REQUIRED),
            by=Fixed(0.0) if by is None else v.parse_distribution(by, (*where, "by"), signed=True),
        )

    def plan(self, world: World, rng: random.Random) -> None:
        at = self.at.sample(rng)
        for name in self.nodes:
            world.at(at, world.jump_clock, name, self.by.sample(rng))


@dataclass(frozen=True, slots=True)
class Clone(Fault):
    """``node`` boots from a copy of ``of``'s data dir (a cloned image): the same node id
    on two machines, which rule 8 of the protocol detects. ``of: lowest-id`` clones the
    server with the smallest node id, the one that proposes. ``apart`` (seconds from the
    start, default 0) keeps the two machines from reaching each other that long, so that
    both propose to the others before either can notice the other."""

    kind: ClassVar[str] = "clone"
    keys: ClassVar[tuple[str, ...]] = ("node", "of", "apart")

    node: str
    of: str
    apart: float = 0.0

    @classmethod
    def parse(cls, v: _Validator, raw: dict[str, Any], where: Path_) -> Fault | None:
        _required(v, raw, where, "node", "of")
        node = v.selector(raw.get("node", ""), (*where, "node"), single=True)
        of: tuple[str, ...] = (LOWEST_ID,)
        if raw.get("of") != LOWEST_ID:
            of = v.selector(raw.get("of", ""), (*where, "of"), single=True)
        if node and of and node == of:
            v.error((*where, "of"), "a node cannot be a clone of itself")
        apart = float(v.number(raw, "apart", where, 0.0, minimum=0))
        return cls(node[0] if node else "", of[0] if of else "", apart)

    def plan(self, world: World, rng: random.Random) -> None:
        of = self.of
        if of == LOWEST_ID:
            others = [s for s in world.slots if s.role == "server" and s.name != self.node]
            of = min(others, key=lambda s: s.node_id).name
        world.clone(self.node, of)
        if self.apart > 0:
            groups = ((self.node,), (of,))
            world.during("clone-apart", 0.0, self.apart, world.partition, world.repair, groups)


LOWEST_ID = "lowest-id"
"""``clone.of``: the server with the smallest node id (the one that proposes first)."""
