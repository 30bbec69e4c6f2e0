"""Tuning of the gossip engine: one dataclass with named defaults, presets, scaling formulas.

Shaped after memberlist's ``config.go`` (``DefaultLANConfig``, ``DefaultLocalConfig``) and
``util.go`` (``retransmitLimit``): every knob has a default with a comment saying why, and
the few formulas that scale with the fleet are small pure functions.

Only ``expected_servers`` and ``server_cache_duration`` come from the user's config
(``expectedServers``, ``serverCacheDuration``); the rest are engineering constants. The node
and the simulator both build theirs with ``GossipConfig.for_fleet(preset, ...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

from rancherd.gossip.codec import MAX_MESSAGE_SIZE, MAX_RECORDS, MAX_RELEASED, MAX_VIEW
from rancherd.kinds import Preset

__all__ = [
    "PRESETS",
    "GossipConfig",
    "backoff_delay",
    "jittered",
    "retransmit_limit",
]


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Every knob of the engine. Times are seconds of the node's own (local) clock."""

    # --- what the user chooses ---------------------------------------------------------
    expected_servers: int = 3
    """N: servers that must agree on one view before anyone proposes."""
    server_cache_duration: float = 60.0
    """A peer whose freshness did not grow for this long is forgotten (and leaves views)."""

    # --- election ----------------------------------------------------------------------
    startup_grace: float = 1.0
    """A server does not start a round before it has run this long, so that its first
    contacts can tell it about a cluster that already exists (matters most for N = 1)."""
    retransmit_interval: float = 0.5
    """A proposer sends ``Propose`` again to members that have not acked after this long;
    also the least time between two re-sent ``Release``s of one vote to one voter."""
    round_timeout: float = 5.0
    """A proposer abandons a round that has not collected every ack after this long: long
    enough for a few retransmits and an fsync on every voter."""
    backoff_max: float = 2.0
    """After abandoning a round, wait a random time in ``[0, backoff_max)`` (seeded)."""
    max_released: int = MAX_RELEASED
    """Abandoned rounds a record lists (newest last); the codec's ``MAX_RELEASED``."""
    released_kept: int = 64
    """Abandoned rounds a proposer remembers (persisted) to release again when a voter
    shows it still holds one. Longer than the record's list, so a voter whose Release and
    gossip were lost for many rounds in a row is still freed, never stuck."""

    # --- gossip ------------------------------------------------------------------------
    gossip_interval: float = 0.2
    """Period of the gossip tick: heartbeat + one Gossip to each of ``fanout`` peers."""
    decided_gossip_interval: float = 1.0
    """The tick once this node knows the decision: a decided node (a beacon, for months)
    only keeps its freshness up and relays the decision, and late joiners learn it from
    the full state a contact gets in reply, not from the tick. Five times less traffic
    and CPU for a fleet at rest; ``server_cache_duration`` stays far above it."""
    gossip_jitter: float = 0.25
    """Each tick lands within ``+-gossip_jitter * gossip_interval`` of its period, so
    machines booted together do not tick in lockstep."""
    fanout: int = 3
    """Peers per tick (memberlist's ``GossipNodes``). Fixed: messages per node and second
    do not grow with the fleet."""
    quiet_fanout: int = 1
    """Peers per tick when it only refreshes (nothing new to spread, only heartbeats): a
    record's freshness must reach every peer within ``server_cache_duration``, which one
    relayed copy a tick does many times over. A fleet at rest, or waiting out a startup
    grace, sends a third of the frames."""
    server_fanout: int = 1
    """Of those, how many a server picks among servers: keeps servers' views converging
    fast when agents outnumber them a hundred to one. Also the servers a server keeps
    among its partners."""
    partners: int = 4
    """Peers a node gossips with (ticks and pushes; see ``partners.py``): twice the fanout,
    so ticks still pick at random, while a node holds about this many connections (plus
    those its peers open to it) whatever the size of the fleet."""
    retransmit_mult: int = 4
    """A changed record is relayed about ``retransmit_mult * ceil(log10(n + 1))`` times
    (memberlist's ``RetransmitMult``; see ``retransmit_limit``)."""
    max_records_per_gossip: int = 16
    """Records in a periodic Gossip: own record plus this many minus one relayed ones."""
    push_on_change_interval: float = 0.2
    """When a server's own record changes (view, vote or decision), its next tick comes
    early, but never sooner than this after the last one: a fleet booting together changes
    views many times a second, and each tick costs ``fanout`` frames. Equal to the gossip
    interval, a change moves the tick's phase, never its rate."""
    push_pull_interval: float = 10.0
    """Period of the full-state exchange with one random peer (memberlist's push-pull), so
    that no node lags behind for long whatever gossip dropped."""
    gathering_push_pull_interval: float = 1.0
    """The full-state exchange's period while a server has no decision yet: two frames a
    second fill in the servers that relayed records missed, within a second or two in a
    fleet of a hundred servers."""
    max_records_per_push_pull: int = 256
    """Records in a full-state Gossip (servers first); the frame size may bind first."""
    max_message_bytes: int = MAX_MESSAGE_SIZE
    """Encoded size a Gossip must fit in; records are sized conservatively against it."""
    contact_interval: float = 2.0
    """A discovered address that has not answered is contacted again after this long."""
    max_contacts_per_round: int = 3
    """New addresses contacted at once; the rest wait a gossip interval. Once gossip has
    named an address's owner, nobody needs to contact it, and the first answer (a full
    state) names every server: contacting every discovered address at once would cost
    two frames each in a fleet where discovery lists a hundred servers."""
    max_relayed_agents: int = 1024
    """An agent stores records of other agents that were only relayed to it while its table
    holds fewer peers than this (servers, and agents that talk to it directly, are always
    stored). Agents need other agents only as gossip targets, so a partial view keeps the
    table, and the work of filling it, bounded in fleets of thousands. Servers hold all."""
    max_tombstones: int = 4096
    """Forgotten peers remembered (oldest dropped first), so a stale copy of a dead
    node's record relayed by a slower peer does not bring it back to life."""

    def __post_init__(self) -> None:
        problems = [
            *_negative_fields(self),
            *_timing_problems(self),
            *_fanout_problems(self),
            *_size_problems(self),
        ]
        if problems:
            raise ValueError("invalid GossipConfig: " + "; ".join(problems))

    @classmethod
    def for_fleet(
        cls,
        preset: Preset | str,
        *,
        expected_servers: int,
        server_cache_duration: float,
        base: GossipConfig | None = None,
    ) -> GossipConfig:
        """The engine's config for one fleet: the preset's timings (or ``base``) with the
        user's two choices. The node and the simulator both build their config here."""
        start = base if base is not None else cls.preset(preset)
        return replace(
            start, expected_servers=expected_servers, server_cache_duration=server_cache_duration
        )

    @classmethod
    def lan(cls) -> GossipConfig:
        """Production on one LAN: sub-second gossip, elections within about a second."""
        return cls()

    @classmethod
    def local(cls) -> GossipConfig:
        """Loopback demos and integration tests: timers several times shorter than ``lan``."""
        return cls(
            startup_grace=0.25,
            retransmit_interval=0.1,
            round_timeout=1.5,
            backoff_max=0.5,
            gossip_interval=0.05,
            decided_gossip_interval=0.25,
            push_on_change_interval=0.05,
            push_pull_interval=2.5,
            gathering_push_pull_interval=0.25,
            contact_interval=0.5,
        )

    @classmethod
    def sim(cls) -> GossipConfig:
        """Thousands of simulated nodes in one process: ten times slower ticks than ``lan``,
        smaller full states, a partial view of 64 relayed agents.

        The cost of a simulation is the records each node takes in per second, which the
        gossip interval sets (every tick is a new version of every server's record). Servers
        still agree within a few round trips (pushes on change are hardly slowed down); what
        gets slower is how fast agents hear of the decision (seconds, not sub-second) and the
        background refresh of agents' records.
        """
        return cls(
            startup_grace=2.0,
            retransmit_interval=1.0,
            round_timeout=10.0,
            backoff_max=3.0,
            gossip_interval=2.0,
            decided_gossip_interval=2.0,
            push_on_change_interval=2.0,
            push_pull_interval=30.0,
            gathering_push_pull_interval=10.0,
            max_records_per_push_pull=48,
            max_relayed_agents=64,
            contact_interval=5.0,
        )

    @classmethod
    def preset(cls, name: Preset | str) -> GossipConfig:
        """The preset called ``name`` (a ``rancherd.kinds.Preset``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown gossip preset {name!r}; one of {', '.join(PRESETS)}")
        return PRESETS[Preset(name)]()


PRESETS: Mapping[Preset, Callable[[], GossipConfig]] = {
    Preset.LAN: GossipConfig.lan,
    Preset.LOCAL: GossipConfig.local,
    Preset.SIM: GossipConfig.sim,
}
"""Each preset's factory, keyed by the one list of names (``rancherd.kinds.Preset``)."""


