"""The network between nodes: latency, loss, duplication, partitions and held links.

Messages are datagrams with their own delay each, so reordering falls out of latency
jitter. ``transit`` gives the delays of the copies that arrive (none when lost, two when
duplicated). ``reliable_transit`` models a TCP exchange (the classic algorithm's HTTP): a
lost segment is sent again after a retransmission timeout that doubles, until a deadline.

Faults are verbs on per-link state (turmoil's ``partition``/``repair``/``hold``/``release``
are the model): ``cut``/``mend`` count the faults blocking a directed link, ``hold``/
``release`` keep the ends of the holds on it. The world calls them when a fault starts and
ends (``sim/faults.py``), so a message's fate is one dictionary look-up, whatever the
number of faults. A cut is checked when a message leaves and again when it arrives, so a
cut that starts while a message is in flight drops it. A held link keeps what arrives on
it and hands it over, in arrival order, when the hold ends. A TCP exchange sees the link
as it is when it starts: a cut that heals during its retransmissions does not let it
through (the next exchange gets through).
"""

from __future__ import annotations

import random
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
        self._cuts: dict[tuple[str, str], int] = {}
        """Directed link -> how many faults cut it now (a partition and a one-way may overlap)."""
        self._holds: dict[tuple[str, str], list[float]] = {}
        """Directed link -> the ends of the holds on it now, oldest first."""

    def rng(self, src: str) -> random.Random:
        """The sender's stream: one node's traffic never shifts another node's draws."""
        rng = self._rngs.get(src)
        if rng is None:
            rng = self._rngs[src] = derive_rng(self._seed, "net", src)
        return rng

    def link(self, src: str, dst: str) -> LinkParams:
        return self._links.get((src, dst), self._default) if self._links else self._default

    # The verbs: faults change the state of directed links; a message's fate reads it.

    def cut(self, src: str, dst: str) -> None:
        """Block ``src`` -> ``dst`` until a matching ``mend`` (cuts nest)."""
        if src != dst:
            key = (src, dst)
            self._cuts[key] = self._cuts.get(key, 0) + 1

    def mend(self, src: str, dst: str) -> None:
        key = (src, dst)
        left = self._cuts.get(key, 0) - 1
        if left > 0:
            self._cuts[key] = left
        else:
            self._cuts.pop(key, None)

    def hold(self, src: str, dst: str, until: float) -> None:
        """Keep what arrives on ``src`` -> ``dst`` and hand it over at ``until``."""
        if src != dst:
            self._holds.setdefault((src, dst), []).append(until)

    def release(self, src: str, dst: str, until: float) -> None:
        ends = self._holds.get((src, dst))
        if ends is not None and until in ends:
            ends.remove(until)
            if not ends:
                del self._holds[(src, dst)]

    def blocked(self, src: str, dst: str) -> bool:
        return (src, dst) in self._cuts

    def held_until(self, src: str, dst: str) -> float | None:
        """End of the hold that catches a message arriving now, if any."""
        ends = self._holds.get((src, dst))
        return ends[0] if ends else None

    def transit(self, src: str, dst: str) -> list[float]:
        """Delays of the copies of one datagram that reach ``dst``."""
        if src == dst:
            return [0.0]  # loopback
        if (src, dst) in self._cuts:
            return []
        params = self.link(src, dst)
        rng = self.rng(src)
        if params.loss and rng.random() < params.loss:
            return []
        delays = [params.latency.sample(rng)]
        if params.duplicate and rng.random() < params.duplicate:
            delays.append(params.latency.sample(rng))
        return delays

    def reliable_transit(self, src: str, dst: str, within: float) -> float | None:
        """Delay until a TCP segment from ``src`` gets through, or ``None`` past ``within``."""
        if src == dst:
            return 0.0
        params = self.link(src, dst)
        rng = self.rng(src)
        elapsed = 0.0
        rto = INITIAL_RTO
        while elapsed <= within:
            if (src, dst) not in self._cuts and not (params.loss and rng.random() < params.loss):
                delay = elapsed + params.latency.sample(rng)
                return delay if delay <= within else None
            elapsed += rto
            rto *= 2
        return None
