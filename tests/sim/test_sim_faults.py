"""Each fault model of the simulator, tested with a scripted probe instead of an election."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from sim.discovery import MdnsModel
from sim.dists import Distribution, Fixed, LogNormal, Uniform
from sim.network import INITIAL_RTO, Network
from sim.scenario import BurstSpec, DiscoverySpec, NetworkSpec
from sim.testing import Probe, ProbeAlgorithm, scenario
from sim.world import BASE_EPOCH, World

N = 20_000


MILLISECOND = Fixed(0.001)


def _network(
    *, latency: Distribution = MILLISECOND, loss: float = 0.0, duplicate: float = 0.0
) -> Network:
    return Network(NetworkSpec(latency, loss, duplicate, links=()), seed=1)


def test_loss_rate_matches_the_scenario() -> None:
    network = _network(loss=0.3)
    lost = sum(not network.transit("s0", "s1") for _ in range(N))
    assert 0.28 < lost / N < 0.32  # 0.3 +- 6 sigma


def test_duplication_rate_matches_the_scenario() -> None:
    network = _network(duplicate=0.1)
    copies = [len(network.transit("s0", "s1")) for _ in range(N)]
    assert set(copies) == {1, 2}
    assert 0.09 < copies.count(2) / N < 0.11


def test_latency_distributions() -> None:
    uniform = _network(latency=Uniform(0.01, 0.02))
    delays = [uniform.transit("s0", "s1")[0] for _ in range(N)]
    assert min(delays) >= 0.01
    assert max(delays) <= 0.02
    assert statistics.fmean(delays) == pytest.approx(0.015, rel=0.02)
    lognormal = _network(latency=LogNormal(0.005, 0.8))
    delays = [lognormal.transit("s0", "s1")[0] for _ in range(N)]
    assert statistics.median(delays) == pytest.approx(0.005, rel=0.05)
    assert max(delays) > 10 * 0.005  # a heavy tail


def test_loopback_is_instant_and_lossless() -> None:
    network = _network(loss=1.0)
    assert network.transit("s0", "s0") == [0.0]
    assert network.reliable_transit("s0", "s0", 1.0) == 0.0


def test_reliable_transit_retransmits_and_gives_up_on_partitions() -> None:
    network = _network(loss=0.5)
    delays = [network.reliable_transit("s0", "s1", 10.0) for _ in range(2000)]
    arrived = [d for d in delays if d is not None]
    assert len(arrived) > 1900  # all 6 tries within 10 s lost: 1.6%
    assert sum(d >= INITIAL_RTO for d in arrived) > 800  # about half needed a retransmit
    network = _network()
    network.cut("s0", "s1")
    assert network.reliable_transit("s0", "s1", 10.0) is None  # the cut holds throughout
    network.mend("s0", "s1")
    assert network.reliable_transit("s0", "s1", 10.0) == 0.001  # the next one gets through


def test_cuts_nest_and_holds_keep_their_ends() -> None:
    network = _network()
    network.cut("s0", "s2")
    network.cut("s0", "s2")  # a partition and a one-way cut over the same link
    assert network.blocked("s0", "s2")
    assert not network.blocked("s2", "s0")
    network.mend("s0", "s2")
    assert network.blocked("s0", "s2")  # the other cut still holds
    network.mend("s0", "s2")
    assert not network.blocked("s0", "s2")
    assert network.transit("s0", "s2") == [0.001]
    network.hold("s5", "s6", 2.0)
    network.hold("s5", "s6", 3.0)
    assert network.held_until("s5", "s6") == 2.0
    assert network.held_until("s6", "s5") is None
    network.release("s5", "s6", 2.0)
    assert network.held_until("s5", "s6") == 3.0
    network.release("s5", "s6", 3.0)
    assert network.held_until("s5", "s6") is None


def test_partitions_one_way_cuts_and_holds_have_windows() -> None:
    """The window semantics, through the world's verbs: on at start, off at end, both
    before any other event of that instant; nodes in no group reach everyone."""
    world = World(
        scenario(
            """
