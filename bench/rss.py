"""Memory (and CPU) of one idle daemon: a rancherd node that waits forever, a serf agent.

The rancherd node expects 3 servers and is alone, so it gathers forever (``--timeout
3600``); the serf agent has nobody to join. After ``settle`` seconds the harness reads
``VmRSS`` (resident, shared library pages included) and ``RssAnon`` (the process's own
heap and stacks) from ``/proc/PID/status``, and the CPU time the process used over the
last half of that time (idle cost: timers, gossip ticks with nobody to talk to). For the
static node it also reads the CPU time (all threads, ``/proc/PID/task/*/schedstat``) as
its "starting: gossip on" line arrives: the start-up cost (interpreter, imports, config,
the token's scrypt) that issue 10 wants under 0.25 s. All daemons of one run are started
together and are idle, so they do not disturb each other.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from bench.netns import BenchNamespace, bench_lab, netns_unavailable_reason
from bench.procs import Proc, cpu_seconds, open_procs, task_cpu_seconds
from bench.rancherd_bench import (
    ENV,
    MARKERS,
    discover_argv,
    marked,
    wait_until,
    warm_up,
    write_config,
)
from bench.results import Series, summarize
from bench.serf_bench import agent_argv, ensure_serf, serf_version
from rancherd.demo import free_port

__all__ = ["ProcessFootprint", "footprint", "idle_rss", "rss_summary"]


@dataclass(frozen=True, slots=True)
class ProcessFootprint:
    vm_rss_mib: float
    rss_anon_mib: float
    threads: int
    cpu_seconds: float
    """utime + stime so far."""


def footprint(pid: int) -> ProcessFootprint:
    fields: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return ProcessFootprint(
        int(fields["VmRSS"].split()[0]) / 1024,
        int(fields["RssAnon"].split()[0]) / 1024,
        int(fields["Threads"]),
        cpu_seconds(pid),
    )


async def idle_rss(runs: int, settle: float, report: Callable[[str], None]) -> list[Series]:
    serf = ensure_serf(report)
    await warm_up()
    netns_reason = netns_unavailable_reason()
    kinds = ["rancherd-static", "rancherd-mdns", "serf"]
    labels = {
        "rancherd-static": "rancherd discover, idle, static discovery (loopback)",
        "rancherd-mdns": "rancherd discover, idle, mDNS discovery (in a netns)",
        "serf": "serf agent, idle",
    }
    if netns_reason is not None:
        report(f"skipping the mDNS node: {netns_reason}")
        kinds.remove("rancherd-mdns")
    series = {
        kind: Series(
            key=f"rss/{kind}",
            label=labels[kind],
            load_before=os.getloadavg()[0],
            notes=f"after {settle:g}s; idle CPU over the last {settle / 2:g}s",
            metrics=("VmRSS MiB", "RssAnon MiB"),
        )
        for kind in kinds
    }
    series["serf"].notes += f"; {serf_version(serf)}"
    for run in range(runs):
        with tempfile.TemporaryDirectory(prefix="rdbench-") as root_name:
            root = Path(root_name)
            token = secrets.token_hex(16)
            static = write_config(
                root / "static.yaml",
                params="provider=static addrs=127.0.0.1:1",
                expected=3,
                preset="lan",
                port=free_port(["127.0.0.1"], first=23000 + os.getpid() % 20000),
                listen="127.0.0.1",
                address="127.0.0.1",
                token=token,
            )
            mdns = write_config(
                root / "mdns.yaml",
                params="provider=mdns service=rancher-server",
                expected=3,
                preset="lan",
                port=8443,
                token=token,
            )
            lab = (
                bench_lab(1)
                if netns_reason is None
                else contextlib.nullcontext(list[BenchNamespace]())
            )
            with lab as namespaces:
                async with open_procs(ENV) as procs:
                    started: dict[str, Proc] = {}
                    started["rancherd-static"] = await procs.spawn(
                        discover_argv(static, root / "d-static", 3600), "rancherd-static", MARKERS
                    )
                    if namespaces:
                        started["rancherd-mdns"] = await procs.spawn(
                            namespaces[0].command(discover_argv(mdns, root / "d-mdns", 3600)),
                            "rancherd-mdns",
                        )
                    key = base64.b64encode(secrets.token_bytes(32)).decode()
                    started["serf"] = await procs.spawn(
                        agent_argv(serf, 0, "127.0.0.1", key, None), "serf"
                    )
                    static_proc = started["rancherd-static"]
                    with trio.move_on_after(settle / 2):
                        await wait_until(procs, marked(static_proc, "ready"))
                    if "ready" in static_proc.marks:
                        # Sampled as the line arrives: the node has done little since.
                        series["rancherd-static"].add_extra(
                            "CPU seconds to ready", task_cpu_seconds(static_proc.pid)
                        )
                    await trio.sleep(settle / 2 - (trio.current_time() - static_proc.started))
                    half = {kind: footprint(proc.pid) for kind, proc in started.items()}
                    await trio.sleep(settle / 2)
                    for kind, proc in started.items():
                        if proc.exited is not None:
                            series[kind].failures.append(f"exited early: {proc.tail(3)}")
                            continue
                        now = footprint(proc.pid)
                        series[kind].primary.append(now.vm_rss_mib)
                        series[kind].secondary.append(now.rss_anon_mib)
                        series[kind].add_extra(
                            "idle CPU %",
                            100 * (now.cpu_seconds - half[kind].cpu_seconds) / (settle / 2),
                        )
                        series[kind].add_extra("threads", now.threads)
                        series[kind].add_extra(
                            "CPU seconds in the first half", half[kind].cpu_seconds
                        )
        report(
            f"  run {run + 1}/{runs}: "
            + ", ".join(
                f"{kind} {s.primary[-1]:.1f} MiB" for kind, s in series.items() if s.primary
            )
        )
    return list(series.values())


def rss_summary(series: list[Series]) -> dict[str, object]:
    """The figures ``rss --json`` prints: medians over the runs, the static node's first."""
    by_key = {s.key: s for s in series}

    def median(values: list[float]) -> float | None:
        summary = summarize(values)
        return None if summary is None else round(summary.median, 3)

    static = by_key["rss/rancherd-static"]
    document: dict[str, object] = {
        "rss_mib": median(static.primary),
        "rss_anon_mib": median(static.secondary),
        "cpu_s_to_ready": median(static.extra.get("CPU seconds to ready", [])),
        "idle_cpu_percent": median(static.extra.get("idle CPU %", [])),
        "runs": len(static.primary),
        "failures": list(static.failures),
    }
    if "rss/rancherd-mdns" in by_key:
        document["mdns_rss_mib"] = median(by_key["rss/rancherd-mdns"].primary)
    document["serf_rss_mib"] = median(by_key["rss/serf"].primary)
    return document
