"""``python -m bench traffic``: what a booting fleet puts on the wire until it has decided.

Real drivers, links and sealing over the in-memory transport (``tests/driver_harness.py``'s
fleet), all in one ``trio.run`` on ``MockClock(autojump_threshold=0)``: time is virtual, so
the figures are counts, independent of the machine. Every node starts at virtual time 0
with the addresses of all servers as its discovery answer (static discovery of the
servers). Frames and bytes are counted where the network sees them: sealed frames handed
to the transport (``bench.counting``). The run ends when every node knows a decision, or
at ``limit`` virtual seconds (then ``decided_s`` is null and the rates cover the limit).
Transport limits are the defaults (``TransportLimits``), unless ``limits`` says otherwise:
with more than ``max_connections`` (512) nodes, a server refuses connections beyond it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
import trio.testing

from bench.counting import CountingTransport, TrafficCounter
from bench.harness import Fleet, TestNode, fleet
from rancherd.gossip.config import GossipConfig
from rancherd.gossip.messages import Role
from rancherd.gossip.transport import TransportLimits

__all__ = ["TrafficResult", "run_traffic", "traffic"]

PROGRESS_EVERY = 1.0
"""Virtual seconds between progress lines on stderr."""


@dataclass(frozen=True, slots=True)
class TrafficResult:
    servers: int
    agents: int
    expected: int
    seed: int
    preset: str
    limit: float
    max_connections: int
    decided_s: float | None
    decided_nodes: int
    decisions: int
    elapsed_s: float
    frames: int
    bytes: int
    wall_s: float

    @property
    def nodes(self) -> int:
        return self.servers + self.agents

    def as_dict(self) -> dict[str, object]:
        per_node_s = self.nodes * self.elapsed_s
        return {
            "frames_per_node_per_s": round(self.frames / per_node_s, 3) if per_node_s else None,
            "bytes_per_node_per_s": round(self.bytes / per_node_s, 1) if per_node_s else None,
            "decided_s": None if self.decided_s is None else round(self.decided_s, 6),
            "nodes": self.nodes,
            "servers": self.servers,
            "agents": self.agents,
            "expected": self.expected,
            "frames": self.frames,
            "bytes": self.bytes,
            "elapsed_s": round(self.elapsed_s, 4),
            "decided_nodes": self.decided_nodes,
            "decisions": self.decisions,
            "limit_s": self.limit,
            "max_connections": self.max_connections,
            "preset": self.preset,
            "seed": self.seed,
            "wall_s": round(self.wall_s, 2),
        }


async def traffic(
    servers: int,
    agents: int,
    expected: int,
    *,
    seed: int = 0,
    preset: str = "lan",
    limit: float = 60.0,
    limits: TransportLimits | None = None,
    report: Callable[[str], None] = lambda _: None,
    on_result: Callable[[TrafficResult], None] = lambda _: None,
) -> TrafficResult:
    """One fleet from boot to decision; run on ``MockClock(autojump_threshold=0)``.
    ``on_result`` gets the figures as soon as they are taken, before the nodes are
    stopped (which takes minutes of real time for a thousand nodes)."""
    wall_start = time.monotonic()
    counter = TrafficCounter()
    config = GossipConfig.preset(preset)
    limits = limits or TransportLimits()
    async with fleet(expected_servers=expected, seed=seed, config=config, limits=limits) as f:
        nodes = _add_nodes(f, servers, agents, counter)
        seeds = [node.address for node in nodes[:servers]]
        start = trio.current_time()
        for node in nodes:
            await f.start(node, seeds)
        report(f"started {len(nodes)} nodes in {time.monotonic() - wall_start:.1f}s of real time")
        decided_at: float | None = None
        with trio.move_on_after(limit):
            async with trio.open_nursery() as watchers:
                watchers.start_soon(_progress, nodes, counter, start, wall_start, report)
                await f.wait_all_decided()
                decided_at = trio.current_time()
                watchers.cancel_scope.cancel()
        end = trio.current_time() if decided_at is None else decided_at
        frames, sent = counter.snapshot()
        result = TrafficResult(
            servers=servers,
            agents=agents,
            expected=expected,
            seed=seed,
            preset=preset,
            limit=limit,
            max_connections=limits.max_connections,
            decided_s=None if decided_at is None else decided_at - start,
            decided_nodes=sum(node.decision is not None for node in nodes),
            decisions=len(f.decisions()),
            elapsed_s=end - start,
            frames=frames,
            bytes=sent,
            wall_s=time.monotonic() - wall_start,
        )
        on_result(result)
        stopping = time.monotonic()
        await _stop_all(nodes)
        report(f"stopped {len(nodes)} nodes in {time.monotonic() - stopping:.1f}s of real time")
        return result


async def _stop_all(nodes: list[TestNode]) -> None:
    """Stop every node in its own cancel scope. Cancelling the fleet's nursery instead
    gathers every task's ``Cancelled`` into one exception group, which trio then splits
    for minutes when there are a thousand nodes; and the cyclic GC would walk all their
    heap meanwhile (``run_traffic`` unfreezes it once ``trio.run`` is over)."""
    gc.freeze()
    for node in nodes:
        if node.cancel is not None:
            node.cancel.cancel()
    for node in nodes:
        await node.stopped.wait()


def _add_nodes(f: Fleet, servers: int, agents: int, counter: TrafficCounter) -> list[TestNode]:
    nodes: list[TestNode] = [f.add(f"s{i}") for i in range(servers)]
    nodes += [f.add(f"a{i}", Role.AGENT) for i in range(agents)]
    for node in nodes:
        node.transport = CountingTransport(node.transport, counter)
    return nodes


async def _progress(
    nodes: list[TestNode],
    counter: TrafficCounter,
    start: float,
    wall_start: float,
    report: Callable[[str], None],
) -> None:
    while True:
        await trio.sleep(PROGRESS_EVERY)
        decided = sum(node.decision is not None for node in nodes)
        report(
            f"  t={trio.current_time() - start:.0f}s virtual, "
            f"{time.monotonic() - wall_start:.1f}s real: {decided}/{len(nodes)} decided, "
            f"{counter.frames} frames"
        )


def run_traffic(job: Callable[[], Awaitable[TrafficResult]]) -> TrafficResult:
    """``job`` (a ``functools.partial`` of ``traffic``) in a ``trio.run`` of its own on a
    ``MockClock``."""
    try:
        return trio.run(job, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        gc.unfreeze()
