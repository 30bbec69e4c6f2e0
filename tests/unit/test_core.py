"""Cores wired by hand (tests/gossip_harness.py): elections, faults, bad input, status."""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
from typing import Any

import pytest
from gossip_harness import START, Envelope, Network, Node
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import messages, node_ids, node_records

from rancherd.gossip import codec
from rancherd.gossip.config import GossipConfig
from rancherd.gossip.core import (
    Decided,
    DuplicateNodeId,
    GossipCore,
    Identity,
    JoinRole,
    Peer,
    PeerAlive,
    PeerExpired,
    Persist,
    PersistedState,
    Phase,
    ProtocolViolation,
    Send,
    SplitDetected,
    StatusChanged,
)
from rancherd.gossip.errors import LocalProtocolError
from rancherd.gossip.messages import (
    EMPTY_VIEW_DIGEST,
    Ack,
    Commit,
    Decision,
    Gossip,
    Hello,
    Message,
    NodeId,
    NodeRecord,
    Progress,
    Propose,
    Refuse,
    RefuseReason,
    Release,
    Role,
    Vote,
    view_digest,
)


def config(n: int = 3, **changes: Any) -> GossipConfig:
    return dataclasses.replace(GossipConfig.lan(), expected_servers=n, **changes)


def by_id(nodes: list[Node]) -> list[Node]:
    return sorted(nodes, key=lambda node: node.node_id)


def assert_one_cluster(net: Network, expected_init: Node | None = None) -> Decision:
    inits = net.cluster_inits()
    assert len(inits) == 1, inits
    ((init_name, cluster_id),) = inits
    if expected_init is not None:
        assert init_name == expected_init.name
    assert net.cluster_ids() == {cluster_id}
    for node in net.live():
        decided = node.decided()
        assert decided, f"{node.name} undecided: {node.core and node.core.status(net.now).text}"
        assert {event.decision.cluster_id for event in decided} == {cluster_id}
    decision = net.decision_of(init_name)
    assert decision is not None
    return decision


def sent_types(net: Network, sender: str) -> set[str]:
    return {kind for _, who, _, kind in net.trace if who == sender}


# --- elections


def test_three_servers_elect_the_minimum_node_id() -> None:
    net = Network(config(3), seed=1)
    servers = net.add_servers(3)
    net.discover_all()
    assert net.run_until(net.all_decided, 10)
    decision = assert_one_cluster(net, expected_init=by_id(servers)[0])
    assert decision.members == tuple(sorted(s.node_id for s in servers))
    roles = sorted(node.decided()[0].role.value for node in servers)
    assert roles == ["cluster-init", "server", "server"]
    assert net.now - START < 2.0


@pytest.mark.parametrize(("n", "servers"), [(2, 3), (3, 4), (3, 5), (4, 7), (7, 7)])
def test_more_servers_than_n_is_normal_not_a_stall(n: int, servers: int) -> None:
    net = Network(config(n), seed=servers)
    nodes = net.add_servers(servers)
    net.discover_all()
    assert net.run_until(net.all_decided, 20)
    decision = assert_one_cluster(net, expected_init=by_id(nodes)[0])
    assert len(decision.members) == servers


def test_agents_never_vote_or_win_and_join_as_agents() -> None:
    net = Network(config(3), seed=3)
    agents = net.add_agents(4)
    servers = net.add_servers(3)
    net.discover_all()
    assert net.run_until(net.all_decided, 20)
    decision = assert_one_cluster(net)
    assert decision.init_node in {s.node_id for s in servers}
    assert not {a.node_id for a in agents} & set(decision.members)
    for agent in agents:
        assert [e.role for e in agent.decided()] == [JoinRole.AGENT]
        assert sent_types(net, agent.name) <= {"Gossip", "Refuse"}
        assert agent.core is not None
        assert agent.core.record().view_digest == EMPTY_VIEW_DIGEST
        assert agent.core.record().view_size == 0
        assert agent.core.status(net.now).view == ()


def test_servers_that_only_discovered_one_peer_still_elect_through_gossip() -> None:
    # mDNS answered each node with one other address only: a chain s0 - s1 - s2 - s3.
    net = Network(config(4), seed=4)
    nodes = net.add_servers(4)
    for left, right in itertools.pairwise(nodes):
        net.discover(left.name, [right.address])
    assert net.run_until(net.all_decided, 20)
    assert_one_cluster(net, expected_init=by_id(nodes)[0])


def test_election_completes_quickly_after_the_last_server_appears() -> None:
    net = Network(config(3), seed=5)
    net.add_servers(2)
    net.discover_all()
    net.run(10.0)
    assert not net.all_decided()
    started = net.now
    net.add_servers(1)
    net.discover_all()
    assert net.run_until(net.all_decided, 10)
    assert_one_cluster(net)
    # A change makes the next tick come early, so it is a few round trips, plus the grace
    # of the newcomer if it is the minimum.
    assert net.now - started < net.config.startup_grace + 0.5


def test_a_late_joiner_joins_the_existing_cluster_and_never_proposes() -> None:
    net = Network(config(3), seed=6)
    net.add_servers(3)
    net.discover_all()
    assert net.run_until(net.all_decided, 10)
    net.run(30.0)
    late_server = net.add(Role.SERVER, "late")
    late_agent = net.add(Role.AGENT, "late-agent")
    net.discover_all()
    assert net.run_until(net.all_decided, 5)
    decision = assert_one_cluster(net)
    assert [e.role for e in late_server.decided()] == [JoinRole.SERVER]
    assert [e.role for e in late_agent.decided()] == [JoinRole.AGENT]
    assert "Propose" not in sent_types(net, "late")
    assert late_server.node_id not in decision.members


def test_a_single_expected_server_waits_out_its_grace_before_creating_a_cluster() -> None:
    net = Network(config(1), seed=7)
    first = net.add_servers(1)[0]
    net.discover_all()
    net.run(0.5)
    assert not net.all_decided()
    assert net.run_until(net.all_decided, 2)
    assert [e.role for e in first.decided()] == [JoinRole.CLUSTER_INIT]
    net.run(5.0)
    net.add_servers(1)  # booted later with the same config: it finds the cluster first
    net.discover_all()
    assert net.run_until(net.all_decided, 5)
    assert_one_cluster(net, expected_init=first)


# --- crashes and lost messages


def test_proposer_crash_after_some_acks_resumes_its_round_after_restart() -> None:
    net = Network(config(3), seed=8)
    servers = by_id(net.add_servers(3))
    proposer, first_voter, second_voter = servers
    net.discover_all()
    assert net.run_until(lambda: any(isinstance(e.send.message, Propose) for e in net.in_flight), 5)
    round_vote = net.core(proposer.name).record().vote
    assert round_vote is not None
    # One voter acks, the other's Propose is lost, then the proposer dies.
    net.drop_where(
        lambda e: isinstance(e.send.message, Propose) and e.send.to == second_voter.node_id
    )
    while not any(isinstance(e.send.message, Ack) for e in net.in_flight):
        net.step()
    net.crash(proposer.name)
    assert net.core(first_voter.name).status(net.now).phase is Phase.VOTED
    net.run(2.0)
    net.restart(proposer.name)
    restarted = net.core(proposer.name)
    assert restarted.status(net.now).phase is Phase.PROPOSING
    assert restarted.status(net.now).text.startswith(
        "resuming round 0 after a restart; have 1 of 3"
    )
    assert restarted.record().vote == round_vote
    net.discover_all()
    assert net.run_until(net.all_decided, 10)
    decision = assert_one_cluster(net, expected_init=proposer)
    assert decision.round == round_vote.round  # the resumed round, not a new one


