"""HashiCorp serf, the yardstick: membership convergence of agents on loopback.

serf comes from the Debian package ``serf``, installed here when missing (``apt-get
install``, after ``apt-get update`` only if the first attempt fails). Each agent binds its
own 127.0.0.x (gossip port and RPC port), uses the ``lan`` profile (serf's default, like
rancherd's ``lan`` preset) and encrypts its gossip with a shared random key (``-encrypt``,
as rancherd seals everything with the token). The first agent is the seed: it is started
first and the harness waits for its "Serf agent running!" line; the others are started
with ``-join`` of the seed. The harness then asks each agent over serf's RPC protocol
(msgpack over TCP, the protocol ``serf members`` speaks, without starting a ``serf``
process per question) every ``poll`` seconds until the agent lists every agent alive.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable
from functools import partial
from typing import Any

import msgpack
import trio

from bench.procs import open_procs, task_cpu_seconds
from bench.rancherd_bench import MembersRun, add_convergence, marked, poll_members, wait_until
from bench.results import Series

__all__ = [
    "SerfRpc",
    "ensure_serf",
    "members_run_serf",
    "membership_serf",
    "serf_alive_members",
    "serf_version",
]

SERF_MARKERS = {"ready": "Starting Serf agent...", "running": "Serf agent running!"}
GOSSIP_PORT = 7946
RPC_PORT = 7373


def ensure_serf(report: Callable[[str], None]) -> str:
    """The path of ``serf``; installs the Debian package when it is missing."""
    found = shutil.which("serf")
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("serf is not installed and installing it needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "serf"]
    report("serf missing: apt-get install -y serf")
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        report("apt-get install failed; apt-get update, then again")
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    found = shutil.which("serf")
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"cannot install serf: {result.stderr.strip()[-500:]}")
    return found


def serf_version(serf: str) -> str:
    try:
        result = subprocess.run(
            [serf, "version"], capture_output=True, text=True, timeout=10, check=False
        )
        package = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "serf"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    version = result.stdout.splitlines()[0] if result.stdout else "unknown"
    return f"{version} (Debian package {package.stdout.strip() or 'unknown'})"


class SerfRpc:
    """A serf RPC client: handshake, then ``members``. Strings arrive as bytes."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._unpacker = msgpack.Unpacker(raw=True, max_buffer_size=16 << 20)
        self._seq = 0

    @classmethod
    async def connect(cls, host: str, port: int) -> SerfRpc:
        rpc = cls(await trio.open_tcp_stream(host, port))
        try:
            await rpc._call("handshake", {"Version": 1}, body=False)
        except BaseException:
            await rpc.aclose()
            raise
        return rpc

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def members(self) -> list[dict[bytes, Any]]:
        body = await self._call("members", None, body=True)
        members = body.get(b"Members") if isinstance(body, dict) else None
        if not isinstance(members, list):
            raise OSError("serf answered members without a list")
        return members

    async def _call(self, command: str, argument: object, *, body: bool) -> Any:
        seq = self._seq
        self._seq += 1
        message = msgpack.packb({"Command": command, "Seq": seq})
        if argument is not None:
            message += msgpack.packb(argument)
        await self._stream.send_all(message)
        header = await self._next()
        if not isinstance(header, dict) or header.get(b"Seq") != seq:
            raise OSError(f"serf answered out of order: {header!r}")
        if header.get(b"Error"):
            raise OSError(f"serf: {header[b'Error'].decode(errors='replace')}")
        return await self._next() if body else None

    async def _next(self) -> Any:
        while True:
            try:
                return next(self._unpacker)
            except StopIteration:
                chunk = await self._stream.receive_some(65536)
                if not chunk:
                    raise OSError("serf closed the RPC connection") from None
                self._unpacker.feed(chunk)


async def serf_alive_members(host: str, port: int = RPC_PORT) -> int | None:
    """Members ``serf members`` would show alive at this agent, None if it cannot answer."""
    try:
        rpc = await SerfRpc.connect(host, port)
    except OSError:
        return None
    try:
        members = await rpc.members()
    except OSError:
        return None
    finally:
        await rpc.aclose()
    return sum(int(member.get(b"Status") == b"alive") for member in members)


async def _alive_at(hosts: list[str], index: int) -> int | None:
    return await serf_alive_members(hosts[index])


def agent_argv(serf: str, index: int, host: str, key: str, seed: str | None) -> list[str]:
    argv = [
        serf,
        "agent",
        f"-node=agent{index}",
        f"-bind={host}:{GOSSIP_PORT}",
        f"-rpc-addr={host}:{RPC_PORT}",
        f"-encrypt={key}",
        "-log-level=err",
    ]
    if seed is not None:
        argv.append(f"-join={seed}:{GOSSIP_PORT}")
    return argv


async def members_run_serf(serf: str, nodes: int, limit: float, poll: float) -> MembersRun:
    """``nodes`` serf agents on 127.0.0.1 .. 127.0.0.``nodes``, the first one the seed
    (``-join``) of all; until each lists every agent alive."""
    hosts = [f"127.0.0.{i + 1}" for i in range(nodes)]
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    seen: list[float] = []
    failure: str | None = None
    async with open_procs() as procs:
        with trio.move_on_after(limit) as scope:
            seed = await procs.spawn(
                agent_argv(serf, 0, hosts[0], key, None), "agent0", SERF_MARKERS
            )
            await wait_until(procs, marked(seed, "running"))
            for i in range(1, nodes):
                await procs.spawn(
                    agent_argv(serf, i, hosts[i], key, hosts[0]), f"agent{i}", SERF_MARKERS
                )
            seen = await poll_members(nodes, partial(_alive_at, hosts), nodes, poll)
        cpu = sum(task_cpu_seconds(p.pid) for p in procs.procs)
        exited = [p for p in procs.procs if p.exited is not None]
        if exited:
            failure = f"{exited[0].name} exited {exited[0].process.returncode}: {exited[0].tail(2)}"
        elif scope.cancelled_caught:
            failure = f"not converged after {limit:g}s"
    return MembersRun(procs.procs, seen, cpu, failure)


async def membership_serf(
    nodes: int, runs: int, limit: float, poll: float, report: Callable[[str], None]
) -> Series:
    serf = ensure_serf(report)
    series = Series(
        key=f"members/serf/n{nodes}/lan",
        label=f"serf membership, {nodes} agents, loopback, 1 seed (-join), profile lan",
        limit=limit,
        load_before=os.getloadavg()[0],
        notes=f"{serf_version(serf)}; poll every {poll:g}s per agent over serf's RPC",
    )
    for run in range(runs):
        result = await members_run_serf(serf, nodes, limit, poll)
        if result.failure is not None:
            series.failures.append(result.failure)
            report(f"  run {run + 1}/{runs}: failed: {result.failure}")
        else:
            add_convergence(series, result.procs, result.seen, result.cpu_s, "agent")
            report(f"  run {run + 1}/{runs}: {series.primary[-1]:.3f}s from last start")
    return series
