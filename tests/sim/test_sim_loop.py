"""The event loop, seeded randomness and determinism of whole runs."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sim.loop import EventLoop, StopSimulation
from sim.rng import derive_hex, derive_rng
from sim.runner import percentile, run_many
from sim.scenario import load
from sim.world import run_seed

REPO = Path(__file__).resolve().parents[2]


def test_events_run_in_time_order_and_ties_in_scheduling_order() -> None:
    loop = EventLoop()
    seen: list[str] = []

    def note(label: str) -> tuple[str]:
        seen.append(label)
        return (label,)

    loop.call_at(2.0, note, "late")
    loop.call_at(1.0, note, "first-at-1")
    loop.call_at(1.0, note, "second-at-1")
    loop.call_at(0.5, note, "early")
    loop.run(until=10.0)
    assert seen == ["early", "first-at-1", "second-at-1", "late"]
    assert loop.now == 2.0
    assert loop.delivered == 4


def test_events_scheduled_while_running_keep_order() -> None:
    loop = EventLoop()
    seen: list[tuple[float, str]] = []

    def chain(label: str, depth: int) -> tuple[str]:
        seen.append((loop.now, label))
        if depth:
            loop.call_later(0.0, chain, label + "+", depth - 1)
            loop.call_later(1.0, chain, label + "!", 0)
        return (label,)

    loop.call_at(0.0, chain, "a", 2)
    loop.call_at(0.0, chain, "b", 0)
    loop.run(until=5.0)
    assert seen == [
        (0.0, "a"),
        (0.0, "b"),
        (0.0, "a+"),
        (0.0, "a++"),
        (1.0, "a!"),
        (1.0, "a+!"),
    ]


def test_cannot_schedule_in_the_past() -> None:
    loop = EventLoop()
    loop.call_at(1.0, lambda: ("x",))
    loop.run(until=1.0)
    with pytest.raises(ValueError, match="before now"):
        loop.call_at(0.5, lambda: ("y",))


def test_run_stops_at_until_and_stop_at() -> None:
    loop = EventLoop()
    seen: list[float] = []

    def note() -> tuple[str]:
        seen.append(loop.now)
        return ("t",)

    for t in (1.0, 2.0, 3.0, 4.0):
        loop.call_at(t, note)
    loop.run(until=2.5)
    assert seen == [1.0, 2.0]
    loop.stop_at = 3.0
    loop.run(until=10.0)
    assert seen == [1.0, 2.0, 3.0]
    assert loop.pending == 1


def _hashed(events: list[tuple[float, object]]) -> str:
    loop = EventLoop()
    for when, record in events:
        loop.call_at(when, lambda r=record: r)
    loop.run(until=100.0)
    return loop.trace_hash


def test_trace_hash_covers_delivered_events_only() -> None:
    base = _hashed([(0.0, ("a",)), (2.0, ("b",))])
    assert _hashed([(0.0, ("a",)), (1.0, None), (2.0, ("b",))]) == base  # stale: not traced
    assert _hashed([(0.0, ("b",)), (2.0, ("a",))]) != base
    assert _hashed([(0.0, ("a",)), (2.5, ("b",))]) != base  # the time is part of it
    assert _hashed([(0.0, ("a",)), (2.0, ("b", 1))]) != base


def test_an_after_event_hook_can_stop_the_run() -> None:
    loop = EventLoop()
    loop.call_at(1.0, lambda: ("a",))
    loop.call_at(2.0, lambda: ("b",))

    def stop() -> None:
        raise StopSimulation

    loop.after_event = stop
    with pytest.raises(StopSimulation):
        loop.run(until=10.0)
    assert loop.now == 1.0


def test_derived_streams_are_stable_and_independent() -> None:
    a = [derive_rng(7, "node", "s0").random() for _ in range(3)]
    b = [derive_rng(7, "node", "s0").random() for _ in range(3)]
    assert a == b
    assert derive_rng(7, "node", "s1").random() != a[0]
    assert derive_rng(8, "node", "s0").random() != a[0]
    node_id = derive_hex(7, "node-id", "s0", 0)
    assert len(node_id) == 32
    assert all(c in "0123456789abcdef" for c in node_id)
    # Pinned: both are SHA based, the same in every process and every CPython release.
    assert derive_hex(0, "x") == "dbcdd5257900b0eeebb3c43d1da7b80a"
    assert derive_rng(0, "x").random() == 0.9001888393778066


def test_derived_streams_do_not_depend_on_the_hash_seed() -> None:
    code = "from sim.rng import derive_rng; print(derive_rng(3, 'net', 's1').random())"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, PYTHONHASHSEED=hash_seed),
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0, float("inf")], 0.99) == float("inf")


@pytest.mark.parametrize("algorithm", ["classic", "broken"])
def test_same_seed_same_trace_and_different_seeds_differ(algorithm: str) -> None:
    scenario = load("crash-restart")
    first = run_seed(scenario, 5, algorithm)
    again = run_seed(scenario, 5, algorithm)
    other = run_seed(scenario, 6, algorithm)
    assert first.trace_hash == again.trace_hash
    assert first == again
    assert first.trace_hash != other.trace_hash


def test_trace_hash_is_the_same_in_fresh_interpreters() -> None:
    scenario = load("mdns-loss-30")
    expected = run_seed(scenario, 11, "classic").trace_hash
    for hash_seed in ("1", "2"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sim",
                "run",
                "mdns-loss-30",
                "--seed",
                "11",
                "--algorithm",
                "classic",
                "--print-hash",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, PYTHONHASHSEED=hash_seed),
        )
        assert done.stdout.strip() == expected


def test_worker_processes_do_not_change_results() -> None:
    scenario = load("happy-n3")
    serial = run_many(scenario, range(4), "classic", jobs=1)
    parallel = run_many(scenario, range(4), "classic", jobs=2)
    assert [r.seed for r in parallel] == [0, 1, 2, 3]
    assert [r.trace_hash for r in serial] == [r.trace_hash for r in parallel]


def _forbidden(*_args: object, **_kwargs: object) -> object:
    raise AssertionError("a simulated path used the wall clock or global randomness")


def test_simulated_paths_use_no_wall_clock_or_global_randomness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns", "sleep"):
        monkeypatch.setattr(time, name, _forbidden)
    for name in (
        "random",
        "randint",
        "randrange",
        "choice",
        "shuffle",
        "uniform",
        "getrandbits",
        "sample",
        "lognormvariate",
        "expovariate",
        "seed",
    ):
        monkeypatch.setattr(random, name, _forbidden)
    monkeypatch.setattr(os, "urandom", _forbidden)
    monkeypatch.setattr(uuid, "uuid4", _forbidden)
    for name in ("crash-restart", "crash-wipe", "mdns-burst", "lossy-network", "clock-skew"):
        scenario = load(name)
        for algorithm in ("classic", "broken"):
            run_seed(scenario, 1, algorithm)
