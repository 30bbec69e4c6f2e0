"""The network between nodes: latency, loss, duplication, partitions and held links.

Messages are datagrams with their own delay each, so reordering falls out of latency
jitter. ``transit`` gives the delays of the copies that arrive (none when lost, two when
duplicated). ``reliable_transit`` models a TCP exchange (the classic algorithm's HTTP): a
lost segment is sent again after a retransmission timeout that doubles, until a deadline.
Partitions are checked when a message leaves and again when it arrives, so a cut that
starts while a message is in flight drops it. A held link keeps what arrives on it and
hands it over, in arrival order, when the hold ends.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from sim.dists import Distribution
from sim.rng import derive_rng
from sim.scenario import NetworkSpec

INITIAL_RTO = 0.2
"""Seconds before a lost TCP segment is sent again (Linux's minimum RTO), doubling."""


@dataclass(frozen=True, slots=True)
class LinkParams:
    latency: Distribution
    loss: float
    duplicate: float


@dataclass(frozen=True, slots=True)
class Cut:
    """Messages from a node of ``src`` to a node of ``dst`` are blocked in [start, end)."""

    src: frozenset[str]
    dst: frozenset[str]
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class GroupCut:
    groups: dict[str, int]
    start: float
    end: float


class Network:
    def __init__(self, spec: NetworkSpec, seed: int) -> None:
        self._default = LinkParams(spec.latency, spec.loss, spec.duplicate)
        self._links: dict[tuple[str, str], LinkParams] = {}
        for link in spec.links:
            for src in link.src:
                for dst in link.dst:
                    base = self._links.get((src, dst), self._default)
                    self._links[(src, dst)] = LinkParams(
                        link.latency if link.latency is not None else base.latency,
                        link.loss if link.loss is not None else base.loss,
                        link.duplicate if link.duplicate is not None else base.duplicate,
                    )
        self._seed = seed
        self._rngs: dict[str, random.Random] = {}
        self._cuts: list[Cut] = []
        self._group_cuts: list[GroupCut] = []
        self._holds: list[Cut] = []

    def rng(self, src: str) -> random.Random:
        """The sender's stream: one node's traffic never shifts another node's draws."""
        rng = self._rngs.get(src)
        if rng is None:
            rng = self._rngs[src] = derive_rng(self._seed, "net", src)
        return rng

    def link(self, src: str, dst: str) -> LinkParams:
        return self._links.get((src, dst), self._default) if self._links else self._default

    def add_partition(self, groups: Iterable[Iterable[str]], start: float, end: float) -> None:
        members = {name: g for g, group in enumerate(groups) for name in group}
        self._group_cuts.append(GroupCut(members, start, end))

    def add_one_way(self, src: Iterable[str], dst: Iterable[str], start: float, end: float) -> None:
        self._cuts.append(Cut(frozenset(src), frozenset(dst), start, end))

    def add_hold(self, src: Iterable[str], dst: Iterable[str], start: float, end: float) -> None:
        self._holds.append(Cut(frozenset(src), frozenset(dst), start, end))

    def blocked(self, src: str, dst: str, now: float) -> bool:
        if src == dst:
            return False
        for group_cut in self._group_cuts:
            if group_cut.start <= now < group_cut.end:
                a = group_cut.groups.get(src)
                b = group_cut.groups.get(dst)
                if a is not None and b is not None and a != b:
                    return True
        for cut in self._cuts:
            if cut.start <= now < cut.end and src in cut.src and dst in cut.dst:
                return True
        return False

    def held_until(self, src: str, dst: str, now: float) -> float | None:
        """End of the hold that catches a message arriving now, if any."""
        for hold in self._holds:
            if hold.start <= now < hold.end and src in hold.src and dst in hold.dst:
                return hold.end
        return None

    def transit(self, src: str, dst: str, now: float) -> list[float]:
        """Delays of the copies of one datagram that reach ``dst``."""
        if src == dst:
            return [0.0]  # loopback
        if self.blocked(src, dst, now):
            return []
        params = self.link(src, dst)
        rng = self.rng(src)
        if params.loss and rng.random() < params.loss:
            return []
        delays = [params.latency.sample(rng)]
        if params.duplicate and rng.random() < params.duplicate:
            delays.append(params.latency.sample(rng))
        return delays

    def reliable_transit(self, src: str, dst: str, now: float, within: float) -> float | None:
        """Delay until a TCP segment from ``src`` gets through, or ``None`` past ``within``."""
        if src == dst:
            return 0.0
        params = self.link(src, dst)
        rng = self.rng(src)
        elapsed = 0.0
        rto = INITIAL_RTO
        while elapsed <= within:
            if not self.blocked(src, dst, now + elapsed) and not (
                params.loss and rng.random() < params.loss
            ):
                delay = elapsed + params.latency.sample(rng)
                return delay if delay <= within else None
            elapsed += rto
            rto *= 2
        return None