def test_a_restarted_voter_keeps_its_vote() -> None:
    net = Network(config(3), seed=9)
    proposer, voter, _other = by_id(net.add_servers(3))
    net.discover_all()
    net.drop_filter = lambda e: isinstance(e.send.message, Ack | Commit)
    assert net.run_until(lambda: net.core(voter.name).status(net.now).phase is Phase.VOTED, 5)
    vote = net.core(voter.name).record().vote
    net.crash(voter.name)
    net.restart(voter.name)
    restarted = net.core(voter.name)
    assert restarted.record().vote == vote
    status = restarted.status(net.now)
    assert status.phase is Phase.VOTED
    assert status.waiting_for == (proposer.node_id,)
    net.drop_filter = None
    net.discover_all()
    assert net.run_until(net.all_decided, 10)
    assert_one_cluster(net, expected_init=proposer)


def test_a_lost_release_is_recovered_through_gossip() -> None:
    net = Network(config(3), seed=10)
    proposer, voter, silent = by_id(net.add_servers(3))
    net.discover_all()

    def lose(envelope: Envelope) -> bool:
        message = envelope.send.message
        first_round = net.now < START + 7.0
        to_silent = envelope.send.to == silent.node_id and isinstance(message, Propose)
        return isinstance(message, Release) or (first_round and to_silent)

    net.drop_filter = lose
    assert net.run_until(lambda: net.core(voter.name).status(net.now).phase is Phase.VOTED, 5)
    held = net.core(voter.name).record().vote
    # The round times out (silent never acks); the proposer releases it, but every Release
    # is lost: only the proposer's record (its `released` list) can free the voter.
    assert net.run_until(lambda: net.core(voter.name).record().vote != held, 10)
    assert held in net.core(proposer.name).record().released
    assert net.run_until(net.all_decided, 20)
    assert_one_cluster(net, expected_init=proposer)
    assert not any(kind == "Release" for *_, kind in net.trace)


def test_heavy_loss_and_duplication_still_elect_one_cluster() -> None:
    net = Network(config(3), seed=11, jitter=0.05)
    net.add_servers(4)
    net.add_agents(2)
    net.loss = 0.3
    net.duplication = 0.2
    net.discover_all()
    assert net.run_until(net.all_decided, 60)
    assert_one_cluster(net)


def test_a_partition_heals_into_one_cluster() -> None:
    net = Network(config(3), seed=12)
    a, b, c, d = net.add_servers(4)
    net.partition([a.name, b.name], [c.name, d.name])
    net.discover_all()
    net.run(20.0)
    assert net.cluster_inits() == set()  # neither side has N servers
    net.heal()
    net.discover_all()
    assert net.run_until(net.all_decided, 20)
    assert_one_cluster(net)


def test_two_groups_of_n_that_never_hear_each_other_split_and_report_it() -> None:
    net = Network(config(2), seed=13)
    a, b, c, d = net.add_servers(4)
    net.partition([a.name, b.name], [c.name, d.name])
    net.discover_all()
    assert net.run_until(net.all_decided, 20)
    assert len(net.cluster_ids()) == 2  # 2N servers, never in touch: allowed
    decisions = {name: net.decision_of(name) for name in net.nodes}
    net.heal()
    net.discover_all()
    net.run(10.0)
    for node in net.nodes.values():
        assert net.decision_of(node.name) == decisions[node.name]  # never changes
        assert node.of_type(SplitDetected)
        assert node.core is not None
        assert node.core.status(net.now).text.startswith("SPLIT: ")


def test_a_server_that_dies_expires_after_the_cache_duration() -> None:
    net = Network(config(3, server_cache_duration=10.0), seed=14)
    a, b = net.add_servers(2)
    net.discover_all()
    net.run(3.0)
    net.crash(b.name)
    crashed = net.now
    assert net.run_until(lambda: bool(a.of_type(PeerExpired)), 20)
    waited = net.now - crashed
    assert 10.0 - net.config.gossip_interval * 1.5 <= waited <= 10.5
    core = net.core(a.name)
    assert core.status(net.now).view == (a.node_id,)
    assert (core.record().view_digest, core.record().view_size) == (view_digest((a.node_id,)), 1)
    [row] = core.peers(net.now)
    assert (row.node_id, row.alive) == (b.node_id, False)
    # It comes back with a new incarnation: alive again.
    net.restart(b.name)
    net.discover_all()
    assert net.run_until(lambda: b.node_id in core.status(net.now).view, 5)
    assert core.record().view_digest == view_digest(tuple(sorted((a.node_id, b.node_id))))


def test_a_dead_member_aborts_the_round_and_the_rest_elect_without_it() -> None:
    net = Network(config(3, server_cache_duration=5.0), seed=15)
    nodes = by_id(net.add_servers(4))
    net.discover_all()
    net.drop_filter = lambda e: (
        e.send.to == nodes[3].node_id and isinstance(e.send.message, Propose)
    )
    assert net.run_until(
        lambda: net.core(nodes[0].name).status(net.now).phase is Phase.PROPOSING, 5
    )
    net.crash(nodes[3].name)
    assert net.run_until(net.all_decided, 30)
    decision = assert_one_cluster(net, expected_init=nodes[0])
    assert nodes[3].node_id not in decision.members


# --- duplicate ids, splits, bad input


def test_two_machines_with_one_node_id_report_it_and_do_not_propose() -> None:
    net = Network(config(2), seed=16)
    original = net.add(Role.SERVER, "original", node_id="0" * 32)
    clone = net.add(Role.SERVER, "clone", node_id="0" * 32)
    net.add(Role.SERVER, "other", node_id="f" * 32)
    net.discover_all()
    net.run(10.0)
    assert net.cluster_inits() == set()
    for node, twin in ((original, clone), (clone, original)):
        [event] = node.of_type(DuplicateNodeId)
        assert isinstance(event, DuplicateNodeId)
        assert event.other_boot_id == net.core(twin.name).boot_id
        text = net.core(node.name).status(net.now).text
        assert text == f"node id shared with {twin.address} (cloned data dir?)"
        assert net.core(node.name).status(net.now).duplicate_id
        assert "Propose" not in sent_types(net, node.name)


def test_restart_is_not_mistaken_for_a_duplicate() -> None:
    net = Network(config(3), seed=17)
    a, _b = net.add_servers(2)
    net.discover_all()
    net.run(2.0)
    net.crash(a.name)
    net.restart(a.name)
    net.discover_all()
    net.run(5.0)
    assert not a.of_type(DuplicateNodeId)


