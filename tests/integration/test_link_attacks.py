"""One bad frame never kills a node (issue 15.1), in process on ``MockClock``.

Every attack of the issue, against the production stack below discovery (core, driver,
links, sealed channels) over the in-memory transport: a token holder that sends its
own-record Gossip and then one sealed frame that does not decode and never answers the
close; an outsider replaying a recorded hello on a new connection, then any binary frame;
tampering in flight (duplicate, reorder, bit flip) on live links. Each time the attacked
node keeps running, drops the bad link at once, and still decides with good peers. The
same attacks against real processes on loopback are in ``test_real_attacks.py``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import pytest
import trio
import trio.testing
from driver_harness import TOKEN_KEYS, Fleet, fleet
from driver_harness import TestNode as Node

from rancherd.gossip.driver import ViolationLog
from rancherd.gossip.messages import (
    EMPTY_VIEW_DIGEST,
    Address,
    Gossip,
    NodeRecord,
    Progress,
    Release,
    Role,
)
from rancherd.gossip.security import SecureChannel
from rancherd.gossip.transport import (
    CLOSE_POLICY,
    ConnectionClosed,
    ForwardingConnection,
    ForwardingTransport,
    FrameConnection,
    Transport,
)

ATTACKER = "e" * 32
ATTACKER_ADDRESS = "10.0.0.66:8443"  # nobody listens there: redials fail


def own_record(node_id: str = ATTACKER, heartbeat: int = 1) -> NodeRecord:
    return NodeRecord(
        node_id,
        1,
        1,
        heartbeat,
        Role.AGENT,
        (ATTACKER_ADDRESS,),
        "10.0.0.66",
        EMPTY_VIEW_DIGEST,
        0,
        None,
        (),
        None,
        Progress.NONE,
    )


async def open_channel(
    f: Fleet, target: Node, node_id: str = ATTACKER, source: Address = ATTACKER_ADDRESS
) -> tuple[FrameConnection, SecureChannel]:
    """A token holder's established connection to ``target``."""
    probe = f.network.transport(source, f.limits)
    connection = await probe.connect(target.address)
    channel = SecureChannel(
        TOKEN_KEYS, node_id, 1, initiator=True, random_bytes=random.Random(node_id).randbytes
    )
    await connection.send(channel.start())
    for frame in channel.receive(await connection.receive()).frames:
        await connection.send(frame)
    assert channel.established
    return connection, channel


async def until(predicate: Callable[[], bool], limit: float = 30.0) -> None:
    """Poll ``predicate`` every 50 ms (virtual time) for up to ``limit`` seconds."""
    for _ in range(round(limit / 0.05)):
        if predicate():
            return
        await trio.sleep(0.05)
    raise AssertionError(f"condition not reached within {limit} s")


async def close_code(connection: FrameConnection) -> int | None:
    """Read until the node closes the connection; its close code."""
    with trio.fail_after(30):
        while True:
            try:
                await connection.receive()
            except ConnectionClosed as closed:
                return closed.code


def linked_to(node: Node, peer: str) -> bool:
    assert node.links is not None
    return any(info.peer == peer for info in node.links.links())


async def decide_with_good_peers(f: Fleet, victim: Node) -> None:
    """Start two more servers: the victim, still running, decides with them."""
    for name in ("b", "c"):
        await f.start(f.add(name))
    with trio.fail_after(60):
        await f.wait_all_decided()
    assert not victim.stopped.is_set()
    assert len(f.decisions()) == 1


async def test_a_token_holder_sending_one_undecodable_frame_is_dropped_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with fleet(expected_servers=3) as f:
        victim = f.add("a")
        await f.start(victim, seeds=[])
        connection, channel = await open_channel(f, victim)
        await connection.send(channel.seal(Gossip((own_record(),), True)))
        await until(lambda: linked_to(victim, ATTACKER))
        # A sealed frame whose plaintext is not a message (0xc1 is never used by msgpack).
        await connection.send(channel.seal(Gossip((own_record(),), True), encoded=b"\xc1"))
        # The link is gone at once, while the close handshake is left unanswered.
        await until(lambda: not linked_to(victim, ATTACKER), limit=0.5)
        assert victim.links is not None
        assert victim.links.statistics.rejected == 1
        # The victim keeps sending to the attacker (its reply was asked for): each send
        # dials a new connection to the attacker's address instead of sealing onto the
        # dead channel, and those dials fail (nobody listens there).
        await until(lambda: victim.links is not None and victim.links.statistics.dials >= 1)
        await decide_with_good_peers(f, victim)


