"""The mdns provider on a real (namespaced) network, and against avahi.

Each node is a separate Python process in its own network namespace (``netns.py``), running
the provider and printing its answers as JSON lines. Root only; skipped elsewhere with the
reason. The avahi tests also need the Debian packages avahi-daemon, avahi-utils and dbus.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from netns import (
    Avahi,
    Lab,
    Namespace,
    avahi_daemon,
    netns_lab,
    skip_unless_avahi,
    skip_unless_netns,
    stop_process,
)

pytestmark = pytest.mark.real

SERVICE = "rancher-server"

PEER = """
import json, os, sys, trio
from rancherd.discovery.mdns import MdnsProvider
from rancherd.discovery.params import DiscoveryParams, MdnsParams
from rancherd.discovery.provider import Advertisement

def emit(**fields):
    print(json.dumps(fields), flush=True)

async def main(params, node_id, port, txt, refresh):
    provider = MdnsProvider(
        DiscoveryParams.parse(params).typed_as(MdnsParams), refresh=float(refresh)
    )
    advertisement = Advertisement(node_id, int(port), txt=json.loads(txt))
    send, receive = trio.open_memory_channel(0)
    async with trio.open_nursery() as nursery:
        async def stop_at_end_of_input():
            stdin = trio.lowlevel.FdStream(os.dup(0))
            while await stdin.receive_some():
                pass
            nursery.cancel_scope.cancel()
        nursery.start_soon(stop_at_end_of_input)
        start = trio.current_time()
        await nursery.start(provider.run, advertisement, send)
        emit(event="started", t=trio.current_time() - start)
        async for answer in receive:
            emit(event="answer", t=trio.current_time() - start, answer=sorted(answer))
    emit(event="stopped")

trio.run(main, *sys.argv[1:])
"""


@dataclass
class Peer:
    """One provider process and what it said."""

    namespace: Namespace
    port: int
    process: trio.Process
    answers: list[tuple[float, frozenset[str]]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def endpoint(self) -> str:
        return f"{self.namespace.address}:{self.port}"

    @property
    def latest(self) -> frozenset[str]:
        return self.answers[-1][1] if self.answers else frozenset()

    async def wait_until(self, check: Callable[[Peer], bool]) -> None:
        """Wait until ``check(self)`` holds; bound it with ``trio.fail_after``."""
        while not check(self):
            await self._changed.wait()

    async def read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        while chunk := await self.process.stdout.receive_some():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                message: dict[str, Any] = json.loads(line)
                self.events.append(message["event"])
                if message["event"] == "answer":
                    self.answers.append((message["t"], frozenset(message["answer"])))
                self._changed.set()
                self._changed = trio.Event()
        self.events.append("eof")
        self._changed.set()

    async def stop(self) -> None:
        """Close its input: the provider withdraws its advertisement and the process ends."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()


