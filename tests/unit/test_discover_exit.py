"""When ``discover`` exits: an informed node stays long enough to answer a straggler."""

from __future__ import annotations

import pytest

from rancherd.discover import (
    INFORM_WAIT,
    RELAY_EXCHANGES,
    RELAY_TICKS,
    inform_seconds,
    relay_seconds,
)
from rancherd.gossip.config import GossipConfig


@pytest.mark.parametrize("config", [GossipConfig.lan(), GossipConfig.local()])
def test_an_informed_node_stays_for_a_stragglers_exchanges_stretched_by_its_health(
    config: GossipConfig,
) -> None:
    """A server that missed a member's decided record asks a partner for the full state
    every ``gathering_push_pull_interval``: the partner stays for RELAY_EXCHANGES of
    those (and RELAY_TICKS ticks of relaying), longer on a node that is behind."""
    base = relay_seconds(config)
    assert base >= RELAY_EXCHANGES * config.gathering_push_pull_interval
    assert base >= RELAY_TICKS * config.gossip_interval
    assert relay_seconds(config, health_score=3) == pytest.approx(4 * base)


def test_a_node_behind_on_its_timers_waits_longer_for_its_members() -> None:
    assert inform_seconds() == INFORM_WAIT
    assert inform_seconds(health_score=2) == pytest.approx(3 * INFORM_WAIT)