expected_servers: 1
nodes: {servers: 8}
faults:
  - partition: {groups: [[s0, s1], [s2]], start: 10, end: 20}
  - one_way: {from: s3, to: s4, start: 0, end: 5}
  - hold: {from: s5, to: s6, start: 1, end: 2}
"""
        ),
        0,
        "probe",
        implementation=ProbeAlgorithm(),
    )
    network = world.network
    seen: list[tuple[float, bool, bool, bool, bool, float | None]] = []

    def look(at: float) -> None:
        def probe() -> None:
            seen.append(
                (
                    at,
                    network.blocked("s0", "s2"),
                    network.blocked("s2", "s1"),
                    network.blocked("s0", "s7"),
                    network.blocked("s3", "s4"),
                    network.held_until("s5", "s6"),
                )
            )

        world.loop.call_at(at, probe)

    for at in (0.0, 1.5, 2.0, 5.0, 9.9, 10.0, 15.0, 20.0):
        look(at)
    world.run()
    assert seen == [
        (0.0, False, False, False, True, None),
        (1.5, False, False, False, True, 2.0),
        (2.0, False, False, False, True, None),
        (5.0, False, False, False, False, None),
        (9.9, False, False, False, False, None),
        (10.0, True, True, False, False, None),
        (15.0, True, True, False, False, None),
        (20.0, False, False, False, False, None),
    ]
    assert not network.blocked("s4", "s3")


def _discovery(*, loss: float = 0.0, burst: BurstSpec | None = None) -> DiscoverySpec:
    return DiscoverySpec(loss, burst, (), (), 0.0, 5.0, 1.0, None)


def test_mdns_iid_loss_rate() -> None:
    model = MdnsModel(_discovery(loss=0.3), seed=2)
    lost = sum(model.lost("s0", "s1") for _ in range(N))
    assert 0.28 < lost / N < 0.32
    assert not any(model.lost("s0", "s0") for _ in range(100))  # own answer: loopback


def _runs(flags: list[bool]) -> list[int]:
    runs: list[int] = []
    length = 0
    for flag in flags:
        if flag:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


def test_mdns_bursts_follow_gilbert_elliott() -> None:
    burst = BurstSpec(enter=0.05, leave=0.1, loss_good=0.0, loss_bad=1.0)
    model = MdnsModel(_discovery(burst=burst), seed=3)
    flags = [model.lost("s0", "s1") for _ in range(N)]
    stationary = burst.enter / (burst.enter + burst.leave)  # 1/3 of answers in bursts
    assert abs(sum(flags) / N - stationary) < 0.04
    assert statistics.fmean(_runs(flags)) == pytest.approx(1 / burst.leave, rel=0.15)
    iid = MdnsModel(_discovery(loss=stationary), seed=3)
    iid_flags = [iid.lost("s0", "s1") for _ in range(N)]
    assert statistics.fmean(_runs(iid_flags)) < 2  # i.i.d. losses come alone


DISCOVERY_SCENARIO = """
nodes: {servers: 3}
discovery: {blind: [s2], mute: [s1], stale: 30, query_interval: 10, window: 1}
faults:
  - crash: {node: s0, at: 5}
