"""``python -m sim bench``: how fast the harness runs a big fleet.

One seed of ``nodes`` machines (``servers`` of them servers, the rest agents, expected
servers 3), all booting within ten seconds on a clean LAN, simulated for
``virtual_seconds`` whatever happens (no early stop). Reports wall time and events and, for
gossip, how much of the wall time was spent inside ``GossipCore`` (its methods are wrapped
with a wall-clock timer for the bench only; the simulation itself never reads it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sim.scenario import load_text
from sim.world import World


@dataclass(frozen=True, slots=True)
class BenchOutcome:
    nodes: int
    servers: int
    algorithm: str
    virtual_seconds: float
    wall_seconds: float
    events: int
    messages: int
    decided: bool
    time_to_decision: float | None
    core_seconds: float | None
    """Wall time spent inside ``GossipCore`` methods (gossip only)."""

    def describe(self) -> str:
        ttd = "never" if self.time_to_decision is None else f"{self.time_to_decision:.2f}s"
        rate = self.events / self.wall_seconds if self.wall_seconds else 0.0
        split = ""
        if self.core_seconds is not None:
            harness = self.wall_seconds - self.core_seconds
            split = f" [{self.core_seconds:.2f} s inside GossipCore, {harness:.2f} s harness]"
        return (
            f"bench {self.algorithm}: {self.nodes} nodes ({self.servers} servers) x "
            f"{self.virtual_seconds:g} virtual s: {self.wall_seconds:.2f} s wall{split}, "
            f"{self.events} events ({rate:,.0f}/s), {self.messages} messages, "
            f"all decided: {self.decided} (time to decision {ttd})"
        )


CORE_METHODS = (
    "__init__",
    "receive",
    "discovered",
    "handle_timer",
    "get_timer",
    "messages_to_send",
    "next_event",
    "persisted",
)


@contextmanager
def _core_timer(enabled: bool) -> Iterator[list[float]]:
    """Accumulate wall time spent in ``GossipCore`` methods (outermost calls only)."""
    spent = [0.0]
    if not enabled:
        yield spent
        return
    from rancherd.gossip.core import GossipCore

    depth = [0]
    originals: dict[str, Any] = {name: getattr(GossipCore, name) for name in CORE_METHODS}

    def timed(method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return method(*args, **kwargs)
            depth[0] += 1
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started
                depth[0] -= 1

        return wrapper

    for name, method in originals.items():
        setattr(GossipCore, name, timed(method))
    try:
        yield spent
    finally:
        for name, method in originals.items():
            setattr(GossipCore, name, method)


def bench_scenario_text(nodes: int, servers: int, virtual_seconds: float) -> str:
    servers = min(servers, nodes)
    return (
        f"description: bench fleet\n"
        f"expected_servers: {min(3, servers)}\n"
        f"duration: {virtual_seconds}\n"
        f"settle: {virtual_seconds}\n"
        f"nodes:\n  servers: {servers}\n  agents: {nodes - servers}\n"
        f"  boot: {{uniform: [0, 10]}}\n"
    )


def run_bench(
    *, nodes: int, servers: int, virtual_seconds: float, algorithm: str, seed: int
) -> BenchOutcome:
    scenario = load_text(bench_scenario_text(nodes, servers, virtual_seconds), "bench")
    with _core_timer(algorithm == "gossip") as core:
        started = time.perf_counter()
        world = World(scenario, seed, algorithm)
        result = world.run()
        wall = time.perf_counter() - started
    return BenchOutcome(
        nodes=nodes,
        servers=min(servers, nodes),
        algorithm=algorithm,
        virtual_seconds=virtual_seconds,
        wall_seconds=wall,
        events=result.events,
        messages=world.messages,
        decided=result.decided,
        time_to_decision=result.time_to_decision,
        core_seconds=core[0] if algorithm == "gossip" else None,
    )
