"""Tier 3: a real etcd as the oracle of ``rancherd bootstrap``, in network namespaces.

Each node is a real ``rancherd bootstrap --root`` process in its own namespace (as in
``test_e2e_bootstrap.py``: mDNS, ``expectedServers: 3``, the fake runtime inside each
root), and the fake runtime starts a real etcd the way k3s's embedded etcd forms its
cluster (``fake_runtime/etcd.py``): ``cluster-init: true`` starts a new cluster, a joining
server adds itself as a member through the init node, then starts. At the end every
node's etcd is asked for its cluster id and member list: one cluster, every server a
started member, every node reporting the same list.

- ``test_servers_form_one_etcd_cluster``: 3 and 5 servers.
- ``test_sigkill_sweep_never_makes_two_clusters``: each trial SIGKILLs one rancherd at a
  random moment of the decide-and-install path and restarts it; no trial may end with
  two etcd clusters (nor without one). ``$RANCHERD_ETCD_SWEEP`` trials (CI: 2).
- ``test_joins_at_once_versus_staggered``: only when ``$RANCHERD_ETCD_STAGGER`` trials are
  asked for (a measurement, docs/OPERATIONS.md): the same fleet with the test switch
  ``RANCHERD_TEST_JOIN_AT_ONCE=1`` (joining servers skip their turn) and without.

``$RANCHERD_ETCD_REPORT`` (a file) gets one JSON line per trial. Needs root, ``ip`` and
``etcd`` (Debian package etcd-server); skips with the reason elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from fake_runtime import TESTS_DIR, running
from fake_runtime.etcd import etcd_unavailable_reason
from netns import Lab, netns_lab, skip_unless_netns, stop_process
from test_e2e_bootstrap import (
    STOP_GRACE,
    Boot,
    describe,
    fleet,
    kill_fake_runtimes,
    make_boots,
    start,
)

pytestmark = pytest.mark.real

SETTLE = 150.0
"""Seconds for a fleet to decide and install (a 3-server run takes about 15 s and a
5-server one about 25 s on an idle 2-core machine; generous for a loaded one)."""
POLL = 0.1
SWEEP_TRIALS = int(os.environ.get("RANCHERD_ETCD_SWEEP") or 2)
STAGGER_TRIALS = int(os.environ.get("RANCHERD_ETCD_STAGGER") or 0)
REPORT = os.environ.get("RANCHERD_ETCD_REPORT")
KILL_WINDOW = (0.5, 11.0)
"""The sweep's kills fall uniformly in this window of seconds after the start: from
discovery, through the election (about 1-5 s), to the last server's install (done
stamps at about 8-13 s with 3 servers on an idle 2-core machine)."""


@pytest.fixture
def lab5() -> Iterator[Lab]:
    skip_unless_netns()
    reason = etcd_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with netns_lab(5) as lab:
        yield lab


@dataclass
class Trial:
    """One fleet run and what its etcd said at the end."""

    kind: str
    servers: int
    seed: int | None = None
    killed: str | None = None
    kill_at: float | None = None
    killed_progress: str | None = None
    """What the killed node had done when it was killed (from its data dir)."""
    seconds: float = 0.0
    outcome: str = ""
    """``one cluster``, ``two clusters`` (several cluster ids), or ``broken: why``."""
    reports: dict[str, Any] = field(default_factory=dict)
    runtime_errors: dict[str, str] = field(default_factory=dict)
    """Why a node's fake runtime did not start (its last line), by node."""

    def record(self) -> None:
        if REPORT:
            with Path(REPORT).open("a") as file:
                file.write(json.dumps(asdict(self)) + "\n")


def fleet_env(tmp_path: Path, lab: Lab, *, at_once: bool) -> tuple[Path, dict[str, str]]:
    _, config, env = fleet(tmp_path, lab, "etcd test token")
    env |= {
        "FAKE_INSTALL_SECONDS": "1",
        "FAKE_ETCD": "1",
        "FAKE_ETCD_BINARY": shutil.which("etcd") or "etcd",
    }
    if at_once:
        env["RANCHERD_TEST_JOIN_AT_ONCE"] = "1"  # the test switch: no join-turn wait
    return config, env


def etcd_report(boot: Boot) -> dict[str, Any]:
    """What this node's etcd says (``python -m fake_runtime.etcd members`` in its namespace)."""
    env = {**os.environ, "PYTHONPATH": str(TESTS_DIR)}
    result = subprocess.run(
        boot.namespace.command([sys.executable, "-m", "fake_runtime.etcd", "members"]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-500:]}
    report = json.loads(result.stdout)
    assert isinstance(report, dict)
    return report


def judge(reports: dict[str, dict[str, Any]], servers: int) -> str:
    clusters = {r["cluster_id"] for r in reports.values() if "cluster_id" in r}
    if len(clusters) > 1:
        return "two clusters"
    errors = {name: r["error"] for name, r in reports.items() if "error" in r}
    if errors:
        return f"broken: no etcd answer from {sorted(errors)}"
    lists = {json.dumps(r["members"]) for r in reports.values()}
    if len(lists) != 1:
        return "broken: member lists differ"
    (members,) = [r["members"] for r in reports.values()][:1]
    if len(members) != servers or any(not name for name, _ in members):
        return f"broken: {len(members)} members, unstarted: {[u for n, u in members if not n]}"
    return "one cluster"


def runtime_errors(boots: list[Boot]) -> dict[str, str]:
    """The last line of each fake runtime that failed (a refused etcd join, say)."""
    errors = {}
    for boot in boots:
        log = boot.root / "fake" / "server.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        failed = [line for line in lines if "cannot join" in line or "etcd exited" in line]
        if failed:
            errors[boot.name] = failed[-1]
    return errors


