"""Scenario files: faults as data, validated strictly.

A scenario is a YAML file under ``sim/scenarios/`` (see ``docs/SIMULATION.md`` for every
key). Loading collects every error with its file, line and dotted key and raises them
together as one ``ScenarioError``: unknown keys, wrong types, out-of-range numbers,
unknown node names, duplicate keys, and the YAML 1.1 surprises (``yes``/``on`` read as
booleans, ``0123`` read as octal) that a reader would not expect.

Node names are fixed by the ``nodes`` block: servers ``s0, s1, ...`` (the late servers
continue the numbering), agents ``a0, a1, ...``. Selectors accept a name, a list of names,
``servers``, ``agents`` or ``all``; a crash also accepts ``random-server``, ``random-agent``
and ``random-node``: one of the nodes of that kind that are up at the crash, drawn from
the seed.

The entries of ``faults`` are read by their classes in ``sim/faults.py`` (``FAULTS``: the
kind names one class, which reads its own keys with this module's validator).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rancherd.config.yamlvalues import (
    Converter,
    Issues,
    Map,
    Scalar,
    Seq,
    Value,
    compose_yaml,
)
from rancherd.kinds import USER_PRESETS, Preset
from sim.dists import Distribution, Exponential, Fixed, LogNormal, Uniform
from sim.faults import FAULTS, Fault

SCENARIO_DIR = Path(__file__).parent / "scenarios"

RANDOM_SELECTORS = ("random-server", "random-agent", "random-node")


class ScenarioError(ValueError):
    """A scenario file (or an override) is invalid; ``errors`` lists every problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("invalid scenario:\n  " + "\n  ".join(self.errors))


# The model, as the rest of the simulator reads it.


@dataclass(frozen=True, slots=True)
class LateGroup:
    role: str
    count: int
    at: Distribution


@dataclass(frozen=True, slots=True)
class NodesSpec:
    servers: int
    agents: int
    boot: Distribution
    """Boot time of each initial node, drawn independently per node."""
    late: tuple[LateGroup, ...]


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """Overrides for the directed links from every node of ``src`` to every one of ``dst``."""

    src: tuple[str, ...]
    dst: tuple[str, ...]
    latency: Distribution | None
    loss: float | None
    duplicate: float | None


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    latency: Distribution
    """One-way delay of each message; reordering follows from its jitter."""
    loss: float
    duplicate: float
    links: tuple[LinkSpec, ...]


@dataclass(frozen=True, slots=True)
class BurstSpec:
    """Gilbert-Elliott: a good and a bad state per (querier, responder) pair."""

    enter: float
    """Chance per answer of moving from good to bad."""
    leave: float
    """Chance per answer of moving from bad to good."""
    loss_good: float
    loss_bad: float


@dataclass(frozen=True, slots=True)
class DiscoverySpec:
    loss: float
    """Chance that each answer to a query is lost, i.i.d. (ignored when ``burst`` is set)."""
    burst: BurstSpec | None
    blind: tuple[str, ...]
    """Nodes that receive no answer but their own."""
    mute: tuple[str, ...]
    """Nodes whose answers nobody receives."""
    stale: float
    """Seconds a node that went down is still answered for (other hosts' caches)."""
    query_interval: float
    """Seconds between two queries of the gossip provider."""
    window: float
    """Seconds from a query to the provider's result (answers arrive within it)."""
    cache: float | None
    """How long the provider keeps an answer; ``None``: ``server_cache_duration``."""


@dataclass(frozen=True, slots=True)
class ClockSpec:
    offsets: tuple[tuple[str, float], ...]
    """Per node, seconds added to virtual time to make that node's clock."""
    spread: Distribution | None
    """Offset drawn for every node not listed in ``offsets``."""