def _negative_fields(config: GossipConfig) -> list[str]:
    return [
        f"{field.name} must not be negative"
        for field in fields(config)
        if isinstance(getattr(config, field.name), int | float) and getattr(config, field.name) < 0
    ]


def _timing_problems(config: GossipConfig) -> list[str]:
    problems = [
        f"{name} must be positive"
        for name in (
            "server_cache_duration",
            "gossip_interval",
            "decided_gossip_interval",
            "push_pull_interval",
            "gathering_push_pull_interval",
        )
        if getattr(config, name) <= 0
    ]
    if not 0 <= config.gossip_jitter < 1:
        problems.append("gossip_jitter must be in [0, 1)")
    if config.round_timeout <= config.retransmit_interval:
        problems.append("round_timeout must exceed retransmit_interval")
    return problems


def _fanout_problems(config: GossipConfig) -> list[str]:
    problems = []
    if config.fanout < 1 or config.server_fanout > config.fanout:
        problems.append("fanout must be at least 1 and at least server_fanout")
    if not 1 <= config.quiet_fanout <= config.fanout:
        problems.append("quiet_fanout must be in 1..fanout")
    if config.partners < config.fanout:
        problems.append("partners must be at least fanout")
    if config.max_contacts_per_round < 1:
        problems.append("max_contacts_per_round must be at least 1")
    return problems


