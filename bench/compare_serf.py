"""``python -m bench compare-serf``: rancherd and serf membership, alternating, one machine.

Each run starts ``nodes`` processes on loopback, the first one the seed of all, and asks
each (rancherd: its control socket; serf: its RPC) until it lists every other one alive:
``bench.rancherd_bench.members_run_rancherd`` (``expectedServers`` one more than the nodes,
so they only gossip) and ``bench.serf_bench.members_run_serf``. Runs alternate, rancherd
first, so both see the same machine and the same load. Per daemon: the median and maximum
time from the last process start until every process saw everyone, and the CPU seconds
per node (all threads, from ``/proc/PID/task/*/schedstat``, start-up included, sampled just
before the processes are stopped; median over the runs).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable

from bench.rancherd_bench import MembersRun, loopback_fleet, members_run_rancherd, warm_up
from bench.serf_bench import ensure_serf, members_run_serf, serf_version

__all__ = ["compare_serf"]


def _summary(runs: list[MembersRun], nodes: int) -> dict[str, object]:
    ok = [run for run in runs if run.failure is None]
    converged = [run.converged_s for run in ok]
    cpu_per_node = [run.cpu_s / nodes for run in runs if run.cpu_s > 0]
    return {
        "converged_s_median": round(statistics.median(converged), 3) if converged else None,
        "converged_s_max": round(max(converged), 3) if converged else None,
        "cpu_s_per_node": round(statistics.median(cpu_per_node), 4) if cpu_per_node else None,
        "converged_s": [round(value, 3) for value in converged],
        "cpu_s": [round(run.cpu_s, 3) for run in runs],
        "runs_ok": len(ok),
        "failures": [run.failure for run in runs if run.failure is not None],
    }


async def compare_serf(
    nodes: int,
    runs: int,
    preset: str,
    limit: float,
    poll: float,
    report: Callable[[str], None],
) -> dict[str, object]:
    load_before = os.getloadavg()[0]
    serf = ensure_serf(report)
    await warm_up()
    fleet = loopback_fleet(nodes, seeds=1)
    rancherd_runs: list[MembersRun] = []
    serf_runs: list[MembersRun] = []
    for run in range(runs):
        for name in ("rancherd", "serf"):
            if name == "rancherd":
                result = await members_run_rancherd(fleet, nodes, preset, limit, poll)
                rancherd_runs.append(result)
            else:
                result = await members_run_serf(serf, nodes, limit, poll)
                serf_runs.append(result)
            outcome = result.failure or f"{result.converged_s:.3f}s from last start"
            report(f"  run {run + 1}/{runs} {name}: {outcome}, {result.cpu_s:.2f} CPU-s")
    return {
        "nodes": nodes,
        "runs": runs,
        "preset": preset,
        "limit_s": limit,
        "poll_s": poll,
        "load_before": round(load_before, 2),
        "serf_version": serf_version(serf),
        "rancherd": _summary(rancherd_runs, nodes),
        "serf": _summary(serf_runs, nodes),
    }