def make_core(
    node_id: NodeId = "1" * 32, role: Role = Role.SERVER, n: int = 3, **changes: Any
) -> GossipCore:
    identity = Identity(node_id, role, (f"10.0.0.{int(node_id[0], 16) + 1}:8443",), "10.0.0.1")
    core = GossipCore(config(n, **changes), identity, None, random.Random(0), START)
    drain(core)
    return core


def drain(core: GossipCore) -> list[object]:
    """Confirm every persist; return every event and send."""
    out: list[object] = []
    while (event := core.next_event()) is not None:
        out.append(event)
        if isinstance(event, Persist):
            core.persisted(event.generation)
    out.extend(core.messages_to_send())
    return out


def peer_record(
    node_id: NodeId,
    view: tuple[NodeId, ...] | None = None,
    *,
    heartbeat: int = 1,
    role: Role = Role.SERVER,
    vote: Vote | None = None,
    released: tuple[Vote, ...] = (),
    decision: Decision | None = None,
) -> NodeRecord:
    """A peer's record reporting ``view`` (by digest and size); by default a server's view
    is itself alone and an agent's is empty."""
    if view is None:
        view = (node_id,) if role is Role.SERVER else ()
    return NodeRecord(
        node_id,
        1,
        99,
        heartbeat,
        role,
        (f"10.0.0.{int(node_id[0], 16) + 1}:8443",),
        "10.0.0.9",
        view_digest(view),
        len(view),
        vote,
        released,
        decision,
        Progress.NONE,
    )


def snapshot(core: GossipCore, now: float) -> tuple[object, ...]:
    return (core.record(), core.status(now), core.peers(now), core.get_timer())


A, B, C = "1" * 32, "2" * 32, "3" * 32


def bad_inputs() -> list[tuple[Message, Peer]]:
    rec_b = peer_record(B, (A, B))

    def own(**changes: Any) -> Gossip:
        return Gossip((dataclasses.replace(rec_b, heartbeat=2, **changes),), False)

    return [
        (Ack(A, 0, 1, C), Peer(B, 1)),  # forged voter
        (Refuse(A, 0, 1, C, RefuseReason.VOTED_OTHER, None, None), Peer(B, 1)),
        (Propose(C, 0, 1, (A, B, C)), Peer(B, 1)),  # proposer is not the sender
        (Release(C, 0, 1), Peer(B, 1)),
        (Hello(1, 1, B, 1, bytes(32)), Peer(B, 1)),
        (Gossip((rec_b,), True), Peer(C, 1)),  # records[0] is not the sender
        (Gossip((), True), Peer(B, 1)),
        (Gossip((rec_b, dataclasses.replace(rec_b, node_id="zz")), False), Peer(B, 1)),
        (Gossip((dataclasses.replace(rec_b, heartbeat=3), (A, B)), False), Peer(B, 1)),  # type: ignore[arg-type]
        (own(view_digest=b"short"), Peer(B, 1)),
        (own(view_size=0), Peer(B, 1)),  # a server's view that misses itself
        (own(role=Role.AGENT), Peer(B, 1)),  # an agent that reports a view
        (Commit(Decision("ab", C, "h", 0, (A, B))), Peer(B, 1)),  # init not a member
        (Gossip((rec_b,), False), Peer("nope", 1)),
        ("not a message", Peer(B, 1)),  # type: ignore[list-item]
    ]


@pytest.mark.parametrize(("message", "src"), bad_inputs())
def test_bad_input_is_a_protocol_violation_and_changes_nothing(message: Message, src: Peer) -> None:
    core = make_core(A)
    core.receive(Gossip((peer_record(B, (A, B)),), False), Peer(B, 1), START + 1)
    drain(core)
    before = snapshot(core, START + 2)
    core.receive(message, src, START + 2)
    out = drain(core)
    assert len(out) == 1
    assert isinstance(out[0], ProtocolViolation)
    assert snapshot(core, START + 2) == before


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(messages(st.sampled_from([A, B, C])), node_ids()), max_size=6))
def test_arbitrary_messages_never_crash_a_core(inputs: list[tuple[Message, NodeId]]) -> None:
    core = make_core(A)
    now = START
    for message, sender in inputs:
        now += 0.1
        before = snapshot(core, now)
        core.receive(message, Peer(sender, 7), now)
        out = drain(core)
        if any(isinstance(item, ProtocolViolation) for item in out):
            assert len(out) == 1
            assert snapshot(core, now) == before
        core.handle_timer(now)
        drain(core)


# --- the persist barrier


def test_nothing_leaves_before_the_first_persist_of_the_new_incarnation() -> None:
    identity = Identity(A, Role.SERVER, ("10.0.0.2:8443",), "10.0.0.2")
    previous = PersistedState(incarnation=4)
    core = GossipCore(config(3), identity, previous, random.Random(0), START)
    core.discovered(["10.0.0.3:8443"], START)
    core.handle_timer(START + 1)
    assert core.messages_to_send() == []
    first = core.next_event()
    assert isinstance(first, Persist)
    assert first.state.incarnation == 5
    assert core.next_event() is None  # the status event waits behind the persist too
    core.persisted(first.generation)
    assert isinstance(core.next_event(), StatusChanged)
    sends = core.messages_to_send()
    assert sends
    assert sends[0].addresses == ("10.0.0.3:8443",)


def test_an_ack_is_held_until_its_vote_is_persisted() -> None:
    voter = make_core(B)
    propose = Propose(A, 0, 77, (A, B, C))
    voter.receive(propose, Peer(A, 1, "10.0.0.2:8443"), START + 1)
    persist = voter.next_event()
    assert isinstance(persist, Persist)
    assert persist.state.vote == Vote(A, 0, 77)
    voter.handle_timer(START + 2)  # time passes, gossip is due: it waits too
    assert voter.messages_to_send() == []
    assert voter.next_event() is None
    voter.persisted(persist.generation)
    sends = voter.messages_to_send()
    assert sends[0].message == Ack(A, 0, 77, B)
    assert sends[0].to == A
    assert sends[0].addresses == ("10.0.0.2:8443",)


def test_persisted_rejects_generations_that_do_not_exist() -> None:
    core = make_core(A)
    with pytest.raises(LocalProtocolError):
        core.persisted(99)
    with pytest.raises(LocalProtocolError):
        core.persisted(0)