@dataclass(frozen=True, slots=True)
class ClassicSpec:
    """Knobs of the classic rancherd model (see ``sim/algorithms/classic.py``)."""

    install: Distribution
    """From a node's decision to its port answering as Rancher (not rancherd) again."""
    advertise_after_decision: bool
    """Whether the operator's mDNS advertisement of a server outlives its rancherd."""
    answering: str
    """``init``: only the cluster-init node answers after install; ``servers``: all."""
    mdns_timeout: float
    loop_sleep: float
    http_timeout: float


@dataclass(frozen=True, slots=True)
class GossipSpec:
    preset: str
    """``GossipConfig`` preset the simulated cores start from."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    role: str
    index: int
    """Position in the fleet (fixes its address)."""
    boot: Distribution
    late: bool


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    expected_servers: int
    server_cache_duration: float
    duration: float
    settle: float
    measure_from: float | None
    """Virtual time the decision clock starts at; ``None``: boot of the N-th server."""
    allow_split: bool
    nodes: NodesSpec
    network: NetworkSpec
    discovery: DiscoverySpec
    clock: ClockSpec
    fsync: Distribution
    faults: tuple[Fault, ...]
    classic: ClassicSpec
    gossip: GossipSpec
    source: str = ""
    overrides: tuple[str, ...] = field(default=())

    def node_specs(self) -> list[NodeSpec]:
        return _node_specs(self.nodes)

    @property
    def discovery_cache(self) -> float:
        cache = self.discovery.cache
        return self.server_cache_duration if cache is None else cache


def _node_specs(nodes: NodesSpec) -> list[NodeSpec]:
    specs: list[NodeSpec] = []
    servers = [NodeSpec(f"s{i}", "server", 0, nodes.boot, False) for i in range(nodes.servers)]
    agents = [NodeSpec(f"a{i}", "agent", 0, nodes.boot, False) for i in range(nodes.agents)]
    for group in nodes.late:
        pool = servers if group.role == "server" else agents
        prefix = "s" if group.role == "server" else "a"
        for _ in range(group.count):
            pool.append(NodeSpec(f"{prefix}{len(pool)}", group.role, 0, group.at, True))
    for index, spec in enumerate(servers + agents):
        specs.append(
            NodeSpec(spec.name, spec.role, index, spec.boot, spec.late),
        )
    return specs


# Loading: YAML nodes -> plain data with line numbers -> validated model.

Path_ = tuple[str | int, ...]


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top)"


class _Yaml:
    """Positioned YAML values (``rancherd.config.yamlvalues``, the config's reader: bounded,
    duplicate keys and tags refused) to dicts, lists and scalars with their lines, refusing
    the scalars that would surprise."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path_, int] = {}
        self.errors: list[str] = []

    def load(self, text: str) -> Any:
        """The document as plain data (None when empty); problems go to ``errors``."""
        issues = Issues()
        composed = compose_yaml(text, self.source, issues)
        value = None
        if composed is not None and composed.root is not None:
            converter = Converter(self.source, issues, composed.explicit)
            value = converter.convert(composed.root, "")
        self.errors.extend(str(issue) for issue in issues.items)
        return None if value is None else self.convert(value, ())

    def convert(self, value: Value, path: Path_) -> Any:
        self.lines[path] = value.origin.line
        if isinstance(value, Map):
            out: dict[str, Any] = {}
            for key, entry in value.entries.items():
                out[key] = self.convert(entry.value, (*path, key))
                self.lines[(*path, key)] = entry.key_origin.line
            return out
        if isinstance(value, Seq):
            return [self.convert(item, (*path, i)) for i, item in enumerate(value.items)]
        return self.scalar(value, path)

    def scalar(self, value: Scalar, path: Path_) -> Any:
        text = value.text
        tag = value.tag
        where = f"{self.source}:{value.origin.line}: {_dotted(path)}"
        if tag == "tag:yaml.org,2002:str":
            return text
        if tag == "tag:yaml.org,2002:null":
            return None
        if tag == "tag:yaml.org,2002:bool":
            if text not in ("true", "false"):
                self.errors.append(f"{where}: write true or false, not {text!r} (or quote it)")
                return None
            return text == "true"
        if tag == "tag:yaml.org,2002:int":
            plain = text.lstrip("+-")
            if not plain.isdigit() or (len(plain) > 1 and plain.startswith("0")):
                self.errors.append(f"{where}: {text!r} is not a plain decimal number")
                return None
            return value.value
        if tag == "tag:yaml.org,2002:float":
            try:
                number = float(text)
            except ValueError:
                self.errors.append(f"{where}: {text!r} is not a plain decimal number")
                return None
            if not math.isfinite(number):
                self.errors.append(f"{where}: {text!r} is not a finite number")
                return None
            return number
        self.errors.append(f"{where}: {text!r} is read as {tag.rsplit(':', 1)[-1]}; quote it")
        return None


