"""rancherd measured as it runs: ``rancherd discover`` processes, or nodes in one process.

Decision time. The harness records when it starts each process (just before the exec)
and timestamps each node's stderr lines as they arrive. Two lines matter: ``rancherd node
... starting: gossip on ...`` (``ready``: the interpreter has started, the config is
loaded, the token's keys are derived (scrypt), the listener is about to open) and the
first ``decided: ...`` status line. Per run:

- ``from last start`` = last node's ``decided`` line - last process start: what the issue
  asks for; includes Python's start-up (about 0.6 s of CPU per process) and the scrypt.
- ``from ready`` = last node's ``decided`` line - last node's ``ready`` line: the protocol
  alone (with the ``lan`` preset this includes its 1 s ``startup_grace``).

After the decision each process waits (at most 10 s) until every member reports it, prints
its JSON and exits; the harness then checks: one cluster id, exactly one cluster-init, every
node informed. A run that breaks any of this counts as failed, with the reason.

Membership. ``expectedServers`` is one more than the nodes started, so nobody decides and
the nodes only gossip, as serf agents do. Every node's seed list is the first node only
(serf's ``-join``); the seed is started first and the harness waits for its ``ready`` line,
then starts the others. The harness asks each node's control socket (the one ``rancherd
peers`` reads) every ``poll`` seconds until it lists every other node alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import trio

from bench.netns import BenchNamespace, bench_lab
from bench.overload import busy_neighbour
from bench.procs import Proc, ProcSet, cpu_seconds, open_procs, task_cpu_seconds
from bench.results import Series

__all__ = [
    "MembersRun",
    "add_convergence",
    "decide_inprocess",
    "decide_processes",
    "marked",
    "members_run_rancherd",
    "membership_rancherd",
    "poll_members",
    "warm_up",
    "write_config",
]

PYCACHE = Path(tempfile.gettempdir()) / "rdbench-pycache"
ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "RANCHERD_IMPLICIT_PATHS": "",
    # Byte code as an installed package has it, kept outside the work tree.
    "PYTHONPYCACHEPREFIX": str(PYCACHE),
}
MARKERS = {"ready": " starting: gossip on ", "decided": "decided: "}
GIVEN_UP = re.compile(r"\bround (\d+) given up \(")
"""The status line of a proposer that abandoned a round: ``round 3 given up (no ack from``
(logged again while the status changes in its backoff: count distinct rounds)."""
EXIT_WAIT = 20.0
"""Seconds the harness waits, after every node decided, for every process to exit (each
waits at most 10 s for its members to confirm)."""


async def warm_up() -> None:
    """Compile the byte code once, so no measured start pays for it (an installed package
    ships it)."""
    modules = (
        "rancherd.cli, rancherd.discover, rancherd.node, rancherd.control, "
        "rancherd.gossip.ws_transport, rancherd.discovery.mdns, rancherd.discovery.static"
    )
    with trio.fail_after(120):
        await trio.run_process([sys.executable, "-c", f"import {modules}"], env=ENV)


def write_config(
    path: Path,
    *,
    params: str,
    expected: int,
    preset: str,
    port: int,
    listen: str = "0.0.0.0",
    address: str | None = None,
    token: str,
) -> Path:
    lines = ["role: server", f"token: {json.dumps(token)}"]
    if address is not None:
        lines.append(f"address: {address}")
    lines += [
        "discovery:",
        f"  params: {json.dumps(params)}",
        f"  expectedServers: {expected}",
        f"  listenAddress: {listen}",
        f"  port: {port}",
        f"  preset: {preset}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def discover_argv(config: Path, data_dir: Path, timeout: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rancherd",
        "discover",
        "--config",
        str(config),
        "--data-dir",
        str(data_dir),
        "--json",
        "--timeout",
        f"{timeout:g}",
    ]


def static_params(hosts: Sequence[str], port: int) -> str:
    addrs = " ".join(f"{host}:{port}" for host in hosts)
    return f"provider=static addrs={json.dumps(addrs)}"


@dataclass(frozen=True, slots=True)
class Fleet:
    """Where the nodes of one run live: their addresses and how to run a command there."""

    hosts: list[str]
    port: int
    wrappers: list[Callable[[list[str]], list[str]]]
    params: list[str]
    listen: list[str]
    address: list[str | None]


def loopback_fleet(count: int, seeds: int) -> Fleet:
    from rancherd.demo import free_port

    hosts = [f"127.0.0.{i + 1}" for i in range(count)]
    port = free_port(hosts, first=21000 + os.getpid() % 20000)
    params = static_params(hosts[:seeds], port)
    return Fleet(
        hosts,
        port,
        [_same] * count,
        [params] * count,
        list(hosts),
        list[str | None](hosts),
    )


def netns_fleet(namespaces: Sequence[BenchNamespace]) -> Fleet:
    count = len(namespaces)
    return Fleet(
        [ns.address for ns in namespaces],
        8443,
        [ns.command for ns in namespaces],
        ["provider=mdns service=rancher-server"] * count,
        ["0.0.0.0"] * count,
        [None] * count,
    )


def _same(argv: list[str]) -> list[str]:
    return argv


def check_decisions(procs: Sequence[Proc]) -> str | None:
    """Why the printed decisions are wrong, or None when they are one sound cluster."""
    decided: list[dict[str, object]] = []
    for proc in procs:
        if proc.process.returncode != 0:
            return f"{proc.name} exited {proc.process.returncode}: {proc.tail(3)}"
        try:
            document = json.loads(proc.stdout)
        except ValueError:
            return f"{proc.name} printed no JSON decision"
        decided.append(document)
    clusters = {d.get("cluster_id") for d in decided}
    if len(clusters) != 1:
        return f"SAFETY: {len(clusters)} clusters: {sorted(map(str, clusters))}"
    inits = sum(d.get("role") == "cluster-init" for d in decided)
    if inits != 1:
        return f"SAFETY: {inits} cluster-init nodes"
    uninformed = [p.name for p, d in zip(procs, decided, strict=True) if not d.get("informed")]
    if uninformed:
        return f"not every member confirmed the decision: {', '.join(uninformed)}"
    return None


def marked(proc: Proc, marker: str) -> Callable[[], bool]:
    """A condition for ``wait_until``: ``proc`` printed ``marker``'s line, or exited."""
    return lambda: marker in proc.marks or proc.exited is not None


async def wait_until(procs: ProcSet, done: Callable[[], bool]) -> None:
    """Return once ``done()`` holds, re-checked at each marker or exit (callers bound it)."""
    while not done():
        await procs.wait_changed()


def _rounds_given_up(stderr_lines: list[str]) -> int:
    """The distinct rounds a node's ``GIVEN_UP`` lines name."""
    return len({m.group(1) for line in stderr_lines if (m := GIVEN_UP.search(line))})


async def one_decide_run(
    fleet: Fleet, preset: str, limit: float, series: Series, root: Path
) -> None:
    count = len(fleet.hosts)
    token = secrets.token_hex(16)
    argvs = []
    for i in range(count):
        config = write_config(
            root / f"n{i}.yaml",
            params=fleet.params[i],
            expected=count,
            preset=preset,
            port=fleet.port,
            listen=fleet.listen[i],
            address=fleet.address[i],
            token=token,
        )
        argvs.append(fleet.wrappers[i](discover_argv(config, root / f"d{i}", limit)))
    async with open_procs(ENV) as procs:
        with trio.move_on_after(limit) as scope:
            for i, argv in enumerate(argvs):
                await procs.spawn(argv, f"node{i}@{fleet.hosts[i]}", MARKERS)
            await wait_until(
                procs,
                lambda: all("decided" in p.marks or p.exited is not None for p in procs.procs),
            )
        nodes = procs.procs
        cpu = sum(cpu_seconds(p.pid) for p in nodes)
        undecided = [p for p in nodes if "decided" not in p.marks]
        if scope.cancelled_caught or undecided:
            stuck = undecided[0] if undecided else nodes[0]
            series.failures.append(
                f"{len(undecided)} of {count} undecided after {limit:g}s; "
                f"{stuck.name} said: {stuck.tail(1)}"
            )
            return
        with trio.move_on_after(EXIT_WAIT):
            await wait_until(procs, lambda: all(p.exited is not None for p in nodes))
        problem = check_decisions(nodes)
        if problem is not None:
            series.failures.append(problem)
            return
        last_start = max(p.started for p in nodes)
        last_ready = max(p.marks["ready"] for p in nodes)
        all_decided = max(p.marks["decided"] for p in nodes)
        series.primary.append(all_decided - last_start)
        series.secondary.append(all_decided - last_ready)
        series.add_extra("start spread (first to last exec)", last_start - nodes[0].started)
        series.add_extra("start-up (last exec to last ready)", last_ready - last_start)
        series.add_extra(
            "first decided line to last",
            all_decided - min(p.marks["decided"] for p in nodes),
        )
        series.add_extra(
            "CPU use of all nodes until the decision, in cores",
            cpu / (all_decided - nodes[0].started),
        )
        given_up = sum(_rounds_given_up(p.stderr_lines) for p in nodes)
        series.add_extra("rounds given up (all proposers)", given_up)
        in_node = [json.loads(p.stdout)["seconds"] for p in nodes]
        series.add_extra("slowest node's own seconds (Node.run to decision)", max(in_node))


async def decide_processes(
    mode: str,
    nodes: int,
    runs: int,
    preset: str,
    limit: float,
    seeds: int | None,
    report: Callable[[str], None],
    *,
    busy: int = 0,
) -> Series:
    """``rancherd discover`` x ``nodes`` per run, ``runs`` times; ``busy`` loops spinning
    beside them (spread over the CPUs) for the whole measurement."""
    where = "netns mDNS" if mode == "netns-mdns" else f"loopback static ({seeds or nodes} seeds)"
    loaded = f", {busy} busy loops beside" if busy else ""
    series = Series(
        key=f"decide/{mode}/n{nodes}/{preset}" + (f"/busy{busy}" if busy else ""),
        label=f"rancherd decision, {nodes} process{'es' * (nodes != 1)}, {where}, "
        f"preset {preset}{loaded}",
        limit=limit,
        load_before=os.getloadavg()[0],
    )
    await warm_up()
    with contextlib.ExitStack() as stack:
        cpus = sorted(os.sched_getaffinity(0))
        lifetime = runs * (limit + EXIT_WAIT + 30)
        for index in range(busy):
            stack.enter_context(busy_neighbour(cpus[index % len(cpus)], lifetime))
        if mode == "netns-mdns":
            fleet = netns_fleet(stack.enter_context(bench_lab(nodes)))
        else:
            fleet = loopback_fleet(nodes, seeds or nodes)
        for run in range(runs):
            failed = len(series.failures)
            with tempfile.TemporaryDirectory(prefix="rdbench-") as root:
                await one_decide_run(fleet, preset, limit, series, Path(root))
            report(f"  run {run + 1}/{runs}: {_last(series, failed)}")
    return series


def _last(series: Series, failures_before: int) -> str:
    """The outcome of the run just added to ``series``."""
    if len(series.failures) > failures_before:
        return f"failed: {series.failures[-1]}"
    return f"{series.primary[-1]:.3f}s from last start, {series.secondary[-1]:.3f}s from ready"


# --- nodes in one process ---------------------------------------------------------------


async def decide_inprocess(
    nodes: int, runs: int, preset: str, limit: float, report: Callable[[str], None]
) -> Series:
    """``nodes`` whole Nodes (websocket transport on 127.0.0.x, static discovery listing
    every node) in this one trio loop: no interpreter start-up, one CPU."""
    from rancherd.config import Preset
    from rancherd.demo import demo_configs, free_port
    from rancherd.gossip.transport import TransportLimits
    from rancherd.node import Node
    from rancherd.state import DataDir

    series = Series(
        key=f"decide/inprocess/n{nodes}/{preset}",
        label=f"rancherd decision, {nodes} nodes in one process, loopback static, preset {preset}",
        limit=limit,
        load_before=os.getloadavg()[0],
    )
    hosts = [f"127.0.0.{i + 1}" for i in range(nodes)]
    for run in range(runs):
        failed = len(series.failures)
        with tempfile.TemporaryDirectory(prefix="rdbench-") as root:
            port = free_port(hosts, first=22000 + os.getpid() % 20000)
            configs = demo_configs(nodes, port, secrets.token_hex(16), Path(root))
            configs = [
                replace(c, discovery=replace(c.discovery, preset=Preset(preset)))
                for c in configs
                if c.discovery is not None
            ]
            # One process has one source address for every node's connections: allow them.
            limits = TransportLimits(max_connections_per_address=4 * nodes)
            fleet = [Node(c, DataDir(c.data_dir), limits=limits) for c in configs]
            ready: list[float] = []
            failure: str | None = None
            async with trio.open_nursery() as nursery:

                async def start(node: Node, ready: list[float] = ready) -> None:
                    await nursery.start(node.run)
                    ready.append(trio.current_time())

                with trio.move_on_after(limit):
                    async with trio.open_nursery() as starters:
                        for node in fleet:
                            starters.start_soon(start, node)
                    for node in fleet:
                        await node.wait_decided()
                    decided_at = trio.current_time()
                    for node in fleet:
                        await node.wait_members_informed()
                outcomes = [node.outcome() for node in fleet]
                nursery.cancel_scope.cancel()
            decided = [o for o in outcomes if o is not None]
            if len(decided) < nodes:
                failure = f"{nodes - len(decided)} of {nodes} undecided after {limit:g}s"
            elif len({o.cluster_id for o in decided}) != 1:
                failure = "SAFETY: more than one cluster"
            elif sum(o.role.value == "cluster-init" for o in decided) != 1:
                failure = "SAFETY: not exactly one cluster-init"
            if failure is not None:
                series.failures.append(failure)
            else:
                last_start = max(node.started_at for node in fleet)
                all_decided = max(node.decided_at for node in fleet if node.decided_at is not None)
                series.primary.append(all_decided - last_start)
                series.secondary.append(all_decided - max(ready))
                series.add_extra("start-up (last Node.run to last ready)", max(ready) - last_start)
                series.add_extra("harness saw all decided", decided_at - last_start)
            report(f"  run {run + 1}/{runs}: {_last(series, failed)}")
    return series


# --- membership -------------------------------------------------------------------------


async def poll_members(
    count: int,
    probe: Callable[[int], Awaitable[int | None]],
    want: int,
    poll: float,
) -> list[float]:
    """Ask node ``i`` (``probe(i)``: members it sees alive, None if it cannot answer yet)
    every ``poll`` seconds until it sees ``want``; returns when each got there (harness
    time of the answer). Nodes that got there are not asked again. Callers bound this."""
    seen_at = [0.0] * count

    async def watch(index: int) -> None:
        while True:
            members = await probe(index)
            if members is not None and members >= want:
                seen_at[index] = trio.current_time()
                return
            await trio.sleep(poll)

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(watch, index)
    return seen_at


def add_convergence(
    series: Series, procs: Sequence[Proc], seen: Sequence[float], cpu: float, member: str
) -> None:
    """Add one converged membership run: ``seen[i]`` is when ``procs[i]`` saw everyone,
    ``cpu`` the CPU seconds all of them used until then; ``member`` names one ("node",
    "agent") in the CPU figure's label."""
    last_start = max(p.started for p in procs)
    last_ready = max(p.marks.get("ready", last_start) for p in procs)
    series.primary.append(max(seen) - last_start)
    series.secondary.append(max(seen) - last_ready)
    series.add_extra("start-up (last exec to last ready)", last_ready - last_start)
    series.add_extra("median node converged", sorted(seen)[len(seen) // 2] - last_start)
    series.add_extra(
        f"CPU use of all {member}s until converged, in cores",
        cpu / (max(seen) - procs[0].started),
    )


async def _control_alive_peers(root: Path, index: int) -> int | None:
    return await rancherd_alive_peers(root / f"d{index}" / "control.sock")


async def rancherd_alive_peers(socket_path: Path) -> int | None:
    from rancherd.control import ControlError, fetch_snapshots

    try:
        async with contextlib.aclosing(fetch_snapshots(socket_path, watch=False)) as stream:
            async for snapshot in stream:
                return sum(int(peer["state"] == "alive") for peer in snapshot["peers"])
    except (ControlError, OSError, trio.BrokenResourceError):
        return None  # not up yet, or gone
    return None


@dataclass(frozen=True, slots=True)
class MembersRun:
    """One membership run of rancherd nodes or serf agents."""

    procs: list[Proc]
    seen: list[float]
    """When each process first listed every other one alive (harness time)."""
    cpu_s: float
    """CPU seconds of all processes (``/proc/PID/task/*/schedstat``), sampled just before
    they were stopped: start-up included."""
    failure: str | None = None

    @property
    def converged_s(self) -> float:
        """From the last process start until the last process saw everyone."""
        return max(self.seen) - max(p.started for p in self.procs)


async def members_run_rancherd(
    fleet: Fleet, nodes: int, preset: str, limit: float, poll: float
) -> MembersRun:
    """``nodes`` ``rancherd discover`` processes that only gossip (``expectedServers`` is
    one more), the first one the seed of all; until each lists every other alive."""
    with tempfile.TemporaryDirectory(prefix="rdbench-") as root_name:
        root = Path(root_name)
        token = secrets.token_hex(16)
        argvs = [
            discover_argv(
                write_config(
                    root / f"n{i}.yaml",
                    params=fleet.params[i],
                    expected=nodes + 1,
                    preset=preset,
                    port=fleet.port,
                    listen=fleet.listen[i],
                    address=fleet.address[i],
                    token=token,
                ),
                root / f"d{i}",
                limit + 30,
            )
            for i in range(nodes)
        ]
        seen: list[float] = []
        async with open_procs(ENV) as procs:
            with trio.move_on_after(limit) as scope:
                seed = await procs.spawn(argvs[0], "seed", MARKERS)
                await wait_until(procs, marked(seed, "ready"))
                for i in range(1, nodes):
                    await procs.spawn(argvs[i], f"node{i}", MARKERS)
                seen = await poll_members(
                    nodes,
                    partial(_control_alive_peers, root),
                    nodes - 1,
                    poll,
                )
            cpu = sum(task_cpu_seconds(p.pid) for p in procs.procs)
    failure = f"not converged after {limit:g}s" if scope.cancelled_caught else None
    return MembersRun(procs.procs, seen, cpu, failure)


async def membership_rancherd(
    nodes: int, runs: int, preset: str, limit: float, poll: float, report: Callable[[str], None]
) -> Series:
    series = Series(
        key=f"members/rancherd/n{nodes}/{preset}",
        label=f"rancherd membership, {nodes} processes, loopback, 1 seed, preset {preset}",
        limit=limit,
        load_before=os.getloadavg()[0],
        notes=f"poll every {poll:g}s per node via the control socket",
    )
    fleet = loopback_fleet(nodes, seeds=1)
    await warm_up()
    for run in range(runs):
        failed = len(series.failures)
        result = await members_run_rancherd(fleet, nodes, preset, limit, poll)
        if result.failure is not None:
            series.failures.append(result.failure)
        else:
            add_convergence(series, result.procs, result.seen, result.cpu_s, "node")
        report(f"  run {run + 1}/{runs}: {_last(series, failed)}")
    return series
