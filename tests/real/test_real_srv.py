"""Tier 3: ``provider=srv`` with a real DNS server, one node per network namespace.

dnsmasq (Debian ``dnsmasq-base``) runs in a namespace of its own on the lab's bridge and
serves one SRV record per server (``_rancher-server._tcp.rancherd.test``) and an A record
per target. Three servers find each other through it and elect one cluster-init; then the
records gain a fourth server (dnsmasq reads SRV records only at start, so it is started
again with them, as an operator's DNS server would be reloaded), which finds the three,
learns their decision and joins it. Needs root, ``ip`` and dnsmasq; skips with the reason
elsewhere. Traffic stays on the lab's bridge.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from cli_harness import ENV, discover_argv
from netns import Lab, Namespace, netns_lab, skip_unless_netns, stop_process

pytestmark = pytest.mark.real

TOKEN = "srv netns test token"
DOMAIN = "rancherd.test"
QNAME = f"_rancher-server._tcp.{DOMAIN}"


@pytest.fixture
def lab() -> Iterator[Lab]:
    skip_unless_netns()
    if shutil.which("dnsmasq") is None:
        pytest.skip("needs dnsmasq (Debian package dnsmasq-base)")
    with netns_lab(5) as lab:
        yield lab


@asynccontextmanager
async def dnsmasq(dns: Namespace, servers: Sequence[Namespace]) -> AsyncIterator[None]:
    """dnsmasq in ``dns`` serving an SRV record (port 8443) and an A record per server,
    until exit. Returns once it listens (its "started" line, printed after binding)."""
    argv = [
        "dnsmasq",
        "--keep-in-foreground",
        "--log-facility=-",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--pid-file",
        "--bind-interfaces",
        f"--listen-address={dns.address}",
        f"--local=/{DOMAIN}/",  # NXDOMAIN for any other name in the domain, no forwarding
    ]
    for index, server in enumerate(servers):
        target = f"n{index}.{DOMAIN}"
        argv += [f"--srv-host={QNAME},{target},8443", f"--host-record={target},{server.address}"]
    process = await dns.open_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    try:
        log = b""
        with trio.fail_after(10):
            while b"started, version" not in log:
                chunk = await process.stderr.receive_some()
                if not chunk:
                    raise RuntimeError(f"dnsmasq exited: {log.decode(errors='replace')}")
                log += chunk
        yield
    finally:
        await stop_process(process)


def srv_config(path: Path, dns: Namespace) -> Path:
    path.write_text(
        "role: server\n"
        f"token: {json.dumps(TOKEN)}\n"
        "discovery:\n"
        "  params:\n"
        "    provider: srv\n"
        "    service: rancher-server\n"
        f"    domain: {DOMAIN}\n"
        f"    nameservers: {dns.address}\n"
        "  expectedServers: 3\n"
    )
    return path


class Run:
    """A ``rancherd discover`` process, its output read as it comes."""

    def __init__(self) -> None:
        self._grew = trio.Event()
        self.stderr = b""
        self.stdout = b""
        self.returncode: int | None = None

    async def __call__(self, namespace: Namespace, argv: list[str]) -> None:
        """Run it until it exits, or until cancelled: then SIGTERM it and read what it
        prints on the way out (a lingering node prints its decision then)."""
        process = await namespace.open_process(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
        )
        try:
            await self._read(process)
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.terminate()
                with trio.move_on_after(15):
                    await self._read(process)
                self.returncode = await stop_process(process)

    async def _read(self, process: trio.Process) -> None:
        assert process.stdout is not None
        assert process.stderr is not None
        stdout, stderr = process.stdout, process.stderr

        async def read_stdout() -> None:
            while chunk := await stdout.receive_some():
                self.stdout += chunk

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_stdout)
            while chunk := await stderr.receive_some():
                self.stderr += chunk
                self._grew.set()
                self._grew = trio.Event()

    async def wait_logged(self, text: str) -> None:
        """Until the node has logged ``text``."""
        while text.encode() not in self.stderr:
            await self._grew.wait()

    def outcome(self) -> dict[str, object]:
        assert self.returncode == 0, self.stderr.decode(errors="replace")[-3000:]
        document = json.loads(self.stdout)
        assert isinstance(document, dict)
        return document


async def test_servers_find_each_other_through_srv_records(lab: Lab, tmp_path: Path) -> None:
    *nodes, dns = lab.namespaces
    config = srv_config(tmp_path / "config.yaml", dns)
    runs = [Run() for _ in nodes]

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            async with dnsmasq(dns, nodes[:3]):
                for index in range(3):
                    argv = discover_argv(config, tmp_path / f"d{index}", wait=40, linger=60)
                    nursery.start_soon(runs[index], nodes[index], argv)
                for run in runs[:3]:
                    await run.wait_logged("decided:")
            # The records gain the fourth server; the DNS server is reloaded with them.
            async with dnsmasq(dns, nodes):
                argv = discover_argv(config, tmp_path / "d3", wait=30)
                await runs[3](nodes[3], argv)
                # The three ask again when the TTL (0 here: the 5 s floor) runs out.
                for run in runs[:3]:
                    await run.wait_logged(f"{QNAME}. gives 4 addresses")
            # The three were lingering to answer late nodes: stop them (SIGTERM).
            nursery.cancel_scope.cancel()

    first = [run.outcome() for run in runs[:3]]
    (cluster,) = {o["cluster_id"] for o in first}
    inits = [i for i, o in enumerate(first) if o["role"] == "cluster-init"]
    assert len(inits) == 1, first
    init_address = nodes[inits[0]].address
    assert {o["server_url"] for i, o in enumerate(first) if i not in inits} == {
        f"https://{init_address}:6443"
    }
    late = runs[3].outcome()
    assert late["cluster_id"] == cluster
    assert late["role"] == "server"
    assert late["server_url"] == f"https://{init_address}:6443"
