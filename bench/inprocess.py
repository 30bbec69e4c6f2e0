"""Whole nodes in this one process on the real websocket transport, for CPU figures.

``open_ws_fleet`` starts ``count`` ``rancherd.node.Node``s (the production assembly: data
dir, token keys, ``WebSocketTransport`` on 127.0.0.x, sealed links, core, driver, static
discovery of every node, control socket), each transport wrapped in
``bench.counting.CountingTransport`` so the fleet's sealed frames are counted at the
transport, and each data dir recording every state the driver persists (the election's
abandoned rounds are in it). One process, one trio loop: its CPU time is the fleet's.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from bench.counting import CountingTransport, TrafficCounter
from rancherd.config import Preset
from rancherd.demo import demo_configs, free_port
from rancherd.gossip.config import GossipConfig
from rancherd.gossip.core import PersistedState
from rancherd.gossip.messages import Vote
from rancherd.gossip.transport import Transport, TransportLimits
from rancherd.node import Node
from rancherd.state import DataDir

__all__ = ["RecordingDataDir", "WsFleet", "open_ws_fleet"]


class RecordingDataDir(DataDir):
    """A data dir that also keeps, in memory, every state saved through it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.saved: list[PersistedState] = []

    def save_gossip(self, state: PersistedState) -> None:
        self.saved.append(state)
        super().save_gossip(state)


@dataclass
class WsFleet:
    nodes: list[Node]
    data_dirs: list[RecordingDataDir]
    counter: TrafficCounter
    started_at: float
    ready_at: float = 0.0
    decided: bool = False
    decided_at: float | None = None
    failures: list[str] = field(default_factory=list)

    async def wait_decided(self, limit: float) -> bool:
        """Wait (at most ``limit`` seconds from now) until every node knows a decision;
        True when they do and it is the same one."""
        with trio.move_on_after(limit):
            for node in self.nodes:
                await node.wait_decided()
            self.decided_at = trio.current_time()
        outcomes = [node.outcome() for node in self.nodes]
        clusters = {o.cluster_id for o in outcomes if o is not None}
        inits = sum(o is not None and o.role.value == "cluster-init" for o in outcomes)
        undecided = sum(o is None for o in outcomes)
        if undecided:
            self.failures.append(f"{undecided} of {len(self.nodes)} undecided after {limit:g}s")
        if len(clusters) > 1:
            self.failures.append(f"SAFETY: {len(clusters)} clusters")
        if clusters and inits != 1:
            self.failures.append(f"SAFETY: {inits} cluster-init nodes")
        self.decided = not self.failures
        return self.decided

    def rounds_abandoned(self) -> int:
        """Rounds that their proposer gave up (timed out, refused, member left, ...): every
        released vote of a node's own, over every state it persisted."""
        released: set[Vote] = set()
        for node, data_dir in zip(self.nodes, self.data_dirs, strict=True):
            for state in data_dir.saved:
                released.update(v for v in state.released if v.proposer == node.node_id)
        return len(released)

    def rounds_started(self) -> int:
        """Rounds proposed, all nodes together (each node's highest persisted next round)."""
        return sum(
            max((state.next_round for state in data_dir.saved), default=0)
            for data_dir in self.data_dirs
        )

    def dial_statistics(self) -> tuple[int, int]:
        """(dials, failed dials), all nodes together."""
        links = [node.links for node in self.nodes if node.links is not None]
        return (
            sum(link.statistics.dials for link in links),
            sum(link.statistics.dial_failures for link in links),
        )


@contextlib.asynccontextmanager
async def open_ws_fleet(
    count: int, preset: str = "lan", gossip_config: GossipConfig | None = None
) -> AsyncIterator[WsFleet]:
    """``count`` nodes on 127.0.0.1 .. 127.0.0.``count``, started together; all stopped
    and their data dirs removed when the block ends. ``gossip_config``: instead of the
    preset's (``expectedServers`` and the cache duration still come from the config)."""
    hosts = [f"127.0.0.{i + 1}" for i in range(count)]
    counter = TrafficCounter()
    # One process has one source address per node for every connection: allow them.
    limits = TransportLimits(max_connections_per_address=4 * count)
    with tempfile.TemporaryDirectory(prefix="rdbench-") as root:
        port = free_port(hosts, first=24000 + os.getpid() % 20000)
        configs = [
            replace(c, discovery=replace(c.discovery, preset=Preset(preset)))
            for c in demo_configs(count, port, secrets.token_hex(16), Path(root))
            if c.discovery is not None
        ]
        data_dirs = [RecordingDataDir(c.data_dir) for c in configs]

        def factory(host: str) -> Callable[[TransportLimits], Transport]:
            def make(limits: TransportLimits) -> Transport:
                from rancherd.gossip.ws_transport import WebSocketTransport

                return CountingTransport(WebSocketTransport(host, port, limits), counter)

            return make

        nodes = [
            Node(c, d, limits=limits, transport_factory=factory(host), gossip_config=gossip_config)
            for c, d, host in zip(configs, data_dirs, hosts, strict=True)
        ]
        async with trio.open_nursery() as nursery:
            fleet = WsFleet(nodes, data_dirs, counter, trio.current_time())
            async with trio.open_nursery() as starters:
                for node in nodes:
                    starters.start_soon(nursery.start, node.run)
            fleet.ready_at = trio.current_time()
            try:
                yield fleet
            finally:
                nursery.cancel_scope.cancel()
