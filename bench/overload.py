"""``python -m bench overload``: a fleet that shares one core with a busy loop.

``nodes`` whole nodes in this one process (``bench.inprocess``: real websocket transport on
127.0.0.x) are pinned (``os.sched_setaffinity``, every thread) to one core, and a child
process that spins on that same core (pinned the same way) takes about half of it. The
question is whether a fleet short of CPU still decides, more slowly, or livelocks: keys
``decided`` (every node knows one decision within ``limit`` seconds), ``rounds_abandoned``
(rounds their proposer gave up: each node's own released votes over every state it
persisted) and ``decided_s`` (from the first node's start); then where the nodes were at
the end: ``phases`` and ``views`` (nodes per phase, per number of servers seen) and
``voters`` (nodes holding a vote).

The busy child is killed on the way out however the run ends, and it ends itself after
``limit`` + 60 seconds in case this process is killed first. The affinity is restored.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator

from bench.inprocess import open_ws_fleet

__all__ = ["busy_neighbour", "overload", "pinned_to"]

_BUSY_LOOP = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    pass
"""


def _threads() -> list[int]:
    return [int(tid) for tid in os.listdir("/proc/self/task")]


@contextlib.contextmanager
def pinned_to(cpu: int) -> Iterator[None]:
    """Every thread of this process (and the threads it starts later) on ``cpu`` only."""
    before = {tid: os.sched_getaffinity(tid) for tid in _threads()}
    for tid in before:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, {cpu})
    try:
        yield
    finally:
        for tid, cpus in before.items():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, cpus)


@contextlib.contextmanager
def busy_neighbour(cpu: int, lifetime: float) -> Iterator[subprocess.Popen[bytes]]:
    """A child process spinning on ``cpu`` for at most ``lifetime`` seconds."""
    child = subprocess.Popen(
        [sys.executable, "-c", _BUSY_LOOP, str(cpu), f"{lifetime:g}"],
        stdin=subprocess.DEVNULL,
    )
    try:
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)


def pick_cpu() -> int:
    return max(os.sched_getaffinity(0))


async def overload(
    nodes: int, preset: str, limit: float, cpu: int, report: Callable[[str], None]
) -> dict[str, object]:
    """Run inside ``pinned_to(cpu)`` and ``busy_neighbour(cpu, ...)``."""
    async with open_ws_fleet(nodes, preset) as fleet:
        report(f"{nodes} nodes started in {fleet.ready_at - fleet.started_at:.2f}s on cpu {cpu}")
        decided = await fleet.wait_decided(limit)
        dials, dial_failures = fleet.dial_statistics()
        # Where each node was at the end: phase, how many servers it saw, a vote held.
        statuses = [node.status for node in fleet.nodes if node.status is not None]
        frames, sent = fleet.counter.snapshot()
        result: dict[str, object] = {
            "decided": decided,
            "rounds_abandoned": fleet.rounds_abandoned(),
            "rounds_started": fleet.rounds_started(),
            "decided_s": (
                round(fleet.decided_at - fleet.started_at, 3)
                if decided and fleet.decided_at is not None
                else None
            ),
            "decided_nodes": sum(node.outcome() is not None for node in fleet.nodes),
            "nodes": nodes,
            "limit_s": limit,
            "preset": preset,
            "cpu": cpu,
            "frames": frames,
            "bytes": sent,
            "dials": dials,
            "dial_failures": dial_failures,
        }
        if fleet.failures:
            result["failure"] = "; ".join(fleet.failures)
        result["phases"] = dict(Counter(str(s.phase.value) for s in statuses))
        result["views"] = dict(Counter(len(s.view) for s in statuses))
        result["voters"] = sum(s.vote is not None for s in statuses)
        report(f"decided={decided} rounds abandoned={result['rounds_abandoned']}")
        return result
