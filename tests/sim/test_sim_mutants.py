"""The simulator catches every planted election bug, and reports nothing without one.

``python -m sim mutants --json`` plants each bug of ``sim/mutants.py`` in turn and hunts it
through the election scenarios; the unmutated code runs the same seeds (``baseline``).
About 10 CPU-seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rancherd.gossip.election import Election
from sim.mutants import MUTANTS, by_name, hunt, planted

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_python_m_sim_mutants_catches_every_planted_bug() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sim", "mutants", "--json"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    score = json.loads(done.stdout)
    assert score["mutants"] == len(MUTANTS) == 8
    assert score["caught"] == 8
    assert score["missed"] == []
    assert score["baseline_violations"] == []  # the unmutated code, same runs: 0 violations
    assert all(catch["reproduce"] for catch in score["catches"])


def test_a_mutant_is_planted_only_inside_its_block() -> None:
    mutant = by_name("vote-not-sticky")
    original = Election.__dict__["_bound_elsewhere"]
    with planted(mutant):
        assert Election.__dict__["_bound_elsewhere"] is not original
    assert Election.__dict__["_bound_elsewhere"] is original
    with pytest.raises(RuntimeError), planted(mutant):
        raise RuntimeError("a failing run restores the product too")
    assert Election.__dict__["_bound_elsewhere"] is original
    with pytest.raises(KeyError):
        by_name("no-such-bug")


def test_a_missed_mutant_is_reported_missed() -> None:
    # One seed of the happy path cannot reveal a Release bug: no round is ever abandoned.
    catch = hunt(by_name("release-any-round"), [("happy-n3", 1)])
    assert catch.caught_by is None
    assert catch.runs == 1
