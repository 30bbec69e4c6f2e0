"""Gossip partners (``rancherd/gossip/partners.py``): the few peers a node gossips with."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rancherd.gossip.membership import PeerTable
from rancherd.gossip.messages import (
    EMPTY_VIEW_DIGEST,
    NodeId,
    NodeRecord,
    Progress,
    Role,
    view_digest,
)
from rancherd.gossip.partners import Partners

ME = "f" * 32
SERVERS = [f"{i:032x}" for i in range(1, 11)]
AGENTS = [f"{i:032x}" for i in range(100, 160)]


def record(node_id: NodeId, role: Role, heartbeat: int = 1) -> NodeRecord:
    server = role is Role.SERVER
    return NodeRecord(
        node_id,
        1,
        7,
        heartbeat,
        role,
        (f"10.0.{int(node_id, 16) // 250}.{int(node_id, 16) % 250}:8443",),
        "10.0.0.1",
        view_digest((node_id,)) if server else EMPTY_VIEW_DIGEST,
        1 if server else 0,
        None,
        (),
        None,
        Progress.NONE,
    )


def table(servers: int = 3, agents: int = 40, self_is_server: bool = True) -> PeerTable:
    peers = PeerTable(ME, self_is_server, 10.0, max_tombstones=8)
    for node_id in SERVERS[:servers]:
        peers.apply(record(node_id, Role.SERVER), now=0)
    for node_id in AGENTS[:agents]:
        peers.apply(record(node_id, Role.AGENT), now=0)
    return peers


def is_server(peers: PeerTable, node_id: NodeId) -> bool:
    entry = peers.get(node_id)
    return entry is not None and entry.record.role is Role.SERVER


def test_targets_are_distinct_partners_at_most_count() -> None:
    peers = table()
    partners = Partners(4, 1, self_is_server=True)
    rng = random.Random(1)
    seen: set[NodeId] = set()
    for _ in range(50):
        targets = partners.targets(peers, 3, 1, rng)
        assert len(targets) == 3
        assert len(set(targets)) == 3
        assert set(targets) <= set(partners.ids)
        assert all(t in peers for t in targets)
        seen.update(targets)
    # Fifty ticks went to the four chosen partners, never to the rest of the 43 peers.
    assert len(partners.ids) == 4
    assert seen == set(partners.ids)


def test_a_server_keeps_servers_among_its_partners_and_its_targets() -> None:
    peers = table(servers=3, agents=60)
    partners = Partners(4, 1, self_is_server=True)
    rng = random.Random(2)
    for _ in range(30):
        targets = partners.targets(peers, 3, 1, rng)
        assert sum(is_server(peers, t) for t in targets) >= 1
    assert sum(is_server(peers, i) for i in partners.ids) >= 1


def test_an_agent_keeps_no_server_share() -> None:
    """An agent's partners are drawn from the whole table: with three servers among 63
    peers, the agent's seeded draw holds no server at all here, which the server share
    of a server would never allow."""
    peers = table(servers=3, agents=60, self_is_server=False)
    counts = []
    for seed in range(20):
        partners = Partners(4, 1, self_is_server=False)
        partners.targets(peers, 3, 0, random.Random(seed))
        counts.append(sum(is_server(peers, i) for i in partners.ids))
    assert min(counts) == 0
    for seed in range(20):
        partners = Partners(4, 1, self_is_server=True)
        partners.targets(peers, 3, 1, random.Random(seed))
        assert sum(is_server(peers, i) for i in partners.ids) >= 1


def test_fewer_peers_than_partners_makes_every_peer_a_partner() -> None:
    peers = table(servers=1, agents=1)
    partners = Partners(4, 1, self_is_server=True)
    targets = partners.targets(peers, 3, 1, random.Random(0))
    assert sorted(targets) == sorted([SERVERS[0], AGENTS[0]])
    empty = PeerTable(ME, True, 10.0, max_tombstones=8)
    assert Partners(4, 1, True).targets(empty, 3, 1, random.Random(0)) == []


def test_a_caller_becomes_a_partner_so_partnership_is_symmetric() -> None:
    """A peer that chose us gets our gossip back, even when we did not choose it."""
    peers = table(servers=3, agents=40)
    partners = Partners(4, 1, self_is_server=True)
    rng = random.Random(3)
    partners.targets(peers, 3, 1, rng)
    chosen = set(partners.ids)
    caller = next(a for a in AGENTS[:40] if a not in chosen)
    partners.called(caller, peers)
    assert caller in partners.ids
    assert set(partners.ids) == chosen | {caller}
    hits = sum(caller in partners.targets(peers, 3, 1, rng) for _ in range(40))
    assert hits > 0


def test_a_caller_fills_a_free_slot_as_a_chosen_partner() -> None:
    peers = table(servers=0, agents=2)
    partners = Partners(4, 1, self_is_server=True)
    partners.called(AGENTS[0], peers)
    assert partners.ids == (AGENTS[0],)
    partners.called("e" * 32, peers)  # not in the table: ignored
    assert partners.ids == (AGENTS[0],)


def test_callers_are_bounded_oldest_dropped() -> None:
    peers = table(servers=0, agents=40)
    partners = Partners(2, 0, self_is_server=False)
    callers = AGENTS[:10]
    for caller in callers:
        partners.called(caller, peers)
    ids = partners.ids
    # Two chosen (the first callers, while there was room) and the last four callers.
    assert ids == tuple(dict.fromkeys([*callers[:2], *callers[-4:]]))
    partners.called(callers[6], peers)  # calling again makes it the newest caller
    partners.called(AGENTS[20], peers)  # so the next one pushes out callers[7] instead
    assert partners.ids == (*callers[:2], callers[8], callers[9], callers[6], AGENTS[20])


def test_forgotten_partners_are_replaced() -> None:
    peers = table(servers=3, agents=10)
    partners = Partners(4, 1, self_is_server=True)
    rng = random.Random(4)
    partners.targets(peers, 3, 1, rng)
    caller = next(a for a in AGENTS[:10] if a not in partners.ids)
    partners.called(caller, peers)
    before = set(partners.ids)
    # Everyone but two agents and one server stops growing and expires; they stay fresh.
    keep = {SERVERS[0], AGENTS[0], AGENTS[1]}
    for node_id in keep:
        peers.apply(record(node_id, Role.SERVER if node_id in SERVERS else Role.AGENT, 2), 5)
    peers.expire(10.0)
    assert set(peers.entries) == keep
    targets = partners.targets(peers, 3, 1, rng)
    assert set(targets) == keep
    assert set(partners.ids) == keep
    assert before != keep


def test_rotate_swaps_one_partner_and_keeps_the_size() -> None:
    peers = table(servers=3, agents=40)
    partners = Partners(4, 1, self_is_server=True)
    rng = random.Random(5)
    partners.targets(peers, 3, 1, rng)
    history = [set(partners.ids)]
    for _ in range(30):
        partners.rotate(peers, rng)
        now = set(partners.ids)
        assert len(now) == 4
        assert len(now - history[-1]) <= 1  # one swapped (or the same one drawn again)
        assert sum(is_server(peers, i) for i in now) >= 1
        history.append(now)
    # The overlay keeps changing: over thirty rotations most peers were a partner once.
    assert len(set().union(*history)) > 20


def test_rotate_with_no_one_else_to_pick_keeps_every_partner() -> None:
    peers = table(servers=1, agents=2)
    partners = Partners(4, 1, self_is_server=True)
    partners.rotate(peers, random.Random(6))
    assert sorted(partners.ids) == sorted([SERVERS[0], *AGENTS[:2]])


def test_choices_are_seeded() -> None:
    def run(seed: int) -> list[list[NodeId]]:
        peers = table()
        partners = Partners(4, 1, self_is_server=True)
        rng = random.Random(seed)
        out = []
        for step in range(20):
            if step % 5 == 4:
                partners.rotate(peers, rng)
            out.append(partners.targets(peers, 3, 1, rng))
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("targets"), st.integers(1, 5), st.integers(0, 2)),
        st.tuples(st.just("called"), st.integers(0, 70), st.just(0)),
        st.tuples(st.just("rotate"), st.just(0), st.just(0)),
        st.tuples(st.just("expire"), st.integers(0, 70), st.just(0)),
        st.tuples(st.just("add"), st.integers(0, 70), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(0, 3),
    st.booleans(),
    st.integers(0, 10),
    st.integers(0, 40),
    OPERATIONS,
    st.integers(0, 2**32),
)
def test_partner_invariants(
    size: int,
    share: int,
    self_is_server: bool,
    servers: int,
    agents: int,
    operations: list[tuple[str, int, int]],
    seed: int,
) -> None:
    """Whatever happens to the table: targets are distinct live partners, ``count`` of
    them where there are enough, as many servers as asked where partners hold them, and
    the set stays bounded by ``size`` chosen plus ``2 * size`` callers. (A refill spends a
    bounded number of draws per free slot, so the set may stay short of ``size`` for a
    tick when the table is barely larger.)"""
    share = min(share, size)
    peers = table(servers, agents, self_is_server)
    everyone = SERVERS + AGENTS
    partners = Partners(size, share, self_is_server)
    rng = random.Random(seed)
    now = 0.0
    for kind, a, b in operations:
        now += 1.0
        node_id = everyone[a % len(everyone)]
        if kind == "targets":
            count, want_servers = a, min(b, a)
            targets = partners.targets(peers, count, want_servers, rng)
            live = [i for i in partners.ids if i in peers]
            assert len(set(targets)) == len(targets) == min(count, len(live))
            assert set(targets) <= set(live)
            live_servers = sum(is_server(peers, i) for i in live)
            assert sum(is_server(peers, t) for t in targets) >= min(want_servers, live_servers)
            assert live or not len(peers)  # a node with peers always has a partner
        elif kind == "called":
            partners.called(node_id, peers)
            if node_id in peers:
                assert node_id in partners.ids
        elif kind == "rotate":
            partners.rotate(peers, rng)
        elif kind == "expire":
            peers.expire(now + 100.0)
        else:
            role = Role.SERVER if node_id in SERVERS else Role.AGENT
            peers.apply(record(node_id, role, heartbeat=int(now) + 1), now)
        assert len(partners.ids) <= 3 * size
        assert len(set(partners.ids)) == len(partners.ids)
