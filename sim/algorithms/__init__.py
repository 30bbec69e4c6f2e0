"""Election algorithms the harness can run, by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sim.algorithms.base import Algorithm
from sim.scenario import Scenario


@dataclass(frozen=True, slots=True)
class AlgorithmOptions:
    codec: bool = False
    """Gossip: send every message through ``rancherd.gossip.codec`` and back."""


def _gossip(scenario: Scenario, options: AlgorithmOptions) -> Algorithm:
    from sim.algorithms.gossip import GossipAlgorithm

    return GossipAlgorithm(scenario, codec=options.codec)


def _classic(scenario: Scenario, options: AlgorithmOptions) -> Algorithm:
    from sim.algorithms.classic import ClassicAlgorithm

    return ClassicAlgorithm(scenario)


def _broken(scenario: Scenario, options: AlgorithmOptions) -> Algorithm:
    from sim.algorithms.toy import EagerAlgorithm

    return EagerAlgorithm(scenario)


ALGORITHMS: dict[str, Callable[[Scenario, AlgorithmOptions], Algorithm]] = {
    "gossip": _gossip,
    "classic": _classic,
    "broken": _broken,
}
"""``broken`` is the deliberately unsafe toy that proves the checker catches a split."""