def test_nothing_that_depends_on_a_write_leaves_before_the_write_is_confirmed() -> None:
    net = Network(config(3, round_timeout=1.0, backoff_max=0.5), seed=18, jitter=0.02)
    servers = net.add_servers(4)
    seen: dict[str, int] = {}

    def check(node: Node, send: Send) -> None:
        message = send.message
        disk = node.disk
        assert disk is not None
        kind = type(message).__name__
        seen[kind] = seen.get(kind, 0) + 1
        if isinstance(message, Ack):
            assert disk.vote == Vote(message.proposer, message.round, message.nonce)
        elif isinstance(message, Propose):
            assert disk.vote == Vote(node.node_id, message.round, message.nonce)
            assert disk.next_round > message.round
        elif isinstance(message, Release):
            vote = Vote(node.node_id, message.round, message.nonce)
            assert vote in disk.released
            assert disk.vote != vote
        elif isinstance(message, Commit):
            assert disk.decision == message.decision
        elif isinstance(message, Gossip):
            own = message.records[0]
            assert own.incarnation == disk.incarnation
            assert own.vote == disk.vote or own.vote is None or own.decision is not None
            assert own.decision == disk.decision

    net.send_hook = check
    for node in servers:
        node.hold_persists = True
        net.confirm(node.name)
    net.loss = 0.25
    net.discover_all()
    rng = random.Random(0)
    for _ in range(600):
        net.run(0.02)
        for node in servers:
            if node.unconfirmed and rng.random() < 0.3:
                net.confirm(node.name, count=1)
        if net.all_decided():
            break
    assert net.all_decided()
    for node in servers:
        # Decided in memory; the events wait for the write.
        net.confirm(node.name)
    assert_one_cluster(net)
    assert {"Propose", "Ack", "Commit"} <= set(seen), seen


def test_a_restart_resumes_the_decision() -> None:
    identity = Identity(A, Role.SERVER, ("10.0.0.2:8443",), "10.0.0.2")
    decision = Decision("ab" * 16, A, "10.0.0.2", 0, (A, B, C))
    core = GossipCore(
        config(3), identity, PersistedState(3, None, 1, (), decision), random.Random(0), START
    )
    out = drain(core)
    assert isinstance(out[0], Persist)
    assert out[0].state.incarnation == 4
    assert Decided(decision, JoinRole.CLUSTER_INIT) in out
    assert core.status(START).text == "decided: cluster-init"


# --- status lines


def status_text(core: GossipCore, now: float = START + 1) -> str:
    return core.status(now).text


def test_status_while_gathering_servers() -> None:
    core = make_core(A)
    assert status_text(core) == "have 1 of 3 servers (10.0.0.2:8443); waiting for 2 more servers"
    core.receive(Gossip((peer_record(B, (A, B)),), False), Peer(B, 1), START + 1)
    assert status_text(core) == (
        "have 2 of 3 servers (10.0.0.2:8443, 10.0.0.3:8443); waiting for 1 more server"
    )
    view = (A, B, C)
    core.receive(
        Gossip((peer_record(B, (A, B), heartbeat=2), peer_record(C, view)), False),
        Peer(B, 1),
        START + 1,
    )
    assert status_text(core) == "have 3 of 3 servers; waiting for agreement from 10.0.0.3:8443"
    assert core.status(START + 1).waiting_for == (B,)


def test_status_while_proposing_voting_and_backing_off() -> None:
    view = (A, B, C)
    proposer = make_core(A, startup_grace=0.0)
    proposer.receive(
        Gossip((peer_record(B, view), peer_record(C, view)), False), Peer(B, 1), START + 1
    )
    drain(proposer)
    assert status_text(proposer) == (
        "proposing round 0; waiting for acks from 10.0.0.3:8443, 10.0.0.4:8443"
    )
    vote = proposer.record().vote
    assert vote is not None
    proposer.receive(Ack(A, 0, vote.nonce, B), Peer(B, 1), START + 1.1)
    assert status_text(proposer) == "proposing round 0; waiting for acks from 10.0.0.4:8443"
    refuse = Refuse(A, 0, vote.nonce, C, RefuseReason.VOTED_OTHER, Vote(B, 0, 1), None)
    proposer.receive(refuse, Peer(C, 1), START + 1.2)
    text = status_text(proposer, START + 1.2)
    assert text.startswith(
        "round 0 given up (refused by 10.0.0.4:8443, which voted for 10.0.0.3:8443); retrying in"
    )
    assert proposer.status(START + 1.2).phase is Phase.BACKOFF

    voter = make_core(B)
    voter.receive(Gossip((peer_record(A, view),), False), Peer(A, 1), START + 1)
    voter.receive(Propose(A, 0, 5, view), Peer(A, 1), START + 1)
    assert status_text(voter, START + 4.2) == (
        "voted for 10.0.0.2:8443 (round 0), waiting for its commit (last heard 3s ago)"
    )


def test_status_when_decided_and_status_events_only_on_change() -> None:
    decision = Decision("ab" * 16, A, "10.0.0.2", 0, (A, B, C))
    server = make_core(B)
    agent = make_core(C, Role.AGENT)
    for core in (server, agent):
        core.receive(Commit(decision), Peer(A, 1), START + 1)
    assert status_text(server) == "decided: joining the cluster of 10.0.0.2 as server"
    assert status_text(agent) == "decided: joining the cluster of 10.0.0.2 as agent"
    events = [e for e in drain(server) if isinstance(e, StatusChanged)]
    assert [e.status.text for e in events] == [status_text(server)]
    server.handle_timer(START + 5)
    assert not [e for e in drain(server) if isinstance(e, StatusChanged)]


def test_status_of_an_agent() -> None:
    agent = make_core(C, Role.AGENT)
    agent.receive(Gossip((peer_record(A, (A,)),), False), Peer(A, 1), START + 1)
    assert status_text(agent) == (
        "agent; have 1 of 3 servers (10.0.0.2:8443); waiting for the servers to decide"
    )


# --- gossip mechanics


def test_discovered_addresses_are_contacted_and_recontacted_until_they_answer() -> None:
    core = make_core(A, contact_interval=2.0)
    core.discovered(["10.0.0.2:8443", "10.0.0.9:8443"], START)  # the first one is its own
    [send] = core.messages_to_send()
    assert (send.to, send.addresses) == (None, ("10.0.0.9:8443",))
    assert isinstance(send.message, Gossip)
    assert send.message.want_reply
    core.handle_timer(START + 1.0)
    assert not [s for s in core.messages_to_send() if s.to is None]
    core.handle_timer(START + 2.0)
    assert [s.addresses for s in core.messages_to_send() if s.to is None] == [("10.0.0.9:8443",)]
    core.receive(Gossip((peer_record(B, (A, B)),), False), Peer(B, 1, "10.0.0.9:8443"), START + 2)
    drain(core)
    core.handle_timer(START + 6.0)
    assert not [s for s in core.messages_to_send() if s.to is None]


def test_a_gossip_wanting_a_reply_gets_the_full_state_servers_first() -> None:
    core = make_core(A)
    records = [peer_record(f"{i:x}" * 32, role=Role.AGENT) for i in range(4, 9)]
    core.receive(Gossip((peer_record(B, (A, B)), *records), False), Peer(B, 1), START + 1)
    drain(core)
    core.receive(Gossip((peer_record(C, (A, C)),), True), Peer(C, 1), START + 1)
    out = drain(core)
    [reply] = [s for s in out if getattr(s, "to", None) == C]
    assert isinstance(reply.message, Gossip)  # type: ignore[attr-defined]
    ids = [r.node_id for r in reply.message.records]  # type: ignore[attr-defined]
    assert ids[:2] == [A, B]
    assert C not in ids  # its own record would be wasted
    assert set(ids[2:]) == {r.node_id for r in records}


