"""The faults aimed at the election (buggify, crash_at, views, clock_jump, clone) and the
election audit, each tested with a scripted probe or fabricated states, not an election."""

from __future__ import annotations

from typing import Any

import pytest

from rancherd.gossip.core import PersistedState
from rancherd.gossip.messages import Ack, Commit, Decision, Propose, Release, Vote
from sim.audit import ElectionAudit
from sim.faults import FAULTS
from sim.scenario import FAULT_KINDS, ScenarioError
from sim.testing import Probe, ProbeAlgorithm, scenario
from sim.world import BASE_EPOCH, World


class KindProbe(ProbeAlgorithm):
    """A probe whose payloads ``(kind, n)`` name their own message kind."""

    def message_kind(self, payload: object) -> str | None:
        return payload[0] if isinstance(payload, tuple) else None


def _received(probe: ProbeAlgorithm, name: str) -> list[tuple[float, Any]]:
    return [
        (round(t - BASE_EPOCH, 3), payload) for t, (_src, payload) in probe.log.of(name, "message")
    ]


def _send_kinds(probe: Probe, kind: str, detail: object) -> None:
    host = probe.host
    if kind == "boot" and host.name == "s0":
        host.set_timer(host.now() + 1)
    elif kind == "timer":
        for n in range(3):
            for message in ("ack", "propose", "gossip"):
                host.send("s1", (message, n))


def _run(text: str, probe: ProbeAlgorithm, until: float = 60.0) -> World:
    world = World(scenario(text), 0, "probe", implementation=probe)
    world.loop.run(until=until)
    return world


def test_every_fault_kind_is_registered_once() -> None:
    assert set(FAULT_KINDS) == set(FAULTS)
    expected = {"partition", "one_way", "hold", "crash", "buggify", "crash_at", "views"}
    assert expected | {"clock_jump", "clone"} == set(FAULTS)


def test_buggify_drops_only_the_chosen_kinds_on_the_chosen_links() -> None:
    probe = KindProbe(_send_kinds)
    _run(
        """
nodes: {servers: 2}
network: {latency: 0.01}
faults:
  - buggify: {messages: [ack], from: s0, to: s1, drop: 1.0}
""",
        probe,
    )
    got = [p for _, p in _received(probe, "s1")]
    assert [p for p in got if p[0] == "ack"] == []
    assert sorted(p for p in got if p[0] != "ack") == sorted(
        (m, n) for n in range(3) for m in ("propose", "gossip")
    )


def test_buggify_duplicates_and_delays_within_its_window() -> None:
    probe = KindProbe(_send_kinds)
    _run(
        """
nodes: {servers: 2}
network: {latency: 0.01}
faults:
  - buggify: {messages: propose, duplicate: 1.0, delay: 5, start: 0.5, end: 2}
""",
        probe,
    )
    proposes = [(t, p) for t, p in _received(probe, "s1") if p[0] == "propose"]
    # Sent at t=1, inside the window: every copy 5 s late, and each one twice.
    assert proposes == [(6.01, ("propose", n)) for n in range(3) for _ in range(2)]
    acks = [t for t, p in _received(probe, "s1") if p[0] == "ack"]
    assert acks == [1.01, 1.01, 1.01]


def test_buggify_outside_its_window_changes_nothing() -> None:
    probe = KindProbe(_send_kinds)
    _run(
        """
nodes: {servers: 2}
network: {latency: 0.01}
faults:
  - buggify: {messages: [ack, propose], drop: 1.0, start: 2}
""",
        probe,
    )
    assert len(_received(probe, "s1")) == 9


def _write_then_send(probe: Probe, kind: str, detail: object) -> None:
    host = probe.host
    if kind == "boot":
        host.set_timer(host.now() + 1)
    elif kind == "timer" and host.name == "s0":
        host.write_disk(("vote", host.now()))
    elif kind == "disk" and host.name == "s0":
        host.send("s1", ("ack", 1))
        host.send("s1", ("ack", 2))


