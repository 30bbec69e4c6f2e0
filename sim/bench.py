"""``python -m sim bench``: how fast the harness runs a big fleet.

One seed of ``nodes`` machines (``servers`` of them servers, the rest agents, expected
servers 3), all booting within ten seconds on a clean LAN, simulated for
``virtual_seconds`` whatever happens (no early stop). Reports wall time and events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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

    def describe(self) -> str:
        ttd = "never" if self.time_to_decision is None else f"{self.time_to_decision:.2f}s"
        rate = self.events / self.wall_seconds if self.wall_seconds else 0.0
        return (
            f"bench {self.algorithm}: {self.nodes} nodes ({self.servers} servers) x "
            f"{self.virtual_seconds:g} virtual s: {self.wall_seconds:.2f} s wall, "
            f"{self.events} events ({rate:,.0f}/s), {self.messages} messages, "
            f"all decided: {self.decided} (time to decision {ttd})"
        )


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
    )