def test_gossip_ticks_reach_fanout_peers_and_heartbeats_grow() -> None:
    core = make_core(A)
    others = [peer_record(f"{i:x}" * 32, role=Role.AGENT) for i in range(4, 10)]
    core.receive(Gossip((others[0], *others[1:]), False), Peer(others[0].node_id, 1), START)
    drain(core)
    heartbeat = core.record().heartbeat
    timer = core.get_timer()
    assert timer is not None
    core.handle_timer(timer)
    gossips = [s for s in drain(core) if isinstance(getattr(s, "message", None), Gossip)]
    assert len(gossips) == core.config.fanout
    assert core.record().heartbeat > heartbeat
    for send in gossips:
        assert send.message.records[0] == core.record()  # type: ignore[attr-defined]
        assert len(send.message.records) <= core.config.max_records_per_gossip  # type: ignore[attr-defined]


def test_peer_events_and_rows() -> None:
    net = Network(config(3), seed=19)
    a, b = net.add_servers(2)
    agent = net.add_agents(1)[0]
    net.discover(a.name, [b.address])
    net.discover(agent.name, [a.address])
    net.run(2.0)
    alive = {e.node_id for e in a.of_type(PeerAlive)}
    assert alive == {b.node_id, agent.node_id}
    rows = {row.node_id: row for row in net.core(a.name).peers(net.now)}
    assert rows[b.node_id].learned == "discovery" or rows[b.node_id].learned == "direct"
    assert rows[b.node_id].agrees
    assert not rows[agent.node_id].agrees
    assert all(row.alive and row.last_heard < 1.0 for row in rows.values())
    net.core(agent.name).set_progress(Progress.INSTALLING, net.now)
    net.run(3.0)
    rows = {row.node_id: row for row in net.core(a.name).peers(net.now)}
    assert rows[agent.node_id].progress is Progress.INSTALLING


# --- determinism


def run_scenario(seed: int) -> list[tuple[float, str, str, str]]:
    net = Network(config(3), seed=seed, jitter=0.01)
    net.add_servers(4)
    net.add_agents(3)
    net.loss = 0.1
    net.discover_all()
    net.run_until(net.all_decided, 30)
    net.run(5.0)
    return net.trace


def test_the_same_seed_gives_the_same_messages() -> None:
    assert run_scenario(20) == run_scenario(20)
    assert run_scenario(20) != run_scenario(21)


def test_a_sticky_vote_stops_a_second_cluster_after_a_commit_was_lost() -> None:
    # N=2, three servers a < b < c. b and c elect b, but b's Commit to c is lost and
    # the network then cuts b off. c forgets b, sees a, and a (the new minimum of an agreed
    # view {a, c}) proposes: c must refuse, because its vote for b still stands.
    net = Network(config(2, server_cache_duration=4.0), seed=22)
    a, b, c = by_id(net.add_servers(3))
    net.partition([b.name, c.name], [a.name])
    net.drop_filter = lambda e: (
        isinstance(e.send.message, Commit)
        or (e.sender == b.name and e.send.to == c.node_id and net.decision_of(b.name) is not None)
    )
    net.discover_all()
    assert net.run_until(lambda: net.decision_of(b.name) is not None, 10)
    assert net.decision_of(c.name) is None
    net.drop_filter = None
    net.partition([b.name], [a.name, c.name])
    net.discover_all()
    net.run(30.0)
    assert net.cluster_ids() == {net.decision_of(b.name).cluster_id}  # type: ignore[union-attr]
    assert net.decision_of(a.name) is None
    status = net.core(c.name).status(net.now)
    assert status.phase is Phase.VOTED
    assert status.waiting_for == (b.node_id,)
    # Once b is reachable again, everyone learns its decision.
    net.heal()
    net.discover_all()
    assert net.run_until(net.all_decided, 20)
    assert_one_cluster(net, expected_init=b)


def test_records_of_this_node_from_others_never_replace_its_own() -> None:
    core = make_core(A)
    own = core.record()
    stale_self = dataclasses.replace(
        own, heartbeat=own.heartbeat + 50, view_digest=view_digest((A, C)), view_size=2, boot_id=5
    )
    old_start = dataclasses.replace(stale_self, incarnation=0)
    core.receive(Gossip((peer_record(B, (A, B)), old_start), False), Peer(B, 1), START + 1)
    out = drain(core)
    assert not [e for e in out if isinstance(e, DuplicateNodeId | ProtocolViolation)]
    assert core.record().boot_id == own.boot_id
    # Its own view, not the relayed copy's.
    assert (core.record().view_digest, core.record().view_size) == (view_digest((A, B)), 2)
    assert core.status(START + 1).view == (A, B)
    assert A not in {row.node_id for row in core.peers(START + 1)}
    # A copy with another boot and an incarnation as new as ours is another machine.
    core.receive(
        Gossip((peer_record(B, (A, B), heartbeat=2), stale_self), False), Peer(B, 1), START + 2
    )
    assert [e for e in drain(core) if isinstance(e, DuplicateNodeId)]
    assert core.record().boot_id == own.boot_id


def test_an_address_that_turns_out_to_be_our_own_is_not_contacted_again() -> None:
    core = make_core(A, contact_interval=1.0)
    core.discovered(["127.0.0.1:8443"], START)
    [contact] = core.messages_to_send()
    core.receive(contact.message, Peer(A, core.boot_id, "127.0.0.1:8443"), START + 0.1)
    assert drain(core) == []
    core.discovered(["127.0.0.1:8443"], START + 5)
    core.handle_timer(START + 5)
    assert not [s for s in core.messages_to_send() if s.to is None]


# --- traffic rules of protocol 2: partners, early ticks, contacts, full states


def gossip_ticks(out: list[object]) -> list[Send]:
    """Periodic Gossip sends (to a peer, not wanting a reply) among drained items."""
    return [
        item
        for item in out
        if isinstance(item, Send)
        and item.to is not None
        and isinstance(item.message, Gossip)
        and not item.message.want_reply
    ]


def server_ids(count: int, prefix: str = "5") -> list[NodeId]:
    return [f"{prefix}{i:031x}" for i in range(count)]


def quiet_server(n: int = 50, **changes: Any) -> GossipCore:
    """A server core whose only timers are its ticks (no full-state exchange, no quorum)."""
    changes.setdefault("gathering_push_pull_interval", 1000.0)
    changes.setdefault("push_pull_interval", 1000.0)
    return make_core(A, n=n, **changes)


def run_to_tick(core: GossipCore, now: float) -> tuple[float, list[Send]]:
    """Fire timers from ``now`` until a tick sends gossip; its time and its sends."""
    for _ in range(100):
        timer = core.get_timer()
        assert timer is not None
        now = max(now, timer)
        core.handle_timer(now)
        ticks = gossip_ticks(drain(core))
        if ticks:
            return now, ticks
    raise AssertionError("no tick")