"""


def _advertise_and_query(probe: Probe, kind: str, detail: object) -> None:
    host = probe.host
    if kind == "boot":
        host.advertise(f"{host.ip}:1")
        host.set_timer(host.now() + 1)
    elif kind == "timer":
        host.query_discovery(1.0)
        host.set_timer(host.now() + 10)


def test_blind_mute_and_stale_answers() -> None:
    probe = ProbeAlgorithm(_advertise_and_query)
    world = World(scenario(DISCOVERY_SCENARIO), 0, "probe", implementation=probe)
    world.loop.run(until=50.0)
    ip = {name: f"{world.by_name[name].ip}:1" for name in ("s0", "s1", "s2")}
    # Queries at t=1, 11, 21, 31, 41; answers one second later.
    s1_heard = [set(d) for _, d in probe.log.of("s1", "discovery")]
    s2_heard = [set(d) for _, d in probe.log.of("s2", "discovery")]
    assert s1_heard[0] == {ip["s0"], ip["s1"], ip["s2"]}  # mute hears everyone
    assert all(heard == {ip["s2"]} for heard in s2_heard)  # blind hears only itself
    # s0 crashed at t=5: still answered by caches at t=11, 21, 31 (< 30 s), gone at t=41.
    assert [ip["s0"] in heard for heard in s1_heard] == [True, True, True, True, False]


ROUTING_SCENARIO = """
nodes: {servers: 3}
network: {latency: 0.01}
faults:
  - partition: {groups: [[s0], [s1]], start: 0, end: 10}
  - one_way: {from: s0, to: s2, start: 0, end: 10}
  - hold: {from: s2, to: s1, start: 0, end: 30}
"""


def _ping_everyone(probe: Probe, kind: str, detail: object) -> None:
    host = probe.host
    if kind == "boot":
        host.set_timer(host.now() + 1)
    elif kind == "timer":
        sent_at = round(host.now() - BASE_EPOCH)
        for other in ("s0", "s1", "s2"):
            if other != host.name:
                host.send(other, (host.name, sent_at))
        if sent_at < 20:
            host.set_timer(host.now() + 11)


def _received(probe: ProbeAlgorithm, name: str) -> list[tuple[float, Any]]:
    return [
        (round(t - BASE_EPOCH, 2), payload) for t, (_src, payload) in probe.log.of(name, "message")
    ]


def test_partition_one_way_and_hold_in_a_run() -> None:
    probe = ProbeAlgorithm(_ping_everyone)
    World(scenario(ROUTING_SCENARIO), 0, "probe", implementation=probe).loop.run(until=60.0)
    # Pings at t=1, 12, 23. s0 | s1 cut until 10, both ways.
    assert ("s0", 1) not in [p for _, p in _received(probe, "s1")]
    assert ("s1", 1) not in [p for _, p in _received(probe, "s0")]
    assert (12.01, ("s0", 12)) in _received(probe, "s1")
    # s0 -> s2 cut until 10, one way only.
    assert [p for _, p in _received(probe, "s2") if p[0] == "s0"] == [("s0", 12), ("s0", 23)]
    assert (1.01, ("s2", 1)) in _received(probe, "s0")
    # s2 -> s1 held until 30, then delivered at once and in order.
    from_s2 = [(t, p) for t, p in _received(probe, "s1") if p[0] == "s2"]
    assert from_s2 == [(30.0, ("s2", 1)), (30.0, ("s2", 12)), (30.0, ("s2", 23))]


def test_jitter_reorders_messages() -> None:
    def burst(probe: Probe, kind: str, detail: object) -> None:
        if kind == "boot" and probe.host.name == "s0":
            probe.host.set_timer(probe.host.now() + 1)
        if kind == "timer":
            for i in range(200):
                probe.host.send("s1", i)

    probe = ProbeAlgorithm(burst)
    text = "nodes: {servers: 2}\nnetwork: {latency: {lognormal: [0.01, 1.0]}}\n"
    World(scenario(text), 0, "probe", implementation=probe).loop.run(until=60.0)
    order = [p for _, (_, p) in probe.log.of("s1", "message")]
    assert sorted(order) == list(range(200))  # nothing lost
    assert order != list(range(200))  # but overtaken


def _write_on_boot(probe: Probe, kind: str, detail: object) -> None:
    if kind == "boot" and probe.host.disk() is None:
        probe.host.write_disk(("state of", probe.host.node_id))


@pytest.mark.parametrize("wipe", [False, True])
def test_crash_and_restart_keeps_or_wipes_the_data_dir(wipe: bool) -> None:
    text = f"""
