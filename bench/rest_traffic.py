"""``python -m bench.rest_traffic``: frames per second per node of a decided fleet at rest.

Drivers over the in-memory transport on virtual time (``tests/driver_harness.py``), lan
preset, with the decided gossip tick at the old 0.2 s and at the preset's 1 s, for 3 and
10 servers. Deterministic (seeded), takes a few seconds. The figures are in
docs/PROTOCOL.md (gossip timers).
"""

from __future__ import annotations

import trio
import trio.testing

from bench.harness import frames_per_node_second_at_rest
from rancherd.gossip.config import GossipConfig


def main() -> None:
    for servers in (3, 10):
        for interval in (0.2, GossipConfig.lan().decided_gossip_interval):
            rate = trio.run(
                frames_per_node_second_at_rest,
                servers,
                interval,
                clock=trio.testing.MockClock(autojump_threshold=0),
            )
            print(f"{servers} servers, decided tick {interval}s: {rate:.2f} frames/s per node")


if __name__ == "__main__":
    main()