def test_a_change_leaves_by_an_early_tick_to_at_most_fanout_partners() -> None:
    """No push to every server: a change of a server's own record moves its next tick to
    ``push_on_change_interval`` after the last one, and that tick goes to ``fanout``
    partners, as every tick does."""
    core = quiet_server(push_on_change_interval=0.05)
    servers = server_ids(12)
    sender = servers[0]
    core.receive(
        Gossip(tuple(peer_record(s) for s in servers), False), Peer(sender, 1), START + 0.5
    )
    drain(core)
    tick, _ = run_to_tick(core, START + 0.5)
    newcomer = server_ids(1, prefix="6")[0]
    core.receive(
        Gossip((peer_record(sender, heartbeat=2), peer_record(newcomer)), False),
        Peer(sender, 1),
        tick + 0.01,
    )
    assert newcomer in core.status(tick + 0.01).view
    assert gossip_ticks(drain(core)) == []  # nothing leaves at once, to no one
    assert core.get_timer() == pytest.approx(tick + 0.05)  # the tick comes early
    core.handle_timer(tick + 0.05)
    sends = gossip_ticks(drain(core))
    assert 1 <= len(sends) <= core.config.fanout
    assert {s.to for s in sends} <= set(core._partners.ids)
    assert len({s.to for s in sends}) == len(sends)
    [message] = {id(s.message): s.message for s in sends}.values()
    assert isinstance(message, Gossip)
    own = message.records[0]
    assert own == core.record()
    assert own.view_size == len(servers) + 2
    assert own.view_digest == view_digest(core.status(tick + 0.05).view)


def test_changes_never_make_ticks_faster_or_wider() -> None:
    """A fleet booting together changes a server's view many times a second: with the
    default ``push_on_change_interval`` (the gossip interval) ticks keep their rate and
    their fanout, whatever the number of servers (the old push went to every server)."""
    core = quiet_server(n=128)
    config = core.config
    assert config.push_on_change_interval == config.gossip_interval
    sender = server_ids(1)[0]
    now = START + 0.5
    core.receive(Gossip((peer_record(sender),), False), Peer(sender, 1), now)
    drain(core)
    newcomers = iter(server_ids(110, prefix="6"))
    ticks: list[float] = []
    frames = 0
    heartbeat = 1
    end = now + 3.0
    while now < end:
        timer = core.get_timer()
        assert timer is not None
        change_at = now + 0.03
        if timer <= change_at:
            now = timer
            core.handle_timer(now)
        else:
            now = change_at
            heartbeat += 1
            relayed = (peer_record(next(newcomers)),)
            core.receive(
                Gossip((peer_record(sender, heartbeat=heartbeat), *relayed), False),
                Peer(sender, 1),
                now,
            )
        sends = gossip_ticks(drain(core))
        if sends:
            ticks.append(now)
            frames += len(sends)
            assert len(sends) <= config.fanout
            assert {s.to for s in sends} <= set(core._partners.ids)
    assert len(core.status(now).view) > 90  # the view changed at every step
    # An early tick comes no sooner than push_on_change_interval after the last one, a
    # regular one after a jittered gossip interval: never closer than the shorter.
    closest = min(
        config.push_on_change_interval, config.gossip_interval * (1 - config.gossip_jitter)
    )
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert min(gaps) >= closest - 1e-9
    assert len(ticks) <= 3.0 / closest + 1
    assert frames <= config.fanout * len(ticks)  # some 60 frames; pushes to every server: 5000


def test_an_agent_never_ticks_early() -> None:
    core = make_core(C, Role.AGENT, gathering_push_pull_interval=1000.0, push_pull_interval=1000.0)
    sender = server_ids(1)[0]
    core.receive(Gossip((peer_record(sender),), False), Peer(sender, 1), START + 0.5)
    drain(core)
    tick, _ = run_to_tick(core, START + 0.5)
    timer = core.get_timer()
    core.set_progress(Progress.INSTALLING, tick + 0.01)
    core.receive(
        Gossip((peer_record(sender, heartbeat=2), peer_record(server_ids(1, "6")[0])), False),
        Peer(sender, 1),
        tick + 0.02,
    )
    drain(core)
    assert core.get_timer() == timer


def test_gossip_goes_back_to_callers() -> None:
    """Partnership is symmetric: a peer that gossips to this node becomes its partner and
    gets ticks back, even among many peers this node did not choose."""
    core = quiet_server()
    agents = [peer_record(f"7{i:031x}", role=Role.AGENT) for i in range(40)]
    sender = server_ids(1)[0]
    core.receive(Gossip((peer_record(sender), *agents), False), Peer(sender, 1), START + 0.5)
    drain(core)
    now, _ = run_to_tick(core, START + 0.5)
    chosen = set(core._partners.ids)
    caller = next(a for a in agents if a.node_id not in chosen)
    core.receive(Gossip((caller,), False), Peer(caller.node_id, 1), now + 0.01)
    drain(core)
    assert caller.node_id in core._partners.ids
    reached: set[NodeId] = set()
    for _ in range(30):
        now, sends = run_to_tick(core, now)
        reached.update(s.to for s in sends if s.to is not None)
    assert caller.node_id in reached
    assert reached <= chosen | {caller.node_id}  # nobody else of the 41 peers


def test_a_gathering_server_exchanges_full_states_more_often() -> None:
    """Undecided, or decided while some member has not reported the decision yet, a server
    asks one peer for the full state every ``gathering_push_pull_interval``; once every
    member reports it (alive or forgotten), every ``push_pull_interval``; an agent always
    at the slow rate."""

    def exchanges(core: GossipCore, start: float, seconds: float) -> int:
        now, count = start, 0
        while True:
            timer = core.get_timer()
            assert timer is not None
            if timer > start + seconds:
                return count
            now = max(now, timer)
            core.handle_timer(now)
            count += sum(
                1
                for item in drain(core)
                if isinstance(item, Send)
                and item.to is not None
                and isinstance(item.message, Gossip)
                and item.message.want_reply
            )

    peers = (peer_record(B), peer_record(C))
    server = make_core(A, n=5, gathering_push_pull_interval=1.0, push_pull_interval=10.0)
    agent = make_core(
        "4" * 32, Role.AGENT, gathering_push_pull_interval=1.0, push_pull_interval=10.0
    )
    for core in (server, agent):
        core.receive(Gossip(peers, False), Peer(B, 1), START)
        drain(core)
    gathering = exchanges(server, START, 40.0)
    assert 40 / 1.25 - 1 <= gathering <= 40 / 0.75 + 1
    assert exchanges(agent, START, 40.0) <= 40 / 7.5 + 1
    decision = Decision("ab" * 16, B, "10.0.0.3", 0, (A, B, C))
    server.receive(Commit(decision), Peer(B, 1), START + 40.0)
    drain(server)
    assert not server.members_informed()
    assert exchanges(server, START + 40.0, 20.0) >= 20 / 1.25 - 1
    reports = tuple(peer_record(p, heartbeat=2, decision=decision) for p in (B, C))
    server.receive(Gossip(reports[:1], False), Peer(B, 1), START + 60.0)
    drain(server)
    assert not server.members_informed()  # C has not reported it
    server.receive(Gossip(reports[1:], False), Peer(C, 2), START + 60.0)
    drain(server)
    assert server.members_informed()
    assert exchanges(server, START + 61.0, 40.0) <= 40 / 7.5 + 1


