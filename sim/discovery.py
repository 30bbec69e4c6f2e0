"""Flaky mDNS: which answers to a query arrive.

Each answer from a responder to a querier is lost on its own, either i.i.d. with
``discovery.loss`` or, with ``discovery.burst``, by a Gilbert-Elliott channel per
(querier, responder) pair: a good and a bad state with their own loss, moving between
them once per answer, so losses come in bursts as they do on a congested or
snooping-switch LAN. A blind node hears no answer but its own (loopback always works); a
mute node's answers reach nobody else. The harness decides who answers at all: advertised
nodes that are up, plus those that went down less than ``discovery.stale`` seconds ago
(other hosts' caches still answer for them), and never across a partition.

Long-run loss of the burst channel: ``enter / (enter + leave) * loss_bad + leave / (enter +
leave) * loss_good``; mean burst length ``1 / leave`` answers.
"""

from __future__ import annotations

import random

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