def progress_of(boot: Boot) -> str:
    """How far a node had got: decided or not, and the plan steps done."""
    decided = (boot.data_dir / "gossip.json").exists() and "decision" in (
        boot.data_dir / "gossip.json"
    ).read_text(errors="replace")
    try:
        progress = json.loads((boot.data_dir / "plan-progress.json").read_text())
        done = progress.get("done", [])
    except (FileNotFoundError, ValueError):
        done = []
    stamp = (boot.data_dir / "done.json").exists()
    last = done[-1] if done else "none"
    return f"decided={'yes' if decided else 'no'} last-step={last} done-stamp={stamp}"


async def run_fleet(
    lab: Lab,
    tmp_path: Path,
    servers: int,
    *,
    kind: str,
    at_once: bool = False,
    seed: int | None = None,
) -> Trial:
    """Boot ``servers`` nodes (with the sweep's one SIGKILL when ``seed`` is given), wait
    until they settle, and judge their etcd."""
    config, env = fleet_env(tmp_path, lab, at_once=at_once)
    boots = make_boots(lab, tmp_path)[:servers]
    trial = Trial(kind, servers, seed)
    begun = time.monotonic()
    try:
        with trio.fail_after(SETTLE + 4 * STOP_GRACE + 120):  # a backstop
            for boot in boots:
                await start(boot, config, env)
            if seed is not None:
                rng = random.Random(seed)
                victim = rng.choice(boots)
                trial.killed, trial.kill_at = victim.name, round(rng.uniform(*KILL_WINDOW), 2)
                await trio.sleep(trial.kill_at)
                await sigkill_and_restart(victim, config, env, trial)
            await settle(boots, servers, begun, at_once)
            trial.seconds = round(time.monotonic() - begun, 1)
            trial.reports = {boot.name: etcd_report(boot) for boot in boots}
            trial.outcome = judge(trial.reports, servers)
            trial.runtime_errors = runtime_errors(boots)
    finally:
        await clean_up(boots)
    trial.record()
    if trial.outcome != "one cluster":
        print(f"{trial.kind}: {trial.outcome}\n{describe(boots)}")
    return trial


async def sigkill_and_restart(boot: Boot, config: Path, env: dict[str, str], trial: Trial) -> None:
    assert boot.process is not None
    if boot.process.returncode is None:
        boot.process.send_signal(signal.SIGKILL)
    await boot.process.wait()
    trial.killed_progress = progress_of(boot)
    await start(boot, config, env)


def exited_already(boot: Boot) -> bool:
    return boot.process is not None and boot.process.returncode is not None


async def settle(boots: list[Boot], servers: int, begun: float, at_once: bool) -> None:
    """Until every done stamp is written; with joins at once, also until a node fails
    (its rancherd exits: the failure is the finding, judged by etcd)."""
    with trio.move_on_after(max(1.0, SETTLE - (time.monotonic() - begun))):
        while not all(boot.done() for boot in boots):
            exited = [
                b for b in boots if b.process is not None and b.process.returncode is not None
            ]
            if exited and at_once:
                return
            assert not exited, f"{[b.name for b in exited]} exited\n{describe(boots)}"
            await trio.sleep(POLL)


async def clean_up(boots: list[Boot]) -> None:
    """Stop the nodes, their fake runtimes and etcds; then whatever is left in their
    namespaces (a killed node's orphans), so the next trial starts clean."""
    for boot in boots:
        if boot.process is not None:
            await stop_process(boot.process, grace=STOP_GRACE)
    pids = kill_fake_runtimes(boots)  # each stops its etcd
    with trio.move_on_after(15):
        while any(map(running, pids)):  # noqa: ASYNC110  (polling /proc: no event to wait on)
            await trio.sleep(POLL)
    with trio.move_on_after(15):
        while left := [pid for boot in boots for pid in boot.namespace.pids() if running(pid)]:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await trio.sleep(POLL)


@pytest.mark.parametrize("servers", [3, 5])
async def test_servers_form_one_etcd_cluster(lab5: Lab, tmp_path: Path, servers: int) -> None:
    trial = await run_fleet(lab5, tmp_path, servers, kind=f"{servers} servers")
    assert trial.outcome == "one cluster", trial.reports
    ((_, report),) = list(trial.reports.items())[:1]
    assert len(report["members"]) == servers


async def test_sigkill_sweep_never_makes_two_clusters(lab5: Lab, tmp_path: Path) -> None:
    base = int(os.environ.get("RANCHERD_ETCD_SWEEP_SEED") or 0)
    outcomes = []
    for seed in range(base, base + SWEEP_TRIALS):
        trial = await run_fleet(lab5, tmp_path / f"t{seed}", 3, kind="sigkill sweep", seed=seed)
        outcomes.append((seed, trial.killed, trial.kill_at, trial.killed_progress, trial.outcome))
    assert all(outcome == "one cluster" for *_, outcome in outcomes), outcomes


@pytest.mark.skipif(STAGGER_TRIALS == 0, reason="a measurement: set RANCHERD_ETCD_STAGGER=n")
async def test_joins_at_once_versus_staggered(lab5: Lab, tmp_path: Path) -> None:
    at_once, staggered = [], []
    for index in range(STAGGER_TRIALS):
        trial = await run_fleet(lab5, tmp_path / f"a{index}", 3, kind="at once", at_once=True)
        at_once.append(trial.outcome)
        trial = await run_fleet(lab5, tmp_path / f"s{index}", 3, kind="staggered")
        staggered.append(trial.outcome)
    print(f"at once: {at_once}\nstaggered: {staggered}")
    assert all(outcome == "one cluster" for outcome in staggered), staggered
    assert any(outcome != "one cluster" for outcome in at_once), at_once