@pytest.mark.parametrize(
    ("boundary", "disk_after", "acks"),
    [
        ("write", None, []),  # crashed during the fsync: the write is lost
        ("written", "kept", []),  # durable, but nothing that waited for it left
        ("send", "kept", [("ack", 1)]),  # the first ack left, the second never did
    ],
)
def test_crash_at_each_effect_boundary(
    boundary: str, disk_after: str | None, acks: list[tuple[str, int]]
) -> None:
    probe = KindProbe(_write_then_send)
    world = _run(
        f"""
nodes: {{servers: 2}}
network: {{latency: 0.01}}
disk: {{fsync: 0.1}}
faults:
  - crash_at: {{node: s0, boundary: {boundary}, messages: [ack], restart_after: 5}}
""",
        probe,
        until=3.0,
    )
    s0 = world.by_name["s0"]
    assert not s0.up
    assert world.notes == {f"crash-at-{boundary}": 1}
    assert (s0.disk is not None) == (disk_after == "kept")
    assert [p for _, p in _received(probe, "s1")] == acks
    world.loop.run(until=10.0)
    boots = probe.log.of("s0", "boot")
    assert len(boots) == 2  # restarted once, and the fault does not fire again
    assert (boots[1][1][1] is not None) == (disk_after == "kept")


def test_crash_at_counts_boundaries_from_when_it_is_armed() -> None:
    def writes(probe: Probe, kind: str, detail: object) -> None:
        host = probe.host
        if kind == "boot":
            host.set_timer(host.now() + 1)
        elif kind == "timer":
            host.write_disk(("n", host.now()))
            host.set_timer(host.now() + 1)

    probe = KindProbe(writes)
    world = _run(
        """
nodes: {servers: 1}
faults:
  - crash_at: {node: s0, boundary: written, after: 2, start: 2.5}
""",
        probe,
        until=20.0,
    )
    # Writes done at t=1.002, 2.002, 3.002, 4.002: armed at 2.5, the second after that.
    assert [round(t - BASE_EPOCH, 3) for t, _ in probe.log.of("s0", "disk")] == [
        1.002,
        2.002,
        3.002,
    ]
    assert not world.by_name["s0"].up


def _query(probe: Probe, kind: str, detail: object) -> None:
    host = probe.host
    if kind == "boot":
        host.advertise(host.name)
        host.set_timer(host.now() + 1)
    elif kind == "timer":
        host.query_discovery(1.0)
        host.set_timer(host.now() + 10)


def test_views_give_each_node_its_own_subset_until_the_end() -> None:
    probe = KindProbe(_query)
    _run(
        """
nodes: {servers: 5}
faults:
  - views: {nodes: [s0, s1], see: 3, end: 15}
""",
        probe,
        until=30.0,
    )
    for name in ("s0", "s1"):
        heard = [set(d) for _, d in probe.log.of(name, "discovery")]
        assert len(heard[0]) == 3
        assert name in heard[0]
        assert heard[1] == heard[0]  # t=11: still the same subset
        assert len(heard[2]) == 5  # t=21: the views are whole again
    assert all(len(d) == 5 for _, d in probe.log.of("s2", "discovery"))


def test_a_clock_jump_moves_the_clock_and_keeps_the_timer_on_the_clock() -> None:
    def one_timer(probe: Probe, kind: str, detail: object) -> None:
        if kind == "boot":
            probe.host.set_timer(probe.host.now() + 10)

    probe = KindProbe(one_timer)
    world = _run(
        """
nodes: {servers: 2}
faults:
  - clock_jump: {nodes: s0, at: 2, by: 5}
  - clock_jump: {nodes: s1, at: 2, by: -5}
""",
        probe,
    )
    # Both timers were due at clock 10: s0's clock got there 5 s sooner, s1's 5 s later.
    fired = {name: probe.log.of(name, "timer") for name in ("s0", "s1")}
    assert [round(t - BASE_EPOCH, 6) for t, _ in fired["s0"]] == [10.0]
    assert [round(t - BASE_EPOCH, 6) for t, _ in fired["s1"]] == [10.0]
    assert world.by_name["s0"].offset == 5.0
    assert world.by_name["s1"].offset == -5.0
    assert world.loop.now >= 15.0