def test_a_member_forgotten_without_reporting_is_not_waited_for_by_fast_exchanges() -> None:
    """A decided server exchanges full states fast while a member it holds alive has not
    reported the decision; once that member is forgotten (a crash after the commit) no
    full state will bring its report, so the exchanges slow down: ``members_informed``
    stays false, and the node does not pull once a second for ever."""
    server = make_core(A, n=3, server_cache_duration=20.0, gathering_push_pull_interval=1.0)
    decision = Decision("ab" * 16, B, "10.0.0.3", 0, (A, B, C))
    server.receive(Commit(decision), Peer(B, 1), START)
    server.receive(Gossip((peer_record(C),), False), Peer(C, 2), START)
    drain(server)
    pulls: list[float] = []
    now = START
    for beat in range(2, 62):  # B reports the decision and stays alive; C is silent
        record = peer_record(B, heartbeat=beat, decision=decision)
        server.receive(Gossip((record,), False), Peer(B, 1), now)
        while (timer := server.get_timer()) is not None and timer <= now + 1.0:
            now = max(now, timer)
            server.handle_timer(now)
            pulls.extend(
                now
                for item in drain(server)
                if isinstance(item, Send)
                and isinstance(item.message, Gossip)
                and item.message.want_reply
            )
        now += 1.0
    forgotten = [p.node_id for p in server.peers(now) if not p.alive]
    assert forgotten == [C]
    assert not server.members_informed()
    early = [t for t in pulls if t < START + 15.0]  # C held alive (cache duration 20 s)
    late = [t for t in pulls if t > START + 25.0]  # C forgotten
    assert len(early) >= 10
    assert len(late) <= (now - (START + 25.0)) / 7.5 + 1


def test_a_member_that_reported_the_decision_then_left_still_counts_as_informed() -> None:
    """``members_informed`` reads a forgotten member's last record: a member that exits
    once it knows (``discover``) must not leave the others waiting for it."""
    server = make_core(A, n=3, server_cache_duration=10.0)
    decision = Decision("ab" * 16, B, "10.0.0.3", 0, (A, B, C))
    server.receive(Commit(decision), Peer(B, 1), START)
    server.receive(Gossip((peer_record(B, decision=decision),), False), Peer(B, 1), START)
    server.receive(Gossip((peer_record(C),), False), Peer(C, 2), START)
    drain(server)
    assert not server.members_informed()
    server.receive(
        Gossip((peer_record(C, heartbeat=2, decision=decision),), False), Peer(C, 2), START
    )
    drain(server)
    assert server.members_informed()
    now = START
    while any(peer.alive for peer in server.peers(now)):
        timer = server.get_timer()
        assert timer is not None
        assert timer < START + 300.0
        now = max(now, timer)
        server.handle_timer(now)
        drain(server)
    assert len(server.peers(now)) == 2  # both forgotten, neither gone from the table
    assert server.members_informed()


def test_contacts_go_out_a_few_at_a_time_in_each_nodes_own_order() -> None:
    addresses = [f"10.1.0.{i}:8443" for i in range(1, 13)]

    def contacted(seed: int, steps: float) -> list[str]:
        identity = Identity(A, Role.SERVER, ("10.0.0.2:8443",), "10.0.0.2")
        core = GossipCore(config(3), identity, None, random.Random(seed), START)
        drain(core)
        core.discovered(addresses, START)
        order: list[str] = []
        now = START
        while now < START + steps:
            for item in drain(core):
                if isinstance(item, Send) and item.to is None:
                    order.extend(item.addresses)
            timer = core.get_timer()
            assert timer is not None
            now = timer
            core.handle_timer(now)
        return order

    first = contacted(1, 0.01)
    assert len(first) == GossipConfig.lan().max_contacts_per_round == 3
    assert contacted(1, 0.01) == first  # seeded
    assert contacted(2, 0.01) != first  # but each node has its own order
    # While the table is short of partners, the next few follow a gossip interval later,
    # until every address was contacted once.
    everyone = contacted(1, 1.5)
    assert sorted(everyone[: len(addresses)]) == sorted(addresses)


def test_a_node_with_its_partners_worth_of_peers_contacts_one_address_at_a_time() -> None:
    core = make_core(A, contact_interval=2.0)
    peers = [peer_record(f"7{i:031x}", role=Role.AGENT) for i in range(core.config.partners)]
    core.receive(Gossip(tuple(peers), False), Peer(peers[0].node_id, 1), START)
    drain(core)
    addresses = [f"10.1.0.{i}:8443" for i in range(1, 7)]
    core.discovered(addresses, START + 0.1)
    sent: list[tuple[float, str]] = []
    now = START + 0.1
    while now < START + 7.0:
        for item in drain(core):
            if isinstance(item, Send) and item.to is None:
                sent.extend((now, a) for a in item.addresses)
        timer = core.get_timer()
        assert timer is not None
        now = timer
        core.handle_timer(now)
    times = [t for t, _ in sent]
    assert times[0] == START + 0.1
    assert all(b - a >= 2.0 - 1e-9 for a, b in itertools.pairwise(times))
    assert len(times) >= 3


# --- wants_record: the codec's pre-filter changes nothing the core would do

Z = "0" * 31 + "9"  # below A: a proposer A can vote for
POOL = [Z, A, B, C, "4" * 32, "5" * 32, "6" * 32]
OURS = Decision("ab" * 16, Z, "10.0.0.1", 0, (Z, A, B))


def loaded_core(state: int) -> GossipCore:
    """A server that holds records of every kind of peer; ``state`` 1: it voted for Z,
    2: it decided."""
    core = make_core(A, n=3)
    held = (
        peer_record(B, (A, B), heartbeat=2),
        peer_record(C, heartbeat=3),
        peer_record("4" * 32, role=Role.AGENT, heartbeat=2),
        peer_record(Z, (Z, A, B), heartbeat=2),
    )
    core.receive(Gossip(held, False), Peer(B, 1), START + 1)
    drain(core)
    if state == 1:
        core.receive(Propose(Z, 0, 5, core.status(START + 1).view), Peer(Z, 1), START + 1)
        drain(core)
        assert core.record().vote == Vote(Z, 0, 5)
    elif state == 2:
        core.receive(Commit(OURS), Peer(Z, 1), START + 1)
        drain(core)
        assert core.decision == OURS
    return core


