"""The invariant checker, and proof that it catches a deliberately broken election."""

from __future__ import annotations

import json
import shlex

from click.testing import CliRunner

from sim.cli import main
from sim.invariants import InvariantChecker
from sim.scenario import load
from sim.world import run_seed

TOY_COMMAND = "python -m sim run happy-n3 --seed 0 --algorithm broken --set nodes.boot=0"


def test_one_cluster_is_fine() -> None:
    checker = InvariantChecker(allow_split=False)
    checker.decided("s0/aa", 0.0, "c1", "cluster-init", 5.0)
    checker.decided("s1/bb", 0.0, "c1", "server", 5.1)
    checker.decided("a0/cc", 0.0, "c1", "agent", 5.2)
    checker.decided("s0/aa", 0.0, "c1", "cluster-init", 9.0)  # a restart resumes it
    assert not checker.failed
    assert checker.clusters == 1
    assert checker.init_identities == 1
    assert checker.first_decision == 5.0


def test_two_cluster_inits_fail() -> None:
    checker = InvariantChecker(allow_split=False)
    checker.decided("s0/aa", 0.0, "c1", "cluster-init", 5.0)
    checker.decided("s1/bb", 0.0, "c2", "cluster-init", 6.0)
    kinds = [f.kind for f in checker.violations]
    assert kinds == ["two-inits", "disagree"]
    assert "s1/bb became cluster-init of c2; already cluster-init: s0/aa (c1)" in (
        checker.violations[0].text
    )


def test_a_node_booted_after_the_decision_never_becomes_init() -> None:
    checker = InvariantChecker(allow_split=False)
    checker.decided("s0/aa", 0.0, "c1", "server", 5.0)
    checker.decided("s3/dd", 7.0, "c1", "cluster-init", 8.0)
    assert [f.kind for f in checker.violations] == ["late-init"]


def test_decided_nodes_must_agree() -> None:
    checker = InvariantChecker(allow_split=False)
    checker.decided("s0/aa", 0.0, "c1", "server", 5.0)
    checker.decided("s1/bb", 0.0, "c2", "server", 6.0)
    assert [f.kind for f in checker.violations] == ["disagree"]


def test_a_node_never_changes_its_decision_even_when_splits_are_allowed() -> None:
    checker = InvariantChecker(allow_split=True)
    checker.decided("s0/aa", 0.0, "c1", "cluster-init", 5.0)
    checker.decided("s3/dd", 0.0, "c2", "cluster-init", 6.0)
    assert not checker.failed
    assert [f.kind for f in checker.tolerated] == ["two-inits", "disagree"]
    checker.decided("s0/aa", 0.0, "c2", "server", 7.0)
    assert [f.kind for f in checker.violations] == ["changed"]


def test_the_broken_toy_is_caught_at_once() -> None:
    scenario = load("happy-n3", ["nodes.boot=0"])
    result = run_seed(scenario, 0, "broken")
    assert not result.ok
    assert result.violations[0].startswith("two-inits at 3.000s")
    assert result.reproduce == TOY_COMMAND
    # The run stopped at the violating event: the last server never got to decide.
    assert result.end_time == 3.0
    assert [n.decision is None for n in result.nodes].count(True) == 1


def test_the_cli_prints_the_reproduce_command_and_it_reproduces() -> None:
    runner = CliRunner()
    first = runner.invoke(main, [*shlex.split(TOY_COMMAND)[3:], "--quiet"])
    assert first.exit_code == 1
    assert f"reproduce: {TOY_COMMAND}" in first.output
    assert "VIOLATION seed 0: two-inits" in first.output
    again = runner.invoke(main, [*shlex.split(TOY_COMMAND)[3:], "--json"])
    assert again.exit_code == 1
    summary = json.loads(again.stdout)["summaries"][0]
    assert summary["violations"] == 1
    assert summary["violating"][0]["reproduce"] == TOY_COMMAND


def test_many_seeds_of_the_toy_all_report_their_own_command() -> None:
    runner = CliRunner()
    done = runner.invoke(
        main,
        [
            "run",
            "happy-n3",
            "--algorithm",
            "broken",
            "--seeds",
            "5",
            "--set",
            "nodes.boot=0",
            "--json",
            "--quiet",
        ],
    )
    assert done.exit_code == 1
    summary = json.loads(done.stdout)["summaries"][0]
    assert summary["violations"] == 5
    assert [v["seed"] for v in summary["violating"]] == [0, 1, 2, 3, 4]
    assert summary["violating"][3]["reproduce"] == TOY_COMMAND.replace("--seed 0", "--seed 3")