@asynccontextmanager
async def peers(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Any]]:
    """Yield ``start(namespace, node_id, port, params=..., txt=...) -> Peer``; every peer
    is stopped (and killed if it hangs) on exit."""
    started: list[Peer] = []

    async def start(
        namespace: Namespace,
        node_id: str,
        port: int,
        params: str = f"provider=mdns service={SERVICE}",
        txt: dict[str, str] | None = None,
        refresh: float = 1.0,
    ) -> Peer:
        args = [
            sys.executable,
            "-c",
            PEER,
            params,
            node_id,
            str(port),
            json.dumps(txt or {}),
            str(refresh),
        ]
        process = await namespace.open_process(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        peer = Peer(namespace, port, process)
        started.append(peer)
        nursery.start_soon(peer.read)
        return peer

    try:
        yield start
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(15):
            for peer in started:
                if peer.process.returncode is None:
                    await peer.stop()
            for peer in started:
                with trio.move_on_after(5):
                    await peer.process.wait()
                await stop_process(peer.process)


@contextmanager
def lab_of(count: int) -> Iterator[Lab]:
    skip_unless_netns()
    with netns_lab(count) as lab:
        yield lab


def node_id(i: int) -> str:
    return f"{i:x}" * 32


async def test_three_namespaces_find_each_other_and_goodbye_withdraws(
    record_property: Callable[[str, object], None],
) -> None:
    with lab_of(3) as lab:
        ns = lab.namespaces
        async with trio.open_nursery() as nursery, peers(nursery) as start:
            first = await start(ns[0], node_id(1), 9001)
            second = await start(ns[1], node_id(2), 9002)
            with trio.fail_after(15):
                await first.wait_until(lambda p: second.endpoint in p.latest)
                await second.wait_until(lambda p: first.endpoint in p.latest)

            # A node started later: how soon does it see the two already advertising?
            late = await start(ns[2], node_id(3), 9003)
            everyone = {first.endpoint, second.endpoint, late.endpoint}
            with trio.fail_after(15):
                for peer in (first, second, late):
                    await peer.wait_until(lambda p: everyone <= p.latest)
            latency = min(
                t for t, answer in late.answers if {first.endpoint, second.endpoint} <= answer
            )
            record_property("mdns_first_answer_seconds", latency)
            print(f"late node saw both peers {latency * 1000:.1f} ms after starting")
            assert latency < 2.0

            # Stopping one sends a goodbye: the others drop it at once, not after a TTL.
            await first.stop()
            with trio.fail_after(5):
                for peer in (second, late):
                    await peer.wait_until(lambda p: first.endpoint not in p.latest)
                assert await first.process.wait() == 0
                # The process can be reaped before its output is read to the end.
                await first.wait_until(lambda p: "eof" in p.events)
            assert first.events[-2:] == ["stopped", "eof"]
            assert {second.endpoint, late.endpoint} <= second.latest


async def test_an_address_that_comes_later_is_used_at_once(
    record_property: Callable[[str, object], None],
) -> None:
    """A node whose interface has no address yet cannot advertise; once the address is
    added, rtnetlink tells its provider at once (its ``refresh`` poll is 60 s away), and it
    finds and is found by a peer within a second."""
    with lab_of(2) as lab:
        a, b = lab.namespaces
        b.run(["ip", "addr", "flush", "dev", b.interface])
        async with trio.open_nursery() as nursery, peers(nursery) as start:
            first = await start(a, node_id(6), 9006)
            late = await start(b, node_id(7), 9007, refresh=60.0)
            with trio.fail_after(15):
                await late.wait_until(lambda p: "started" in p.events)
            assert first.endpoint not in late.latest
            added = trio.current_time()
            b.run(["ip", "addr", "add", f"{b.address}/{b.prefix_length}", "dev", b.interface])
            with trio.fail_after(10):
                await late.wait_until(lambda p: first.endpoint in p.latest)
                await first.wait_until(lambda p: late.endpoint in p.latest)
            took = trio.current_time() - added
            record_property("mdns_new_address_seconds", took)
            print(f"address added: both found each other {took * 1000:.0f} ms later")
            assert took < 5.0


async def test_ipv4_only_on_a_named_interface() -> None:
    with lab_of(2) as lab:
        a, b = lab.namespaces
        params = f"provider=mdns service={SERVICE} interface=eth0 v6=false"
        async with trio.open_nursery() as nursery, peers(nursery) as start:
            first = await start(a, node_id(4), 9004, params)
            second = await start(b, node_id(5), 9005, params)
            with trio.fail_after(15):
                await first.wait_until(lambda p: p.latest == {first.endpoint, second.endpoint})
                await second.wait_until(lambda p: p.latest == {first.endpoint, second.endpoint})


# --- Interoperability with avahi -------------------------------------------------------


@contextmanager
def avahi_lab(tmp_path: Path) -> Iterator[tuple[Avahi, Namespace]]:
    """Two namespaces: avahi-daemon in the first, the second for our provider."""
    skip_unless_avahi()
    with netns_lab(2) as lab, avahi_daemon(lab.namespaces[0], tmp_path) as avahi:
        yield avahi, lab.namespaces[1]


def browse_lines(avahi: Avahi) -> list[list[str]]:
    """Resolved ``_rancher-server._tcp`` services as avahi-browse -p fields."""
    result = avahi.run(
        ["avahi-browse", "--resolve", "--parsable", "--terminate", f"_{SERVICE}._tcp"]
    )
    return [line.split(";") for line in result.stdout.splitlines() if line.startswith("=")]


async def test_avahi_browse_sees_our_advertisement(tmp_path: Path) -> None:
    with avahi_lab(tmp_path) as (avahi, ours):
        async with trio.open_nursery() as nursery, peers(nursery) as start:
            await start(ours, node_id(12), 9443, txt={"v": "1", "role": "server"})
            found: list[list[str]] = []
            with trio.fail_after(20):
                while not found:
                    lines = await trio.to_thread.run_sync(browse_lines, avahi)
                    found = [f for f in lines if f[7:9] == [ours.address, "9443"]]
    [fields] = found
    # =;eth0;IPv4;name;type;domain;host;address;port;txt
    assert fields[3] == f"rancherd-{node_id(12)[:12]}"
    assert fields[6] == f"rancherd-{node_id(12)[:12]}.local"
    assert set(fields[9].split()) == {'"v=1"', '"role=server"'}


async def test_avahi_publish_reaches_our_browser(tmp_path: Path) -> None:
    with avahi_lab(tmp_path) as (avahi, ours):
        name = f"rdt-avahi-{secrets.token_hex(3)}"
        theirs = f"{avahi.namespace.address}:8443"
        async with trio.open_nursery() as nursery, peers(nursery) as start:
            peer = await start(ours, node_id(13), 9443)
            publish = await trio.lowlevel.open_process(
                avahi.command(["avahi-publish", "-s", name, f"_{SERVICE}._tcp", "8443"]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                with trio.fail_after(15):
                    await peer.wait_until(lambda p: theirs in p.latest)
            finally:
                await stop_process(publish)
            # avahi-publish withdraws on SIGTERM; our browser drops it at once.
            with trio.fail_after(5):
                await peer.wait_until(lambda p: theirs not in p.latest)
            assert peer.endpoint in peer.latest
