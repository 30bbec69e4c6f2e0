"""Flaky mDNS: which answers to a query arrive.

Each answer from a responder to a querier is lost on its own, either i.i.d. with
``discovery.loss`` or, with ``discovery.burst``, by a Gilbert-Elliott channel per
(querier, responder) pair: a good and a bad state with their own loss, moving between
them once per answer, so losses come in bursts as they do on a congested or
snooping-switch LAN. A blind node hears no answer but its own (loopback always works); a
mute node's answers reach nobody else. The harness decides who answers at all: advertised
nodes that are up, plus those that went down less than ``discovery.stale`` seconds ago
(other hosts' caches still answer for them), and never across a partition.

When a node queries is ``QuerySchedule``: the provider's own start-up queries and its
periodic query (a few per ``serverCacheDuration``), from the same constants and function.

Long-run loss of the burst channel: ``enter / (enter + leave) * loss_bad + leave / (enter +
leave) * loss_good``; mean burst length ``1 / leave`` answers.
"""

from __future__ import annotations

import random

from rancherd.discovery.mdns import STARTUP_QUERIES, requery_delay
from sim.rng import derive_rng
from sim.scenario import DiscoverySpec


class MdnsModel:
    def __init__(self, spec: DiscoverySpec, seed: int) -> None:
        self._spec = spec
        self._seed = seed
        self._blind = frozenset(spec.blind)
        self._mute = frozenset(spec.mute)
        self._bad: dict[tuple[str, str], bool] = {}
        self._rngs: dict[str, random.Random] = {}
        self.answers_sent = 0
        self.answers_lost = 0

    def _rng(self, querier: str) -> random.Random:
        rng = self._rngs.get(querier)
        if rng is None:
            rng = self._rngs[querier] = derive_rng(self._seed, "mdns", querier)
        return rng

    def lost(self, querier: str, responder: str) -> bool:
        """Whether this one answer from ``responder`` to ``querier`` is lost."""
        if querier == responder:
            return False
        self.answers_sent += 1
        if querier in self._blind or responder in self._mute:
            self.answers_lost += 1
            return True
        rng = self._rng(querier)
        burst = self._spec.burst
        if burst is None:
            lost = bool(self._spec.loss) and rng.random() < self._spec.loss
        else:
            pair = (querier, responder)
            bad = self._bad.get(pair, False)
            lost = rng.random() < (burst.loss_bad if bad else burst.loss_good)
            self._bad[pair] = (rng.random() >= burst.leave) if bad else (rng.random() < burst.enter)
        if lost:
            self.answers_lost += 1
        return lost


class QuerySchedule:
    """When a node's mDNS provider queries, as ``rancherd.discovery.mdns`` does it: at the
    start-up offsets ``STARTUP_QUERIES`` from the provider's start, and apart from those a
    periodic query whose waits are ``requery_delay(server_cache_duration)``, each drawn
    from 3/4 to all of a sixth of the cache period (the same function, on the node's own
    generator). The sim has no interface events, so the query a link change triggers in
    the provider has no counterpart here."""

    def __init__(self, start: float, server_cache_duration: float, rng: random.Random) -> None:
        self._startup = [start + offset for offset in STARTUP_QUERIES]
        self._cache = server_cache_duration
        self._rng = rng
        self._periodic = start + requery_delay(server_cache_duration, rng)

    def next_after(self, now: float) -> float:
        """The first query time after ``now``."""
        while self._periodic <= now:
            self._periodic += requery_delay(self._cache, self._rng)
        later = [t for t in self._startup if t > now]
        return min(later[0], self._periodic) if later else self._periodic
