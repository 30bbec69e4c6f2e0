"""Tier 3: the one-frame attacks of issue 15 and a fuzz run against a live process.

A real ``rancherd discover`` process on loopback is attacked from this process over raw
WebSocket connections (wsproto, so that the attacker can leave a close unanswered), then
a good peer is started: both must decide, and the attacked process must never have
exited. No root needed: every address is on ``lo`` (127.0.0.x).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import wsproto
import wsproto.events
from cli_harness import ENV, captured, discover_argv
from driver_harness import TOKEN_KEYS, MemoryStore
from test_real_loopback import TOKEN, Fleet, _peers_json

from rancherd.gossip.config import GossipConfig
from rancherd.gossip.core import GossipCore, Identity
from rancherd.gossip.driver import Driver
from rancherd.gossip.links import Links
from rancherd.gossip.messages import (
    EMPTY_VIEW_DIGEST,
    Ack,
    Gossip,
    Message,
    NodeRecord,
    Progress,
    Release,
    Role,
)
from rancherd.gossip.security import SecureChannel, TokenKeys
from rancherd.gossip.transport import ForwardingTransport, FrameConnection
from rancherd.gossip.ws_transport import WebSocketTransport

pytestmark = pytest.mark.real

KEYS = TokenKeys.derive(TOKEN)


class RawClient:
    """One WebSocket connection, frame by frame, with nothing answered automatically."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.closed_with: int | None = None
        self._pending: list[bytes] = []
        self._partial = b""

    @classmethod
    async def open(cls, host: str, port: int, source: str) -> RawClient:
        stream = await trio.open_tcp_stream(host, port, local_address=source)
        client = cls(stream)
        try:
            await stream.send_all(
                client.ws.send(wsproto.events.Request(host=host, target="/rancherd/v1/gossip"))
            )
            while not await client._pump(want_accept=True):
                pass
        except BaseException:
            stream.socket.close()
            raise
        return client

    async def _pump(self, *, want_accept: bool = False) -> bool:
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        self.ws.receive_data(data or None)
        accepted = False
        for event in self.ws.events():
            if isinstance(event, wsproto.events.AcceptConnection):
                accepted = True
            elif isinstance(event, wsproto.events.BytesMessage):
                self._partial += bytes(event.data)
                if event.message_finished:
                    self._pending.append(self._partial)
                    self._partial = b""
            elif isinstance(event, wsproto.events.CloseConnection):
                self.closed_with = event.code  # and never answered
            elif isinstance(event, wsproto.events.RejectConnection):
                raise ConnectionError("upgrade rejected")
        if not data and self.closed_with is None:
            self.closed_with = -1  # the TCP connection ended
        if want_accept and self.closed_with is not None:
            raise AssertionError("closed before the upgrade")
        return accepted

    async def send(self, frame: bytes) -> None:
        # Once the node hung up, what we send is lost, as it should be.
        with contextlib.suppress(trio.BrokenResourceError, wsproto.utilities.LocalProtocolError):
            await self.stream.send_all(self.ws.send(wsproto.events.BytesMessage(data=frame)))

    async def receive(self) -> bytes | None:
        """The next message, or None once the node closed."""
        while not self._pending and self.closed_with is None:
            await self._pump()
        return self._pending.pop(0) if self._pending else None

    async def wait_closed(self) -> int:
        with trio.fail_after(15):
            while self.closed_with is None:
                await self._pump()
        return self.closed_with

    async def aclose(self) -> None:
        await self.stream.aclose()


def record(node_id: str, heartbeat: int = 1) -> NodeRecord:
    return NodeRecord(
        node_id,
        1,
        1,
        heartbeat,
        Role.AGENT,
        ("127.0.0.66:1",),
        "127.0.0.66",
        EMPTY_VIEW_DIGEST,
        0,
        None,
        (),
        None,
        Progress.NONE,
    )