nodes: {{servers: 2}}
disk: {{fsync: 0.5}}
faults:
  - crash: {{node: s1, at: 5, restart_after: 2, wipe: {str(wipe).lower()}}}
"""
    probe = ProbeAlgorithm(_write_on_boot)
    world = World(scenario(text), 0, "probe", implementation=probe)
    world.loop.run(until=60.0)
    boots = probe.log.of("s1", "boot")
    assert [round(t - BASE_EPOCH, 3) for t, _ in boots] == [0.0, 7.0]
    (first_id, first_disk), (second_id, second_disk) = [d for _, d in boots]
    assert first_disk is None
    if wipe:
        assert second_id != first_id
        assert second_disk is None
    else:
        assert second_id == first_id
        assert second_disk == ("state of", first_id)
    assert world.by_name["s1"].node_id == second_id


def test_a_crash_before_fsync_returns_loses_the_write() -> None:
    text = """
nodes: {servers: 1}
disk: {fsync: 2.0}
faults:
  - crash: {node: s0, at: 1, restart_after: 0.5}
"""
    probe = ProbeAlgorithm(_write_on_boot)
    World(scenario(text), 0, "probe", implementation=probe).loop.run(until=10.0)
    boots = [d for _, d in probe.log.of("s0", "boot")]
    assert [disk for _, disk in boots] == [None, None]
    # Only the second boot's write completed, and it did not wait for the lost one.
    assert [t for t, _ in probe.log.of("s0", "disk")] == [BASE_EPOCH + 1.5 + 2.0]


def test_clock_offset_is_seen_by_its_node_only() -> None:
    text = """
nodes: {servers: 2, boot: 3}
clock: {offsets: {s0: 7200}}
"""

    def timers(probe: Probe, kind: str, detail: object) -> None:
        if kind == "boot":
            probe.host.set_timer(probe.host.now() + 5)
        elif kind == "timer" and probe.host.name == "s0":
            probe.host.send("s1", probe.host.now())

    probe = ProbeAlgorithm(timers)
    world = World(scenario(text), 0, "probe", implementation=probe)
    world.loop.run(until=60.0)
    assert probe.log.of("s0", "boot")[0][0] == BASE_EPOCH + 7200 + 3
    assert probe.log.of("s1", "boot")[0][0] == BASE_EPOCH + 3
    # Timers are on each node's own clock, and fire after the same virtual interval.
    assert probe.log.of("s0", "timer")[0][0] == BASE_EPOCH + 7200 + 8
    assert probe.log.of("s1", "timer")[0][0] == BASE_EPOCH + 8
    # s1 reads its own clock when s0's message (carrying s0's reading) arrives.
    (when, (_, carried)) = probe.log.of("s1", "message")[0]
    assert carried == BASE_EPOCH + 7200 + 8
    assert BASE_EPOCH + 8 < when < BASE_EPOCH + 9


def test_boot_schedules_late_groups_and_random_crashes() -> None:
    text = """
nodes:
  servers: 3
  agents: 5
  boot: {uniform: [0, 10]}
  late: [{role: server, count: 2, at: 60}, {role: agent, count: 1, at: {uniform: [100, 110]}}]
faults:
  - crash: {node: random-server, at: 30}
"""
    for seed in range(5):
        probe = ProbeAlgorithm()
        world = World(scenario(text), seed, "probe", implementation=probe)
        world.loop.run(until=200.0)
        boots = {n: t - BASE_EPOCH for n, k, t, _ in probe.log.events if k == "boot"}
        assert sorted(boots) == sorted(["s0", "s1", "s2", "s3", "s4", *(f"a{i}" for i in range(6))])
        assert all(0 <= boots[n] <= 10 for n in ("s0", "s1", "s2", "a0", "a4"))
        assert boots["s3"] == boots["s4"] == 60
        assert 100 <= boots["a5"] <= 110
        down = [slot.name for slot in world.slots if not slot.up]
        assert len(down) == 1
        assert down[0] in ("s0", "s1", "s2")  # up at t=30: late servers boot at 60
