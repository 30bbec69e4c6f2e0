"""A small sample of real scenario runs for both algorithms, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sim.cli import main
from sim.report import ReportPlan, write_report
from sim.runner import Summary, run_many, summarize
from sim.scenario import load
from sim.testing import gossip_unavailable
from sim.world import run_seed

SEEDS = range(3)
needs_gossip = pytest.mark.skipif(
    gossip_unavailable() is not None, reason=str(gossip_unavailable())
)


def _summary(
    name: str, algorithm: str, seeds: range = SEEDS, overrides: tuple[str, ...] = ()
) -> Summary:
    return summarize(run_many(load(name, overrides), list(seeds), algorithm))


# The classic algorithm: it works on the happy path and fails where it is known to fail.


def test_classic_decides_on_the_happy_path() -> None:
    summary = _summary("happy-n3", "classic")
    assert summary.seeds_decided == 3
    assert summary.violations == 0
    # Joiners wait for the cluster-init node's Rancher (classic.install, 180 s).
    assert 180 < summary.p50 < 260


def test_classic_stalls_with_one_server_too_many() -> None:
    summary = _summary("extra-servers-4", "classic")
    assert summary.seeds_decided == 0
    assert summary.undecided[2] == (
        2,
        "python -m sim run extra-servers-4 --seed 2 --algorithm classic",
    )
    assert summary.violations == 0
    assert summary.first_p50 == float("inf")


def test_classic_elects_twice_when_the_leader_is_silent_longer_than_the_cache() -> None:
    summary = _summary("silent-leader", "classic")
    assert summary.violations == 3
    assert summary.multi_init_seeds == 3
    assert "cluster-init" in summary.violating[0][1]


def test_classic_split_in_a_2n_partition_is_counted_not_failed() -> None:
    summary = _summary("split-2n", "classic")
    assert summary.violations == 0
    assert summary.tolerated_split_seeds == 3


def test_classic_is_deterministic_with_faults() -> None:
    scenario = load("crash-restart")
    assert run_seed(scenario, 4, "classic") == run_seed(scenario, 4, "classic")


# The gossip algorithm (skipped while GossipCore is a stub).


@needs_gossip
@pytest.mark.parametrize(
    "name",
    [
        "happy-n3",
        "mdns-loss-30",
        "extra-servers-4",
        "crash-restart",
        "partition-heal",
        "clock-skew",
        "late-1m",
    ],
)
def test_gossip_decides_safely(name: str) -> None:
    summary = _summary(name, "gossip")
    assert summary.violations == 0, summary.violating
    assert summary.seeds_decided == 3


@needs_gossip
def test_gossip_2n_split_is_counted_not_failed() -> None:
    summary = _summary("split-2n", "gossip")
    assert summary.violations == 0
    assert summary.tolerated_split_seeds == 3


@needs_gossip
def test_gossip_is_deterministic() -> None:
    scenario = load("crash-wipe")
    first = run_seed(scenario, 2, "gossip")
    assert first.trace_hash == run_seed(scenario, 2, "gossip").trace_hash
    assert first.trace_hash != run_seed(scenario, 3, "gossip").trace_hash


@needs_gossip
def test_gossip_through_the_codec_gives_the_same_run() -> None:
    scenario = load("happy-n3")
    plain = run_seed(scenario, 1, "gossip")
    coded = run_seed(scenario, 1, "gossip", codec=True)
    assert coded.ok
    assert coded.trace_hash == plain.trace_hash  # the codec round trip is exact


# The CLI.


def test_run_json_summary() -> None:
    done = CliRunner().invoke(
        main,
        [
            "run",
            "happy-n3",
            "--algorithm",
            "classic",
            "--seeds",
            "2",
            "--json",
            "--per-seed",
            "--quiet",
        ],
    )
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)["summaries"][0]
    assert summary["seeds"] == 2
    assert summary["seeds_decided"] == 2
    assert summary["violations"] == 0
    assert set(summary["time_to_decision"]) >= {"p50", "p99", "max"}
    assert summary["messages_per_node_per_second"] > 0
    assert [s["seed"] for s in summary["per_seed"]] == [0, 1]


def test_run_check_determinism() -> None:
    done = CliRunner().invoke(
        main,
        ["run", "mdns-burst", "--algorithm", "classic", "--seed", "9", "--check-determinism"],
    )
    assert done.exit_code == 0, done.output
    assert "determinism seed 9: same trace hash in 3 runs" in done.output


def test_run_single_seed_lists_nodes_and_trace() -> None:
    done = CliRunner().invoke(main, ["run", "happy-n1", "--algorithm", "classic", "--trace"])
    assert done.exit_code == 0, done.output
    assert "boot s0" in done.output
    assert "cluster-init of classic-" in done.output or "mdns s0" in done.output


def test_scenario_errors_exit_2() -> None:
    done = CliRunner().invoke(main, ["run", "happy-n3", "--set", "discovery.loss=7"])
    assert done.exit_code == 2
    assert "discovery.loss: must be <= 1.0" in done.output


def test_sweep_grid(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    done = CliRunner().invoke(
        main,
        [
            "sweep",
            "happy-n3",
            "--algorithm",
            "classic",
            "--grid",
            "discovery.loss=0,0.5",
            "--grid",
            "server_cache_duration=10,60",
            "--seeds",
            "2",
            "--jobs",
            "1",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert done.exit_code == 0, done.output
    cells = json.loads(out.read_text())["cells"]
    assert [c["params"] for c in cells] == [
        {"discovery.loss": "0", "server_cache_duration": "10"},
        {"discovery.loss": "0", "server_cache_duration": "60"},
        {"discovery.loss": "0.5", "server_cache_duration": "10"},
        {"discovery.loss": "0.5", "server_cache_duration": "60"},
    ]
    assert "p99" in done.output


def test_list_and_validate() -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["list"])
    assert listed.exit_code == 0
    assert "silent-leader" in listed.output
    checked = runner.invoke(main, ["validate"])
    assert checked.exit_code == 0
    assert "ok happy-n3" in checked.output


def test_bench_prints_wall_time() -> None:
    done = CliRunner().invoke(
        main, ["bench", "--nodes", "30", "--virtual-seconds", "20", "--algorithm", "classic"]
    )
    assert done.exit_code == 0, done.output
    assert "30 nodes (5 servers) x 20 virtual s:" in done.output
    assert "s wall" in done.output


def test_report_writes_markdown_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plan = ReportPlan(
        seeds=2,
        heatmap_seeds=1,
        algorithms=("classic",),
        cdf_scenarios=("happy-n3",),
        heatmap_loss=(0.0, 0.5),
        heatmap_cache=(10.0, 60.0),
        scaling=(("happy-n1", 1), ("happy-n3", 3)),
        safety_scenarios=("happy-n3", "silent-leader"),
    )
    path = write_report(tmp_path, seeds=2, jobs=1, progress=False, plan=plan)
    text = path.read_text()
    assert f"Made by `python -m sim report {tmp_path} --seeds 2` at revision `" in text
    for image in (
        "cdf_time_to_decision.png",
        "heatmap_classic.png",
        "messages_vs_n.png",
        "safety.png",
    ):
        assert (tmp_path / image).stat().st_size > 1000
        assert image in text
    assert "| silent-leader | classic | 0/2 | 2 |" in text
    assert "python -m sim run silent-leader --seed 0 --algorithm classic" in text
    assert "python -m sim sweep happy-n3 --algorithm classic --seeds 1 --grid" in text
    assert json.loads((tmp_path / "results.json").read_text())["algorithms"] == ["classic"]