def test_a_clone_shares_its_node_id_and_is_reached_by_address() -> None:
    probe = KindProbe()
    world = _run("nodes: {servers: 3}\nfaults:\n  - clone: {node: s2, of: s0}\n", probe)
    assert world.by_name["s2"].node_id == world.by_name["s0"].node_id
    assert world.machine_with_id(world.by_name["s0"].node_id) is None
    assert world.machine_with_id(world.by_name["s1"].node_id) == "s1"
    world = _run("nodes: {servers: 3}\nfaults:\n  - clone: {node: s2, of: lowest-id}\n", probe)
    lowest = min(world.by_name[n].node_id for n in ("s0", "s1"))
    assert world.by_name["s2"].node_id == lowest


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("crash_at: {node: s0, boundary: lunch}", "expected one of write, written, send"),
        ("crash_at: {node: s0}", "crash_at.boundary: required"),
        ("buggify: {messages: [hello]}", "expected a list of propose"),
        ("clone: {node: s0, of: s0}", "a node cannot be a clone of itself"),
        ("views: {see: 0}", "must be >= 1"),
        ("clock_jump: {nodes: s9, at: 1, by: 1}", "unknown node 's9'"),
        ("teleport: {node: s0}", "unknown fault 'teleport'"),
    ],
)
def test_bad_election_faults_are_refused_clearly(fault: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        scenario(f"nodes: {{servers: 2}}\nfaults:\n  - {fault}\n")
    assert message in str(caught.value)


# --- The election audit (sim/audit.py) ------------------------------------------------

P, V1, V2 = "a" * 32, "b" * 32, "c" * 32
VOTE = Vote(P, 0, 7)


def _state(
    vote: Vote | None = None, released: tuple[Vote, ...] = (), decision: Decision | None = None
) -> PersistedState:
    return PersistedState(1, vote, 1, released, decision)


def _audit() -> tuple[ElectionAudit, list[str]]:
    found: list[str] = []
    return ElectionAudit(lambda kind, now, text: found.append(kind), 3), found


def test_audit_ack_and_propose_must_be_on_disk_first() -> None:
    audit, found = _audit()
    audit.sent(V1, _state(VOTE), (None, Ack(P, 0, 7, V1)), 1.0)
    audit.sent(P, _state(VOTE), (None, Propose(P, 0, 7, (P, V1, V2))), 1.0)
    assert found == []
    audit.sent(V1, _state(None), (None, Ack(P, 0, 7, V1)), 1.0)
    audit.sent(V1, _state(Vote(P, 0, 8)), (None, Ack(P, 0, 7, V1)), 1.0)  # another nonce
    audit.sent(P, None, (None, Propose(P, 0, 7, (P, V1, V2))), 1.0)
    assert found == ["ack-not-durable", "ack-not-durable", "propose-not-durable"]


def test_audit_commit_needs_every_ack_delivered_a_full_view_and_the_disk() -> None:
    decision = Decision("d" * 32, P, "10.0.0.1", 0, (P, V1, V2))
    audit, found = _audit()
    audit.delivered(P, (None, Ack(P, 0, 7, V1)))
    audit.sent(P, _state(VOTE, decision=decision), (None, Commit(decision)), 1.0)
    assert found == ["commit-without-ack"]
    audit.delivered(P, (None, Ack(P, 0, 7, V2)))
    audit.sent(P, _state(VOTE, decision=decision), (None, Commit(decision)), 1.0)
    audit.sent(P, _state(VOTE), (None, Commit(decision)), 1.0)
    small = Decision("d" * 32, P, "10.0.0.1", 0, (P, V1))
    audit.sent(P, _state(VOTE, decision=small), (None, Commit(small)), 1.0)
    assert found == ["commit-without-ack", "commit-not-durable", "small-view"]


def test_audit_a_vote_leaves_only_by_a_durable_release() -> None:
    audit, found = _audit()
    audit.written(V1, _state(VOTE), _state(Vote(V2, 0, 1)), 1.0)  # not released: not sticky
    audit.written(V1, _state(VOTE), _state(None), 1.0)  # forgotten
    assert found == ["vote-dropped", "vote-dropped"]
    audit.sent(P, _state(None), (None, Release(P, 0, 7)), 2.0)  # released before it is durable
    assert found[-1] == "release-not-durable"
    audit.written(P, _state(VOTE), _state(None, released=(VOTE,)), 3.0)  # the proposer abandons
    audit.sent(P, _state(None, released=(VOTE,)), (None, Release(P, 0, 7)), 3.0)
    audit.written(V1, _state(VOTE), _state(None), 4.0)
    decision = Decision("d" * 32, P, "10.0.0.1", 0, (P, V1, V2))
    audit.written(V2, _state(Vote(V1, 3, 3)), _state(None, decision=decision), 4.0)
    assert len(found) == 3  # a released vote may go; a decision supersedes any vote