async def sealed_client(
    host: str, port: int, source: str, node_id: str, rng: random.Random
) -> tuple[RawClient, SecureChannel]:
    client = await RawClient.open(host, port, source)
    channel = SecureChannel(KEYS, node_id, 1, initiator=True, random_bytes=rng.randbytes)
    await client.send(channel.start())
    reply = await client.receive()
    assert reply is not None, client.closed_with
    for frame in channel.receive(reply).frames:
        await client.send(frame)
    return client, channel


async def start_victim(
    nursery: trio.Nursery, fleet: Fleet, tmp_path: Path
) -> tuple[trio.Process, Path]:
    log = tmp_path / "victim.log"
    argv = discover_argv(fleet.config(0), fleet.data_dir(0), wait=120)

    async def run(*, task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED) -> None:
        with log.open("wb") as stderr:
            await trio.run_process(
                argv,
                check=False,
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                task_status=task_status,
            )

    process: trio.Process = await nursery.start(run)
    await _peers_json(fleet.data_dir(0))
    return process, log


def tail(log: Path, size: int = 3000) -> str:
    return log.read_text()[-size:]


async def good_peer_decides(fleet: Fleet, victim: trio.Process, log: Path) -> None:
    assert victim.returncode is None, tail(log)
    second = await captured(discover_argv(fleet.config(1), fleet.data_dir(1)))
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    assert await victim.wait() == 0, tail(log)
    assert "Traceback" not in tail(log, 10**7)


async def test_one_frame_attacks_against_a_live_node(tmp_path: Path) -> None:
    """The token holder's frame that does not decode (close left unanswered), then an
    outsider's replayed hello followed by a binary frame, each several times: the node
    hangs up on each and still decides with a good peer."""
    fleet = Fleet(tmp_path, 2)
    host, port = fleet.hosts[0], fleet.port
    rng = random.Random(15)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            victim, log = await start_victim(nursery, fleet, tmp_path)
            held = []
            for attempt in range(5):
                node_id = f"{attempt + 1:x}" * 32
                client, channel = await sealed_client(
                    host, port, f"127.0.1.{attempt + 1}", node_id, rng
                )
                await client.send(channel.seal(Gossip((record(node_id),), True)))
                await client.send(channel.seal(Gossip((record(node_id),), True), encoded=b"\xc1"))
                held.append(client)  # never read: the node's close stays unanswered
            recorded = SecureChannel(KEYS, "a" * 32, 99, initiator=True, random_bytes=os.urandom)
            hello = recorded.start()
            for attempt in range(20):
                client = await RawClient.open(host, port, f"127.0.2.{attempt + 1}")
                await client.send(hello)
                assert await client.receive() is not None  # the node answers the hello ...
                await client.send(rng.randbytes(rng.choice([1, 24, 200])))
                assert await client.wait_closed() == 1008  # ... and hangs up on what follows
                await client.aclose()
            await good_peer_decides(fleet, victim, log)
            for client in held:
                await client.aclose()


def fuzz_frames(channel: SecureChannel, node_id: str, rng: random.Random) -> list[bytes]:
    """Frames for one established connection: valid, invalid-but-sealed, and at the end
    one that does not open (bit flip, replay, reorder, garbage, undecodable, a hello)."""
    messages: list[Message] = [Gossip((record(node_id, heartbeat=2),), rng.random() < 0.5)]
    for n in range(rng.randrange(3, 25)):
        choices: list[Message] = [
            Gossip((record(node_id, heartbeat=3 + n),), False),
            Release("f" * 32, n, 1),  # names another proposer: a violation
            Ack("0" * 32, n, 1, node_id),  # an ack for a round nobody ran
        ]
        messages.append(rng.choice(choices))
    frames = [channel.seal(m) for m in messages]
    last = channel.seal(Release(node_id, 1, 1))
    ending = rng.choice(["flip", "replay", "reorder", "garbage", "undecodable", "hello"])
    if ending == "flip":
        index = rng.randrange(len(last))
        frames.append(last[:index] + bytes([last[index] ^ 0x10]) + last[index + 1 :])
    elif ending == "replay":
        frames.append(frames[rng.randrange(len(frames))])
    elif ending == "reorder":
        frames.append(channel.seal(Release(node_id, 2, 1)))  # skips ``last``
    elif ending == "garbage":
        frames.append(rng.randbytes(rng.randrange(0, 3000)))
    elif ending == "undecodable":
        frames.append(channel.seal(Release(node_id, 3, 1), encoded=rng.randbytes(40)))
    else:
        frames.append(
            SecureChannel(KEYS, node_id, 2, initiator=True, random_bytes=os.urandom).start()
        )
    return frames