def relayed_records() -> st.SearchStrategy[NodeRecord]:
    """Records of the nodes of POOL, fresher or staler than those held, with our decision,
    another or none; mostly well formed (a server's view counts itself, an agent has
    none), sometimes not."""
    ids = st.sampled_from(POOL)
    other = Decision("cd" * 16, Z, "10.0.0.1", 0, (Z, A, B))

    def shaped(
        record: NodeRecord, incarnation: int, heartbeat: int, decision: Any, fix: bool
    ) -> NodeRecord:
        record = dataclasses.replace(
            record, incarnation=incarnation, heartbeat=heartbeat, decision=decision
        )
        if fix:
            server = record.role is Role.SERVER
            record = dataclasses.replace(
                record,
                view_size=max(1, record.view_size) if server else 0,
                view_digest=record.view_digest if server else EMPTY_VIEW_DIGEST,
                released=(),
            )
        return record

    return st.builds(
        shaped,
        node_records(ids, max_view=3, max_released=1),
        st.integers(0, 2),
        st.integers(0, 4),
        st.sampled_from([None, None, OURS, other]),
        st.integers(0, 3).map(bool),
    )


def normalized(out: list[object]) -> list[object]:
    """Drained items, with record indexes in violation reasons left out (the filtered
    message numbers its records without the declined ones)."""
    return [
        dataclasses.replace(item, reason=re.sub(r"records\[\d+\]", "records[i]", item.reason))
        if isinstance(item, ProtocolViolation)
        else item
        for item in out
    ]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.integers(0, 2), st.lists(relayed_records(), min_size=1, max_size=8), st.booleans())
def test_decoding_through_wants_record_changes_nothing(
    state: int, records: list[NodeRecord], want_reply: bool
) -> None:
    """Two cores in one state receive the same bytes, one decoded in full, the other
    through ``decode(keep=core.wants_record)``: same events, sends, record, status, peers
    and timers. The filter declines only what the core would have skipped anyway."""
    data = codec.encode(Gossip(tuple(records), want_reply))
    sender = Peer(records[0].node_id, 1)
    plain, filtered = loaded_core(state), loaded_core(state)
    plain.receive(codec.decode(data), sender, START + 2)
    declined: list[object] = []

    def keep(node_id: str, incarnation: int, heartbeat: int, cluster_id: str | None) -> bool:
        wanted = filtered.wants_record(node_id, incarnation, heartbeat, cluster_id)
        if not wanted:
            declined.append(node_id)
        return wanted

    filtered.receive(codec.decode(data, keep=keep), sender, START + 2)
    assert normalized(drain(filtered)) == normalized(drain(plain))
    assert snapshot(filtered, START + 2) == snapshot(plain, START + 2)
    for core in (plain, filtered):
        core.handle_timer(START + 3)
    assert drain(filtered) == drain(plain)
    assert snapshot(filtered, START + 3) == snapshot(plain, START + 3)


def test_wants_record_declines_stale_copies_and_keeps_what_matters() -> None:
    core = loaded_core(1)  # holds B at (1, 2), voted for Z
    assert not core.wants_record(B, 1, 2, None)  # the copy held
    assert not core.wants_record(B, 1, 1, None)  # older
    assert not core.wants_record(B, 0, 9, None)  # older incarnation
    assert core.wants_record(B, 1, 3, None)  # fresher
    assert core.wants_record(B, 2, 0, None)  # new incarnation
    assert core.wants_record("6" * 32, 0, 0, None)  # not held
    assert core.wants_record(B, 1, 2, "ef")  # a decision we do not hold
    assert core.wants_record(Z, 1, 1, None)  # the proposer we voted for, stale or not
    decided = loaded_core(2)
    assert not decided.wants_record(B, 1, 2, OURS.cluster_id)  # our own decision
    assert decided.wants_record(B, 1, 2, "cd" * 16)  # another cluster: a split to report


def test_peer_rows_agree_by_digest() -> None:
    """``PeerInfo.agrees``: the peer's record carries the digest of this node's view. The
    same number of servers with another member does not agree."""
    core = make_core(A, n=5)
    view = (A, B, C)
    core.receive(
        Gossip((peer_record(B, view), peer_record(C, (A, C, "4" * 32))), False),
        Peer(B, 1),
        START + 1,
    )
    assert core.status(START + 1).view == view
    rows = {row.node_id: row for row in core.peers(START + 1)}
    assert rows[B].agrees
    assert not rows[C].agrees
    assert core.status(START + 1).waiting_for == (C,)
    core.receive(Gossip((peer_record(C, view, heartbeat=2),), False), Peer(C, 1), START + 2)
    assert {row.node_id: row.agrees for row in core.peers(START + 2)} == {B: True, C: True}


def members_informed(net: Network, node: Node) -> bool:
    """``rancherd discover``'s exit rule (``Node.members_informed``): every other member
    of the decision reports it."""
    core = net.core(node.name)
    decision = core.decision
    if decision is None:
        return False
    seen = {p.node_id: p.decision for p in core.peers(net.now) if p.alive}
    return all(seen.get(m) == decision for m in decision.members if m != node.node_id)


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("seed", range(8))
def test_nodes_that_stop_once_every_member_reports_the_decision_leave_none_waiting(
    n: int, seed: int
) -> None:
    """``rancherd discover`` exits as soon as every member reports the decision. Each
    decision must leave its node at once, to every partner: held for the next tick (or sent
    to ``fanout`` of them) it could leave with a node that stops first, and the members that
    never saw it would wait for it until the record expires."""
    net = Network(dataclasses.replace(GossipConfig.local(), expected_servers=n), seed=seed)
    net.add_servers(n)
    net.discover_all()
    stopped: dict[str, float] = {}

    def step() -> bool:
        for node in net.live():
            if members_informed(net, node):
                stopped[node.name] = net.now
                net.crash(node.name)
        return len(stopped) == n

    assert net.run_until(step, 10.0), f"never informed: {set(net.nodes) - set(stopped)}"
    assert max(stopped.values()) - min(stopped.values()) < 1.0


def test_a_decision_leaves_at_once_to_every_partner_and_no_one_else() -> None:
    core = quiet_server(n=3)
    servers = server_ids(40)
    sender = servers[0]
    core.receive(
        Gossip(tuple(peer_record(s) for s in servers), False), Peer(sender, 1), START + 0.5
    )
    drain(core)
    tick, _ = run_to_tick(core, START + 0.5)
    for caller in servers[1:5]:  # callers are partners too
        core.receive(Gossip((peer_record(caller, heartbeat=2),), False), Peer(caller, 1), tick)
    drain(core)
    decision = Decision("ab" * 16, sender, "10.0.0.6", 0, tuple(sorted((sender, A, servers[1]))))
    core.receive(Commit(decision), Peer(sender, 1), tick + 0.01)
    assert [e for e in drain(core) if isinstance(e, Decided)]
    assert core.get_timer() == tick + 0.01  # not held until push_on_change_interval
    partners = set(core._partners.ids)
    assert len(partners) > core.config.fanout
    core.handle_timer(tick + 0.01)
    sends = gossip_ticks(drain(core))
    assert {s.to for s in sends} == partners  # every partner, once; not all 40 servers
    assert len(sends) == len(partners) < len(servers)
    assert all(
        isinstance(s.message, Gossip) and s.message.records[0].decision == decision for s in sends
    )
    _, after = run_to_tick(core, tick + 0.01)
    assert len(after) <= core.config.fanout  # the next ticks are ordinary again
