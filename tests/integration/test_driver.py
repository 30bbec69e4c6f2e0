"""Integration: real drivers, links and sealed channels over the in-memory transport.

Everything runs on ``MockClock(autojump_threshold=0)``: virtual time jumps whenever every
task waits, so a five-node election takes milliseconds of wall time, and each test has a
``fail_after`` guard in virtual seconds.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from driver_harness import WRONG_KEYS, fleet, frames_per_node_second_at_rest

from rancherd.gossip.core import Decided, Persist, ProtocolViolation
from rancherd.gossip.election import JoinRole
from rancherd.gossip.messages import Role
from rancherd.gossip.transport import ConnectionClosed, FrameConnection

# Each test takes pytest-trio's ``autojump_clock``: MockClock(autojump_threshold=0).


@pytest.mark.parametrize("servers", [3, 5])
async def test_servers_elect_exactly_one_init(
    servers: int, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        async with fleet(expected_servers=servers) as f:
            nodes = await f.start_servers(servers)
            await f.wait_all_decided()
            assert len(f.decisions()) == 1
            (decision,) = f.decisions()
            roles = [e.role for n in nodes for e in n.events if isinstance(e, Decided)]
            assert roles.count(JoinRole.CLUSTER_INIT) == 1
            assert roles.count(JoinRole.SERVER) == servers - 1
            assert decision.init_node == min(n.node_id for n in nodes)
            assert sorted(decision.members) == sorted(n.node_id for n in nodes)


async def test_votes_are_stored_before_acks_leave(autojump_clock: trio.testing.MockClock) -> None:
    """Every voter's store holds its vote, and the decision, when all have decided."""
    with trio.fail_after(30):
        async with fleet() as f:
            nodes = await f.start_servers(3)
            await f.wait_all_decided()
            for node in nodes:
                last = node.store.last
                assert last is not None
                assert last.decision == node.decision
                persists = [e for e in node.events if isinstance(e, Persist)]
                assert persists, "the driver reported no Persist events"


async def test_one_seed_is_enough_gossip_spreads_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each node discovers only the first node; gossip tells everyone about everyone."""
    with trio.fail_after(30):
        async with fleet(expected_servers=4) as f:
            nodes = [f.add(f"s{i}") for i in range(4)]
            for node in nodes:
                await f.start(node, seeds=[nodes[0].address])
            await f.wait_all_decided()
            assert len(f.decisions()) == 1


async def test_agents_join_and_never_win(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(30):
        async with fleet(expected_servers=2) as f:
            agent = f.add("a0", Role.AGENT)
            servers = [f.add(f"s{i}") for i in range(2)]
            for node in (agent, *servers):
                await f.start(node)
            await f.wait_all_decided()
            (decision,) = f.decisions()
            assert agent.node_id not in decision.members
            roles = [e.role for e in agent.events if isinstance(e, Decided)]
            assert roles == [JoinRole.AGENT]


async def test_node_with_wrong_token_is_never_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An intruder with the smallest node id would propose if counted; it is not."""
    with trio.fail_after(30):
        async with fleet(expected_servers=3) as f:
            intruder = f.add("intruder", keys=WRONG_KEYS)
            intruder.node_id = "0" * 32
            nodes = [f.add(f"s{i}") for i in range(3)]
            for node in (intruder, *nodes):
                await f.start(node)
            await f.wait_all_decided([n.name for n in nodes])
            (decision,) = f.decisions()
            assert intruder.node_id not in decision.members
            assert intruder.decision is None
            assert intruder.driver is not None
            assert intruder.driver.status.view == (intruder.node_id,)
            # The good nodes did reach it: their hellos were refused by its wrong key.
            assert intruder.links is not None
            assert intruder.links.statistics.rejected >= len(nodes)