async def test_fuzzed_frames_against_a_live_node(tmp_path: Path) -> None:
    """Issue 15's fuzz test: a few thousand frames, sealed and unsealed, including frames
    that fail to open on an established link; the node is alive at the end and elects."""
    fleet = Fleet(tmp_path, 2)
    host, port = fleet.hosts[0], fleet.port
    rng = random.Random(1515)
    sent = sealed_frames = connections = 0
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            victim, log = await start_victim(nursery, fleet, tmp_path)
            for attempt in range(400):
                source = f"127.0.3.{attempt % 200 + 1}"
                connections += 1
                if attempt % 2:
                    client = await RawClient.open(host, port, source)
                    frames = [rng.randbytes(rng.randrange(0, 400)) for _ in range(3)]
                else:
                    node_id = rng.randbytes(16).hex()
                    client, channel = await sealed_client(host, port, source, node_id, rng)
                    frames = fuzz_frames(channel, node_id, rng)
                    sealed_frames += len(frames)
                for frame in frames:
                    await client.send(frame)
                sent += len(frames)
                await client.wait_closed()
                await client.aclose()
                assert victim.returncode is None, tail(log)
            await good_peer_decides(fleet, victim, log)
    assert sent >= 3000, sent
    assert sealed_frames >= 2000, sealed_frames
    text = tail(log, 10**7)
    # One WARNING per peer at most for its protocol violations (issue 15.7), and the
    # closed connections as a summary at most every 10 s.
    assert text.count("broke the protocol") <= connections // 2 + 1


class Flood:
    """Counts the silent connections opened; ``reached`` once there are ``target``."""

    def __init__(self, target: int) -> None:
        self.opened = 0
        self.target = target
        self.reached = trio.Event()

    def count(self) -> None:
        self.opened += 1
        if self.opened >= self.target:
            self.reached.set()


async def _hold_silent(host: str, port: int, source: str, flood: Flood) -> None:
    """One silent connection, opened again 0.2 s after the node closes it. (Without the
    pause the attacker's reconnect loop, on the same two cores as the nodes, measures
    this machine's CPU rather than the node's slots.)"""
    while True:
        try:
            stream = await trio.open_tcp_stream(host, port, local_address=source)
        except OSError:
            await trio.sleep(0.05)  # not listening yet
            continue
        flood.count()
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                while await stream.receive_some(4096):
                    pass
        await trio.sleep(0.2)


async def _election_seconds(fleet: Fleet, flood: int) -> tuple[float, int]:
    """Seconds from the start of the third of three discover processes until all three
    decided, with ``flood`` silent connections per node held from 100 addresses
    (127.0.5.1 .. 127.0.5.100), in place before the third one starts."""
    argvs = [discover_argv(fleet.config(i), fleet.data_dir(i), wait=60) for i in range(3)]
    counter = Flood(2 * flood)
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def run(argv: list[str]) -> None:
        results.append(await captured(argv))

    async with trio.open_nursery() as nursery:
        for host in fleet.hosts:
            for index in range(flood):
                source = f"127.0.5.{index % 100 + 1}"
                nursery.start_soon(_hold_silent, host, fleet.port, source, counter)
        async with trio.open_nursery() as processes:
            for argv in argvs[:2]:
                processes.start_soon(run, argv)
            await _peers_json(fleet.data_dir(0))
            await _peers_json(fleet.data_dir(1))
            if flood:
                await counter.reached.wait()
            start = trio.current_time()
            processes.start_soon(run, argvs[2])
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    for result in results:
        assert result.returncode == 0, result.stderr.decode()[-2000:]
    decided = [json.loads(r.stdout) for r in results]
    assert len({d["cluster_id"] for d in decided}) == 1
    return elapsed, counter.opened