_MISSING = object()


class _Validator:
    REQUIRED: Any = _MISSING
    """A default that makes the key required (for fault classes, ``sim/faults.py``)."""

    def __init__(self, source: str, lines: Mapping[Path_, int]) -> None:
        self.source = source
        self.lines = lines
        self.errors: list[str] = []
        self.names: dict[str, str] = {}

    def error(self, path: Path_, message: str) -> None:
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe)
        where = f"{self.source}:{line}" if line is not None else self.source
        self.errors.append(f"{where}: {_dotted(path)}: {message}")

    def mapping(self, value: Any, path: Path_, keys: Iterable[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {_kind(value)}")
            return {}
        allowed = set(keys)
        for key in value:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                self.error((*path, key), f"unknown key (expected one of: {hint})")
        return value

    def number(
        self,
        data: Mapping[str, Any],
        key: str,
        path: Path_,
        default: Any,
        *,
        integer: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
        above: float | None = None,
    ) -> Any:
        value = data.get(key, _MISSING)
        if value is _MISSING or (value is None and default is not _MISSING):
            if default is _MISSING:
                self.error((*path, key), "required")
                return 0 if integer else 0.0
            return default
        where = (*path, key)
        wanted = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            self.error(
                where, f"expected {'an integer' if integer else 'a number'}, got {_kind(value)}"
            )
            return default if default is not _MISSING else (0 if integer else 0.0)
        if minimum is not None and value < minimum:
            self.error(where, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.error(where, f"must be <= {maximum}, got {value}")
        if above is not None and value <= above:
            self.error(where, f"must be > {above}, got {value}")
        return value if integer else float(value)

    def probability(self, data: Mapping[str, Any], key: str, path: Path_, default: Any) -> Any:
        return self.number(data, key, path, default, minimum=0.0, maximum=1.0)

    def boolean(self, data: Mapping[str, Any], key: str, path: Path_, default: bool) -> bool:
        value = data.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error((*path, key), f"expected true or false, got {_kind(value)}")
            return default
        return value

    def string(
        self,
        data: Mapping[str, Any],
        key: str,
        path: Path_,
        default: str,
        choices: Sequence[str] | None = None,
    ) -> str:
        value = data.get(key, default)
        if value is None:
            return default
        if not isinstance(value, str):
            self.error((*path, key), f"expected a string, got {_kind(value)}")
            return default
        if choices is not None and value not in choices:
            self.error((*path, key), f"expected one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def distribution(self, data: Mapping[str, Any], key: str, path: Path_, default: Any) -> Any:
        value = data.get(key, _MISSING)
        where = (*path, key)
        if value is _MISSING or value is None:
            if default is _MISSING:
                self.error(where, "required")
                return Fixed(0.0)
            return default
        return self.parse_distribution(value, where)

    def parse_distribution(self, value: Any, where: Path_, *, signed: bool = False) -> Distribution:
        if isinstance(value, bool):
            self.error(where, "expected a number or a distribution, got a boolean")
            return Fixed(0.0)
        if isinstance(value, int | float):
            if value < 0 and not signed:
                self.error(where, f"must be >= 0, got {value}")
            return Fixed(float(value))
        forms = (
            "a number, {uniform: [low, high]}, {lognormal: [median, sigma]}, {exponential: mean}"
        )
        if not isinstance(value, dict) or len(value) != 1:
            self.error(where, f"expected {forms}")
            return Fixed(0.0)
        ((kind, args),) = value.items()
        inner = (*where, kind)
        if kind == "exponential":
            if not _is_number(args) or args <= 0:
                self.error(inner, "expected a mean > 0")
                return Fixed(0.0)
            return Exponential(float(args))
        if kind not in ("uniform", "lognormal"):
            self.error(inner, f"unknown distribution (expected {forms})")
            return Fixed(0.0)
        if not isinstance(args, list) or len(args) != 2 or not all(_is_number(a) for a in args):
            self.error(inner, "expected a list of two numbers")
            return Fixed(0.0)
        first, second = float(args[0]), float(args[1])
        if kind == "uniform":
            if (first < 0 and not signed) or second < first:
                low = "low" if signed else "0 <= low"
                self.error(inner, f"expected {low} <= high, got [{first}, {second}]")
                return Fixed(0.0)
            return Uniform(first, second)
        if first <= 0 or second < 0:
            self.error(inner, f"expected median > 0 and sigma >= 0, got [{first}, {second}]")
            return Fixed(0.0)
        return LogNormal(first, second)

    def selector(
        self, value: Any, where: Path_, *, allow_random: bool = False, single: bool = False
    ) -> tuple[str, ...]:
        items = value if isinstance(value, list) and not single else [value]
        out: list[str] = []
        for item in items:
            if not isinstance(item, str):
                self.error(where, f"expected a node name or selector, got {_kind(item)}")
                continue
            if item in ("servers", "agents", "all") and not single:
                out.extend(
                    name for name, role in self.names.items() if item == "all" or role + "s" == item
                )
            elif (item in RANDOM_SELECTORS and allow_random) or item in self.names:
                out.append(item)
            else:
                known = ", ".join(list(self.names)[:6]) + (", ..." if len(self.names) > 6 else "")
                extra = " or a random-* selector" if allow_random else ""
                self.error(where, f"unknown node {item!r} (nodes are {known}{extra})")
        seen: dict[str, None] = dict.fromkeys(out)
        return tuple(seen)


def _line_of(error: str) -> int:
    """Errors read best in file order; those without a line go last."""
    parts = error.split(":", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 1 << 30


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


TOP_KEYS = (
    "name",
    "description",
    "expected_servers",
    "server_cache_duration",
    "duration",
    "settle",
    "measure_from",
    "allow_split",
    "nodes",
    "network",
    "discovery",
    "clock",
    "disk",
    "faults",
    "classic",
    "gossip",
)
FAULT_KINDS = tuple(FAULTS)
GOSSIP_PRESETS: tuple[str, ...] = (Preset.SIM, *USER_PRESETS)
"""The simulator's own preset first (its default), then the ones a config may choose."""


def _validate(data: Any, source: str, lines: Mapping[Path_, int], name: str) -> Scenario:
    v = _Validator(source, lines)
    top = v.mapping(data, (), TOP_KEYS)
    if not isinstance(data, dict):
        raise ScenarioError(v.errors or [f"{source}: the scenario must be a mapping"])
    nodes = _nodes(v, top)
    expected = v.number(top, "expected_servers", (), 3, integer=True, minimum=1)
    cache = v.number(top, "server_cache_duration", (), 60.0, above=0.0)
    duration = v.number(top, "duration", (), 600.0, above=0.0)
    settle = v.number(top, "settle", (), 60.0, minimum=0.0)
    measure_from = v.number(top, "measure_from", (), None, minimum=0.0)
    if not isinstance(top.get("name", name), str):
        v.error(("name",), "expected a string")
    network = _network(v, top)
    discovery = _discovery(v, top)
    clock = _clock(v, top)
    disk_raw = v.mapping(top.get("disk"), ("disk",), ("fsync",))
    fsync = v.distribution(disk_raw, "fsync", ("disk",), Fixed(0.002))
    faults = _faults(v, top)
    classic = _classic(v, top)
    gossip_raw = v.mapping(top.get("gossip"), ("gossip",), ("preset",))
    gossip = GossipSpec(preset=v.string(gossip_raw, "preset", ("gossip",), "sim", GOSSIP_PRESETS))
    if isinstance(nodes.servers, int) and not v.errors:
        total_servers = nodes.servers + sum(g.count for g in nodes.late if g.role == "server")
        if total_servers < 1:
            v.error(("nodes", "servers"), "a fleet needs at least one server")
    if v.errors:
        raise ScenarioError(sorted(v.errors, key=_line_of))
    description = top.get("description", "")
    return Scenario(
        name=str(top.get("name", name)),
        description=description if isinstance(description, str) else "",
        expected_servers=expected,
        server_cache_duration=cache,
        duration=duration,
        settle=settle,
        measure_from=measure_from,
        allow_split=v.boolean(top, "allow_split", (), False),
        nodes=nodes,
        network=network,
        discovery=discovery,
        clock=clock,
        fsync=fsync,
        faults=faults,
        classic=classic,
        gossip=gossip,
        source=source,
    )


def _list(v: _Validator, value: Any, path: Path_) -> list[Any]:
    """``value`` as a list (nothing is an empty one); anything else is an error."""
    if value is None:
        return []
    if not isinstance(value, list):
        v.error(path, "expected a list")
        return []
    return value


def _nodes(v: _Validator, top: dict[str, Any]) -> NodesSpec:
    nodes_raw = v.mapping(top.get("nodes"), ("nodes",), ("servers", "agents", "boot", "late"))
    servers = v.number(nodes_raw, "servers", ("nodes",), _MISSING, integer=True, minimum=0)
    agents = v.number(nodes_raw, "agents", ("nodes",), 0, integer=True, minimum=0)
    boot = v.distribution(nodes_raw, "boot", ("nodes",), Fixed(0.0))
    late: list[LateGroup] = []
    for i, item in enumerate(_list(v, nodes_raw.get("late", []), ("nodes", "late"))):
        path: Path_ = ("nodes", "late", i)
        group = v.mapping(item, path, ("role", "count", "at"))
        late.append(
            LateGroup(
                role=v.string(group, "role", path, "server", ("server", "agent")),
                count=v.number(group, "count", path, 1, integer=True, minimum=1),
                at=v.distribution(group, "at", path, _MISSING),
            )
        )
    nodes = NodesSpec(servers=servers, agents=agents, boot=boot, late=tuple(late))
    for spec in _node_specs(nodes):
        v.names[spec.name] = spec.role
    return nodes


def _network(v: _Validator, top: dict[str, Any]) -> NetworkSpec:
    net_raw = v.mapping(top.get("network"), ("network",), ("latency", "loss", "duplicate", "links"))
    links: list[LinkSpec] = []
    for i, item in enumerate(_list(v, net_raw.get("links") or [], ("network", "links"))):
        path = ("network", "links", i)
        link = v.mapping(item, path, ("from", "to", "latency", "loss", "duplicate"))
        for key in ("from", "to"):
            if key not in link:
                v.error((*path, key), "required")
        links.append(
            LinkSpec(
                src=v.selector(link.get("from", []), (*path, "from")),
                dst=v.selector(link.get("to", []), (*path, "to")),
                latency=v.distribution(link, "latency", path, None),
                loss=v.probability(link, "loss", path, None),
                duplicate=v.probability(link, "duplicate", path, None),
            )
        )
    return NetworkSpec(
        latency=v.distribution(net_raw, "latency", ("network",), LogNormal(0.0005, 0.5)),
        loss=v.probability(net_raw, "loss", ("network",), 0.0),
        duplicate=v.probability(net_raw, "duplicate", ("network",), 0.0),
        links=tuple(links),
    )


def _discovery(v: _Validator, top: dict[str, Any]) -> DiscoverySpec:
    disc_keys = ("loss", "burst", "blind", "mute", "stale", "query_interval", "window", "cache")
    disc_raw = v.mapping(top.get("discovery"), ("discovery",), disc_keys)
    burst: BurstSpec | None = None
    if disc_raw.get("burst") is not None:
        path = ("discovery", "burst")
        burst_raw = v.mapping(disc_raw["burst"], path, ("enter", "leave", "loss_good", "loss_bad"))
        burst = BurstSpec(
            enter=v.probability(burst_raw, "enter", path, _MISSING),
            leave=v.probability(burst_raw, "leave", path, _MISSING),
            loss_good=v.probability(burst_raw, "loss_good", path, 0.0),
            loss_bad=v.probability(burst_raw, "loss_bad", path, 1.0),
        )
    query_interval = v.number(disc_raw, "query_interval", ("discovery",), 5.0, above=0.0)
    discovery = DiscoverySpec(
        loss=v.probability(disc_raw, "loss", ("discovery",), 0.0),
        burst=burst,
        blind=v.selector(disc_raw.get("blind") or [], ("discovery", "blind")),
        mute=v.selector(disc_raw.get("mute") or [], ("discovery", "mute")),
        stale=v.number(disc_raw, "stale", ("discovery",), 0.0, minimum=0.0),
        query_interval=query_interval,
        window=v.number(disc_raw, "window", ("discovery",), 1.0, above=0.0),
        cache=v.number(disc_raw, "cache", ("discovery",), None, minimum=0.0),
    )
    if discovery.window > query_interval:
        v.error(("discovery", "window"), "must not exceed discovery.query_interval")
    return discovery


def _clock(v: _Validator, top: dict[str, Any]) -> ClockSpec:
    clock_raw = v.mapping(top.get("clock"), ("clock",), ("offsets", "spread"))
    offsets: list[tuple[str, float]] = []
    offsets_raw = v.mapping(clock_raw.get("offsets"), ("clock", "offsets"), v.names)
    for node_name in offsets_raw:
        if node_name in v.names:
            offsets.append((node_name, v.number(offsets_raw, node_name, ("clock", "offsets"), 0.0)))
    spread = None
    if clock_raw.get("spread") is not None:
        spread = v.parse_distribution(clock_raw["spread"], ("clock", "spread"), signed=True)
    return ClockSpec(offsets=tuple(offsets), spread=spread)


def _faults(v: _Validator, top: dict[str, Any]) -> tuple[Fault, ...]:
    faults: list[Fault] = []
    for i, item in enumerate(_list(v, top.get("faults") or [], ("faults",))):
        fault = _fault(v, item, ("faults", i))
        if fault is not None:
            faults.append(fault)
    return tuple(faults)


def _classic(v: _Validator, top: dict[str, Any]) -> ClassicSpec:
    classic_keys = (
        "install",
        "advertise_after_decision",
        "answering",
        "mdns_timeout",
        "loop_sleep",
        "http_timeout",
    )
    classic_raw = v.mapping(top.get("classic"), ("classic",), classic_keys)
    return ClassicSpec(
        install=v.distribution(classic_raw, "install", ("classic",), Fixed(180.0)),
        advertise_after_decision=v.boolean(
            classic_raw, "advertise_after_decision", ("classic",), True
        ),
        answering=v.string(classic_raw, "answering", ("classic",), "init", ("init", "servers")),
        mdns_timeout=v.number(classic_raw, "mdns_timeout", ("classic",), 5.0, above=0.0),
        loop_sleep=v.number(classic_raw, "loop_sleep", ("classic",), 5.0, minimum=0.0),
        http_timeout=v.number(classic_raw, "http_timeout", ("classic",), 10.0, above=0.0),
    )


def _fault(v: _Validator, item: Any, path: Path_) -> Fault | None:
    if not isinstance(item, dict) or len(item) != 1:
        v.error(path, f"expected a one-key mapping naming the fault ({', '.join(FAULT_KINDS)})")
        return None
    ((kind, body),) = item.items()
    cls = FAULTS.get(kind)
    if cls is None:
        v.error(path, f"unknown fault {kind!r} (expected one of: {', '.join(FAULT_KINDS)})")
        return None
    where = (*path, kind)
    return cls.parse(v, v.mapping(body, where, cls.keys), where)


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """``discovery.loss=0.3`` -> (("discovery", "loss"), 0.3); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ScenarioError([f"override {text!r}: expected KEY.PATH=VALUE"])
    loader = _Yaml(f"override {text!r}")
    value = loader.load(raw) if raw.strip() else None
    if loader.errors:
        raise ScenarioError(loader.errors)
    return tuple(key.strip().split(".")), value


def _apply_override(data: dict[str, Any], keys: tuple[str, ...], value: Any, text: str) -> None:
    target: Any = data
    for part in keys[:-1]:
        if isinstance(target, list):
            if not part.isdigit() or int(part) >= len(target):
                raise ScenarioError([f"override {text!r}: no list item {part!r}"])
            target = target[int(part)]
            continue
        if not isinstance(target, dict):
            raise ScenarioError([f"override {text!r}: {part!r} is not inside a mapping"])
        if target.get(part) is None:
            target[part] = {}
        target = target[part]
    last = keys[-1]
    if isinstance(target, list):
        if not last.isdigit() or int(last) >= len(target):
            raise ScenarioError([f"override {text!r}: no list item {last!r}"])
        target[int(last)] = value
    elif isinstance(target, dict):
        target[last] = value
    else:
        raise ScenarioError([f"override {text!r}: {keys[-2]!r} is not a mapping"])


def resolve_path(name_or_path: str) -> Path:
    """A scenario named ``happy-n3`` lives at ``sim/scenarios/happy-n3.yaml``."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    return SCENARIO_DIR / f"{name_or_path}.yaml"


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load_text(text: str, source: str, overrides: Sequence[str] = ()) -> Scenario:
    converter = _Yaml(source)
    data = converter.load(text)
    if data is None:
        data = {}
    if converter.errors:
        raise ScenarioError(converter.errors)
    if not isinstance(data, dict):
        raise ScenarioError([f"{source}:1: the scenario must be a mapping"])
    for text_override in overrides:
        keys, value = parse_override(text_override)
        _apply_override(data, keys, value, text_override)
    stem = Path(source).stem
    scenario = _validate(data, source, converter.lines, stem)
    return replace(scenario, overrides=tuple(overrides))


def load(name_or_path: str, overrides: Sequence[str] = ()) -> Scenario:
    path = resolve_path(name_or_path)
    try:
        text = path.read_text()
    except OSError as exc:
        known = ", ".join(scenario_names())
        raise ScenarioError(
            [f"{name_or_path}: cannot read {path} ({exc.strerror}); built-in scenarios: {known}"]
        ) from None
    source = name_or_path if path.parent == SCENARIO_DIR else str(path)
    if path.parent == SCENARIO_DIR:
        source = f"sim/scenarios/{path.name}"
    return load_text(text, source, overrides)


def command_name(scenario: Scenario) -> str:
    """How a reproduce command names this scenario."""
    prefix = "sim/scenarios/"
    if scenario.source.startswith(prefix):
        return scenario.source[len(prefix) :].removesuffix(".yaml")
    return scenario.source