def _size_problems(config: GossipConfig) -> list[str]:
    problems = []
    if not 1 <= config.expected_servers <= MAX_VIEW:
        problems.append(f"expected_servers must be in 1..{MAX_VIEW} (a view's limit)")
    if not 1 <= config.max_released <= MAX_RELEASED:
        problems.append(f"max_released must be in 1..{MAX_RELEASED}")
    if config.released_kept < config.max_released:
        problems.append("released_kept must be at least max_released")
    if not (2 <= config.max_records_per_gossip <= config.max_records_per_push_pull <= MAX_RECORDS):
        problems.append(
            f"need 2 <= max_records_per_gossip <= max_records_per_push_pull <= {MAX_RECORDS}"
        )
    if not 1024 <= config.max_message_bytes <= MAX_MESSAGE_SIZE:
        problems.append(f"max_message_bytes must be in 1024..{MAX_MESSAGE_SIZE}")
    return problems


def retransmit_limit(retransmit_mult: int, nodes: int) -> int:
    """How many times one version of a record is relayed in a fleet of ``nodes``.

    memberlist's formula (log10): enough transmissions that an epidemic reaches every
    node with high probability, growing only logarithmically with the fleet.
    """
    return max(1, retransmit_mult * math.ceil(math.log10(nodes + 1)))


def jittered(interval: float, jitter: float, uniform: float) -> float:
    """``interval`` moved by up to ``+-jitter * interval``; ``uniform`` is a draw in [0, 1)."""
    return interval * (1.0 + jitter * (2.0 * uniform - 1.0))


def backoff_delay(backoff_max: float, uniform: float) -> float:
    """Wait after an abandoned round; ``uniform`` is a draw in [0, 1)."""
    return backoff_max * uniform