async def test_800_silent_connections_barely_delay_an_election(tmp_path: Path) -> None:
    """Issue 15.4: 800 silent connections per node from 100 addresses, opened again as
    soon as they are closed, took a 3-server election from ~1 s to 37-60 s when they
    could fill every slot. Evicting unauthenticated connections first keeps the delay
    within 2 s on a quiet machine (measured; the bound here leaves room for a loaded
    CI machine, and still fails at once without eviction)."""
    for name in ("quiet", "flood"):
        (tmp_path / name).mkdir()
    with trio.fail_after(150):
        baseline, _ = await _election_seconds(Fleet(tmp_path / "quiet", 3), 0)
        attacked, opened = await _election_seconds(Fleet(tmp_path / "flood", 3), 800)
    print(f"election {baseline:.2f} s quiet, {attacked:.2f} s under {opened} silent connections")
    assert opened >= 2 * 800
    # Measured: 1.6-1.9 s of delay (0.8-1.1 s quiet, 2.5-3.0 s flooded) with this
    # machine's load average at 34-54; before eviction the election did not finish in 60 s.
    assert attacked - baseline <= 10.0, (baseline, attacked)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _ping_flood(host: str, port: int, source: str, sent: list[int]) -> None:
    """Pings as fast as the node takes them, never reading a pong; again when closed."""
    while True:
        try:
            client = await RawClient.open(host, port, source)
        except (OSError, ConnectionError, AssertionError, wsproto.utilities.RemoteProtocolError):
            await trio.sleep(0.05)  # evicted during the upgrade, or not listening yet
            continue
        batch = client.ws.send(wsproto.events.Ping(payload=bytes(125))) * 500
        try:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while True:
                    await client.stream.send_all(batch)
                    sent[0] += 500
        finally:
            client.stream.socket.close()


async def test_a_ping_flood_costs_a_node_little_memory(tmp_path: Path) -> None:
    """Issue 15.4: 200 connections sending pings whose pongs they never read grew a node's
    RSS from 50 to ~180 MB, never released (42 to 134 MB measured here before the fix).
    A ping now closes its connection, and unauthenticated connections read 4 KiB at a
    time: 42 to ~50 MB."""
    fleet = Fleet(tmp_path, 2)
    sent = [0]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            victim, log = await start_victim(nursery, fleet, tmp_path)
            before = rss_mb(victim.pid)
            async with trio.open_nursery() as flood:
                for index in range(200):
                    source = f"127.0.6.{index % 100 + 1}"
                    flood.start_soon(_ping_flood, fleet.hosts[0], fleet.port, source, sent)
                await trio.sleep(8)  # the length of the attack, not a synchronisation
                flood.cancel_scope.cancel()
            after = rss_mb(victim.pid)
            print(f"RSS {before:.1f} MB before, {after:.1f} MB after {sent[0]} pings")
            assert sent[0] > 100_000
            assert after - before < 30, (before, after)
            await good_peer_decides(fleet, victim, log)


class TamperingProxy:
    """A TCP proxy on loopback in front of one node: after the first ``clean`` bytes of
    each connection (the upgrade and the sealed handshake), each chunk towards the node
    is, with probability ``rate``, bit-flipped, duplicated or held back and sent after
    the next one."""

    def __init__(self, target: tuple[str, int], seed: int, rate: float, clean: int) -> None:
        self.target = target
        self.rng = random.Random(seed)
        self.rate = rate
        self.clean = clean
        self.tampered: dict[str, int] = {"flip": 0, "duplicate": 0, "reorder": 0}
        self.enough = trio.Event()
        """Set once 10 chunks were tampered with."""

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, inbound: trio.SocketStream) -> None:
        try:
            outbound = await trio.open_tcp_stream(*self.target)
        except OSError:
            await inbound.aclose()
            return
        async with inbound, outbound, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, outbound, inbound, False, nursery.cancel_scope)
            await self._pump(inbound, outbound, True, nursery.cancel_scope)

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        tamper: bool,
        scope: trio.CancelScope,
    ) -> None:
        passed = 0
        held: bytes | None = None
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(65536):
                passed += len(data)
                kind = None
                if tamper and passed > self.clean and self.rng.random() < self.rate:
                    kind = self.rng.choice(list(self.tampered))
                    self.tampered[kind] += 1
                    if sum(self.tampered.values()) >= 10:
                        self.enough.set()
                if held is not None:
                    await sink.send_all(data)
                    data, held = held, None
                elif kind == "reorder":
                    held = data
                    continue
                elif kind == "flip":
                    index = self.rng.randrange(len(data))
                    data = data[:index] + bytes([data[index] ^ 0x04]) + data[index + 1 :]
                await sink.send_all(data)
                if kind == "duplicate":
                    await sink.send_all(data)
        scope.cancel()