@pytest.mark.parametrize("then", ["random", "sealed", "nothing"])
async def test_a_replayed_hello_is_worthless(
    autojump_clock: trio.testing.MockClock, then: str
) -> None:
    """An outsider replays a hello recorded from the fleet (here: b's, from an earlier
    boot) on a new connection to a, then sends any binary frame. a answers the hello but
    registers nothing: its live link to b stays as it was."""
    async with fleet(expected_servers=3) as f:
        victim, b = f.add("a"), f.add("b")
        await f.start(victim, seeds=[b.address])
        await f.start(b, seeds=[victim.address])
        await until(lambda: linked_to(victim, b.node_id))
        assert victim.links is not None
        [before] = [i for i in victim.links.links() if i.peer == b.node_id]
        recorded = SecureChannel(
            TOKEN_KEYS, b.node_id, 12345, initiator=True, random_bytes=random.Random(1).randbytes
        ).start()
        outsider = f.network.transport("10.0.0.77:1", f.limits)
        connection = await outsider.connect(victim.address)
        await connection.send(recorded)
        await connection.receive()  # the reply: useless without the ephemeral key
        if then == "random":
            await connection.send(random.Random(2).randbytes(24))
        elif then == "sealed":
            await connection.send(random.Random(3).randbytes(300))
        code = await close_code(connection)
        assert code == CLOSE_POLICY or (then == "nothing" and code is not None)
        [after] = [i for i in victim.links.links() if i.peer == b.node_id]
        assert after.since == before.since
        assert victim.links.statistics.duplicates_closed == 0
        await f.start(f.add("c"))
        with trio.fail_after(60):
            await f.wait_all_decided()
        assert not victim.stopped.is_set()
        assert len(f.decisions()) == 1


class TamperingConnection(ForwardingConnection):
    """Duplicates, reorders or flips a bit in some frames it sends."""

    def __init__(self, inner: FrameConnection, tamper: Tamper) -> None:
        super().__init__(inner)
        self._tamper = tamper
        self._held: bytes | None = None

    async def send(self, frame: bytes) -> None:
        tamper = self._tamper
        kind = tamper.pick()
        if self._held is not None:
            await self.inner.send(frame)  # the later frame first ...
            frame, self._held = self._held, None  # ... then the held one
        elif kind == "reorder":
            self._held = frame
            return
        elif kind == "flip":
            index = tamper.rng.randrange(len(frame))
            flipped = frame[index] ^ 1 << tamper.rng.randrange(8)
            frame = frame[:index] + bytes([flipped]) + frame[index + 1 :]
        await self.inner.send(frame)
        if kind == "duplicate":
            await self.inner.send(frame)


class Tamper:
    def __init__(self, seed: int, rate: float, kinds: tuple[str, ...]) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.kinds = kinds
        self.done: dict[str, int] = dict.fromkeys(kinds, 0)

    def pick(self) -> str | None:
        if self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(self.kinds)
        self.done[kind] += 1
        return kind


class TamperingTransport(ForwardingTransport):
    def __init__(self, inner: Transport, tamper: Tamper) -> None:
        super().__init__(inner)
        self._tamper = tamper

    def wrap(self, connection: FrameConnection) -> FrameConnection:
        return TamperingConnection(connection, self._tamper)


@pytest.mark.parametrize("kinds", [("duplicate",), ("reorder",), ("flip",)], ids=str)
async def test_tampering_in_flight_kills_links_never_nodes(
    autojump_clock: trio.testing.MockClock, kinds: tuple[str, ...]
) -> None:
    """One frame in 20 on every connection of every node is tampered with: links die
    and are dialled again, no node stops, and the fleet still decides once."""
    async with fleet(expected_servers=3) as f:
        tamper = Tamper(7, 0.05, kinds)
        nodes = [f.add(name) for name in ("a", "b", "c")]
        for node in nodes:
            node.transport = TamperingTransport(node.transport, tamper)
        for node in nodes:
            await f.start(node)
        with trio.fail_after(120):
            await f.wait_all_decided()
        assert len(f.decisions()) == 1
        assert sum(tamper.done.values()) > 0
        assert all(not node.stopped.is_set() for node in nodes)
        rejected = sum(n.links.statistics.rejected for n in nodes if n.links is not None)
        assert rejected > 0, tamper.done  # the tampering reached the sealed channels


async def test_a_token_holders_invalid_messages_log_one_warning_then_a_count(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15.7: every invalid message of a token holder logged a WARNING."""
    caplog.set_level(logging.WARNING, logger="rancherd.gossip")
    async with fleet(expected_servers=3) as f:
        victim = f.add("a")
        await f.start(victim, seeds=[])
        connection, channel = await open_channel(f, victim)
        await connection.send(channel.seal(Gossip((own_record(),), False)))
        # A Release that names another proposer than its authenticated sender: invalid.
        for heartbeat in range(2, 702):
            await connection.send(channel.seal(Release("f" * 32, heartbeat, 1)))
            await trio.sleep(0.1)
        warnings = [r for r in caplog.records if "broke the protocol" in r.getMessage()]
        assert 1 <= len(warnings) <= 3, [r.getMessage() for r in warnings]
        assert "more time(s)" in warnings[-1].getMessage()
        assert linked_to(victim, ATTACKER)  # an invalid message is not a reason to hang up


def test_the_violation_log_counts_between_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rancherd.gossip")
    violations = ViolationLog(interval=60.0)
    for second in range(120):
        violations.note("p1", f"bad {second}", float(second))
    violations.note("p2", "other", 5.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "peer p1 broke the protocol: bad 0",
        "peer p1 broke the protocol 60 more time(s) in the last 60 s; latest: bad 60",
        "peer p2 broke the protocol: other",
    ]