async def test_late_joiner_learns_the_decision_and_does_not_propose(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with fleet(expected_servers=3) as f:
            nodes = await f.start_servers(3)
            await f.wait_all_decided()
            (decision,) = f.decisions()
            await trio.sleep(30)
            late = f.add("late")
            await f.start(late, seeds=[nodes[1].address])
            await f.wait_all_decided(["late"])
            assert late.decision == decision
            roles = [e.role for e in late.events if isinstance(e, Decided)]
            assert roles == [JoinRole.SERVER]


async def test_restarted_node_resumes_its_decision_from_the_store(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with fleet(expected_servers=3) as f:
            nodes = await f.start_servers(3)
            await f.wait_all_decided()
            (decision,) = f.decisions()
            victim = nodes[2]
            await f.stop(victim)
            await f.start(victim)
            assert victim.decision == decision
            assert victim.driver is not None
            assert victim.driver.core.incarnation == 2


async def test_more_servers_than_expected_is_not_a_stall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with fleet(expected_servers=3) as f:
            await f.start_servers(5)
            await f.wait_all_decided()
            assert len(f.decisions()) == 1


async def test_partition_heals_into_one_cluster(autojump_clock: trio.testing.MockClock) -> None:
    """Three servers cut off from two (N=3): only the majority side can decide."""
    with trio.fail_after(60):
        async with fleet(expected_servers=3) as f:
            nodes = [f.add(f"s{i}") for i in range(5)]
            for a in nodes[:3]:
                for b in nodes[3:]:
                    f.network.partition(a.address, b.address)
            for node in nodes:
                await f.start(node)
            await f.wait_all_decided([n.name for n in nodes[:3]])
            assert all(n.decision is None for n in nodes[3:])
            f.network.heal()
            await f.wait_all_decided()
            assert len(f.decisions()) == 1


async def test_garbage_messages_from_a_peer_do_not_stop_the_node(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Frames that fail to open close that connection; the node keeps serving."""
    with trio.fail_after(30):
        async with fleet(expected_servers=2) as f:
            a, b = f.add("a"), f.add("b")
            await f.start(a)
            probe = f.network.transport("10.0.0.99:1")
            connection = await probe.connect(a.address)
            await connection.send(b"\x00" * 100)
            with pytest.raises(ConnectionClosed):
                await connection.receive()
            await f.start(b)
            await f.wait_all_decided()
            assert len(f.decisions()) == 1
            assert not [e for e in a.events if isinstance(e, ProtocolViolation)]


async def test_a_decided_fleet_gossips_at_the_slower_decided_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        busy = await frames_per_node_second_at_rest(3, 0.2, window=30)
        rest = await frames_per_node_second_at_rest(3, 1.0, window=30)
    assert rest < busy / 3, (busy, rest)


async def test_an_authenticated_but_silent_connection_is_closed_at_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that completes the handshake and then says nothing is dropped after
    ``idle_timeout``, not before."""
    from driver_harness import TOKEN_KEYS

    from rancherd.gossip.security import SecureChannel
    from rancherd.gossip.transport import TransportLimits

    limits = TransportLimits(idle_timeout=20.0)
    with trio.fail_after(120):
        async with fleet(expected_servers=2, limits=limits) as f:
            node = f.add("a")
            await f.start(node, seeds=[])
            probe = f.network.transport("10.0.0.50:1", limits)
            connection = await probe.connect(node.address)
            channel = SecureChannel(TOKEN_KEYS, "e" * 32, 1, initiator=True, random_bytes=bytes)
            await connection.send(channel.start())
            for frame in channel.receive(await connection.receive()).frames:
                await connection.send(frame)  # the finished frame
            assert channel.established
            opened = trio.current_time()
            await _drain_until_closed(connection)
            assert trio.current_time() - opened >= limits.idle_timeout
            assert node.links is not None
            assert node.links.statistics.idle_closed == 1


async def _drain_until_closed(connection: FrameConnection) -> None:
    """Read (the node may still say something) until the node hangs up."""
    while True:
        try:
            await connection.receive()
        except ConnectionClosed:
            return


async def test_failed_dials_back_off_instead_of_hammering_the_address(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A discovered address where nobody listens: dials are spaced by a growing backoff,
    so a minute costs a handful of dials, not one per gossip tick."""
    with trio.fail_after(120):
        async with fleet(expected_servers=2) as f:
            node = f.add("a")
            await f.start(node, seeds=["10.0.0.99:8443"])
            await trio.sleep(60)
            assert node.links is not None
            dials = node.links.statistics.dials
            assert 3 <= dials <= 60 / f.limits.connect_backoff_max * 2 + 5, dials
            assert node.links.statistics.dial_failures == dials