class ViaProxy(ForwardingTransport):
    """The websocket transport, but every dial to a proxied address goes to its proxy."""

    def __init__(self, inner: WebSocketTransport, proxies: dict[str, str]) -> None:
        super().__init__(inner)
        self.proxies = proxies

    async def connect(self, address: str) -> FrameConnection:
        return await super().connect(self.proxies.get(address, address))


async def _run_node(
    transport: ViaProxy,
    links: Links,
    driver: Driver,
    seeds: list[str],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with transport, trio.open_nursery() as nursery:
        await nursery.start(links.run)
        await nursery.start(driver.run, links)
        driver.discovered_nowait(seeds)
        task_status.started()


def free_loopback_port(host: str) -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


async def test_tampering_through_a_loopback_proxy_never_kills_a_node() -> None:
    """Issue 15.1: duplicate, reorder or bit flip in flight on live links, through a TCP
    proxy on loopback in front of each node (every dial goes through it). Links die and
    are dialled again, no node stops, and the three servers decide once."""
    local = GossipConfig.local()
    # A decided fleet keeps the election's pace, so tampering meets live links quickly.
    config = replace(local, expected_servers=3, decided_gossip_interval=local.gossip_interval)
    hosts = [f"127.0.0.{i + 1}" for i in range(3)]
    ports = [free_loopback_port(host) for host in hosts]
    addresses = [f"{h}:{p}" for h, p in zip(hosts, ports, strict=True)]
    proxies: dict[str, str] = {}
    tampering: list[TamperingProxy] = []
    links: list[Links] = []
    drivers: list[Driver] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for index, target in enumerate(zip(hosts, ports, strict=True)):
                proxy = TamperingProxy(target, index, rate=0.1, clean=512)
                proxy_port = await nursery.start(proxy.serve)
                proxies[addresses[index]] = f"127.0.0.1:{proxy_port}"
                tampering.append(proxy)
            for index, host in enumerate(hosts):
                rng = random.Random(index)
                node_id = rng.randbytes(16).hex()
                identity = Identity(node_id, Role.SERVER, (addresses[index],), host)
                core = GossipCore(config, identity, None, rng, trio.current_time())
                driver = Driver(core, MemoryStore())
                transport = ViaProxy(WebSocketTransport(host, ports[index]), proxies)
                link = Links(
                    transport,
                    TOKEN_KEYS,
                    node_id,
                    core.boot_id,
                    driver.deliver,
                    rng=rng,
                    random_bytes=os.urandom,
                    keep=core.wants_record,
                )
                await nursery.start(_run_node, transport, link, driver, addresses)
                links.append(link)
                drivers.append(driver)
            for driver in drivers:
                await driver.wait_decided()
            for proxy in tampering:  # decided nodes gossip on: tamper with that too
                await proxy.enough.wait()
            nursery.cancel_scope.cancel()
    assert len({driver.core.decision for driver in drivers}) == 1
    total = {kind: sum(p.tampered[kind] for p in tampering) for kind in tampering[0].tampered}
    rejected = [link.statistics.rejected for link in links]
    print(f"tampered {total}; connections rejected per node {rejected}")
    assert sum(total.values()) >= 30
    assert sum(rejected) > 0  # some tampering reached the sealed channels
