"""Bootstrap's decisions without discovery, the join-turn rule, and reset / info."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rancherd.bootstrap import BootstrapError, GossipHooks, decide_statically
from rancherd.cli import cli
from rancherd.config import Config, Secret
from rancherd.gossip.core import PeerInfo, PersistedState
from rancherd.gossip.election import JoinRole
from rancherd.gossip.messages import Decision, Progress, Vote
from rancherd.gossip.messages import Role as WireRole
from rancherd.install.builders import build_plan
from rancherd.install.plan import WaitForPeers
from rancherd.state import DataDir

A, B, C, D = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)
DECISION = Decision("c1", A, "10.0.0.1", 0, (A, B, C, D))


def test_static_rules_follow_the_original() -> None:
    assert decide_statically(Config(role=JoinRole.CLUSTER_INIT)).role is JoinRole.CLUSTER_INIT
    assert decide_statically(Config(role=JoinRole.SERVER)).role is JoinRole.CLUSTER_INIT
    joining = decide_statically(Config(role=JoinRole.SERVER, server="https://10.0.0.1:6443"))
    assert (joining.role, joining.server_url) == (JoinRole.SERVER, "https://10.0.0.1:6443")
    agent = decide_statically(
        Config(role=JoinRole.AGENT, server="https://10.0.0.1:6443", token=Secret("t"))
    )
    assert agent.role is JoinRole.AGENT
    with pytest.raises(BootstrapError, match="needs server"):
        decide_statically(Config(role=JoinRole.AGENT))


class _Core:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.decision = DECISION


class _Driver:
    def __init__(self, node_id: str, peers: list[PeerInfo]) -> None:
        self.core = _Core(node_id)
        self._peers = peers

    def peers(self) -> list[PeerInfo]:
        return self._peers


class _Node:
    def __init__(self, driver: _Driver) -> None:
        self.driver = driver


def peer(node_id: str, progress: Progress, *, alive: bool = True) -> PeerInfo:
    return PeerInfo(
        node_id, WireRole.SERVER, (), alive, 0.0, "gossip", True, None, DECISION, progress
    )


def hooks(me: str, peers: list[PeerInfo]) -> GossipHooks:
    plan = build_plan(Config(role=JoinRole.SERVER, token=Secret("t")), JoinRole.SERVER, "10.0.0.1")
    return GossipHooks(_Node(_Driver(me, peers)), plan)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("me", "others", "turn"),
    [
        # B is the smallest joiner: its turn once nobody smaller is waiting.
        (B, {A: Progress.READY, C: Progress.WAITING, D: Progress.WAITING}, True),
        # C waits while B (smaller) waits or installs...
        (C, {A: Progress.READY, B: Progress.WAITING, D: Progress.WAITING}, False),
        (C, {A: Progress.READY, B: Progress.INSTALLING, D: Progress.WAITING}, False),
        # ...and goes once B is ready (or failed: a broken node does not block the rest).
        (C, {A: Progress.READY, B: Progress.READY, D: Progress.WAITING}, True),
        (C, {A: Progress.READY, B: Progress.FAILED, D: Progress.WAITING}, True),
        # The init node's own progress does not count as a joiner.
        (B, {A: Progress.INSTALLING, C: Progress.WAITING}, True),
    ],
)
def test_servers_join_one_at_a_time_in_node_id_order(
    me: str, others: dict[str, Progress], turn: bool
) -> None:
    assert hooks(me, [peer(n, p) for n, p in others.items()])._my_turn() is turn


def test_a_dead_waiting_server_does_not_block_the_others() -> None:
    peers = [peer(A, Progress.READY), peer(B, Progress.WAITING, alive=False)]
    assert hooks(C, peers)._my_turn() is True


def test_init_ready_needs_the_init_nodes_ready_record() -> None:
    assert not hooks(B, [peer(A, Progress.INSTALLING)])._init_ready()
    assert hooks(B, [peer(A, Progress.READY)])._init_ready()


def _invoke(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env={"RANCHERD_IMPLICIT_PATHS": ""}, input=input)


def test_reset_releases_vote_and_decision_and_keeps_the_counters(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path)
    state = PersistedState(
        incarnation=7, vote=Vote(A, 3, 99), next_round=4, released=(), decision=DECISION
    )
    data_dir.save_gossip(state)
    refused = _invoke("reset", "--data-dir", str(tmp_path), input="n\n")
    assert refused.exit_code == 1
    assert data_dir.load_gossip() == state
    result = _invoke("reset", "--data-dir", str(tmp_path), "--yes")
    assert result.exit_code == 0, result.output
    assert f"vote: for {A} in round 3" in result.output
    assert data_dir.load_gossip() == dataclasses.replace(state, vote=None, decision=None)
    again = _invoke("reset", "--data-dir", str(tmp_path), "--yes")
    assert "nothing to reset" in again.output


def test_reset_refuses_while_a_daemon_holds_the_data_dir(tmp_path: Path) -> None:
    holder = DataDir(tmp_path)
    holder.save_gossip(PersistedState(vote=Vote(A, 0, 1)))
    holder.lock()
    try:
        result = _invoke("reset", "--data-dir", str(tmp_path), "--yes")
    finally:
        holder.unlock()
    assert result.exit_code == 1
    assert "stop it first" in result.output
    assert holder.load_gossip() == PersistedState(vote=Vote(A, 0, 1))


def test_reset_forget_install_removes_the_done_stamp(tmp_path: Path) -> None:
    from rancherd.state import DoneStamp

    data_dir = DataDir(tmp_path)
    data_dir.save_gossip(PersistedState(decision=DECISION))
    data_dir.save_done(DoneStamp("server", "https://10.0.0.1:6443", "c1", "k3s", 0.0))
    result = _invoke("reset", "--data-dir", str(tmp_path), "--yes", "--forget-install")
    assert result.exit_code == 0, result.output
    assert data_dir.load_done() is None


def test_info_reports_the_data_dir(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path)
    (tmp_path / "node-id").write_text(B + "\n")
    data_dir.save_gossip(PersistedState(vote=Vote(A, 2, 5), decision=DECISION))
    result = _invoke("info", "--data-dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["node_id"] == B
    assert info["vote"] == {"proposer": A, "round": 2}
    assert info["decision"]["cluster_id"] == "c1"
    assert info["running"] is False
    assert info["done"] is None


class _RecordingDriver(_Driver):
    def __init__(self) -> None:
        super().__init__(B, [])
        self.progress: list[Progress] = []

    def set_progress(self, progress: Progress) -> None:
        self.progress.append(progress)


def test_progress_is_installing_only_after_the_last_wait() -> None:
    from rancherd.install.apply import StepState

    plan = build_plan(Config(role=JoinRole.SERVER, token=Secret("t")), JoinRole.SERVER, "10.0.0.1")
    driver = _RecordingDriver()
    hook = GossipHooks(_Node(driver), plan)  # type: ignore[arg-type]
    ids = plan.step_ids()
    last_wait = max(i for i, s in enumerate(plan.steps) if isinstance(s, WaitForPeers))
    for step_id, step in list(plan.numbered())[: last_wait + 1]:
        hook.on_step(step_id, step, StepState.STARTED, "")
    assert driver.progress == []
    hook.on_step(ids[last_wait + 1], plan.steps[last_wait + 1], StepState.STARTED, "")
    assert driver.progress == [Progress.INSTALLING]
    hook.on_step(ids[-1], plan.steps[-1], StepState.FAILED, "boom")
    assert driver.progress[-1] is Progress.FAILED


def test_bootstrap_dry_run_without_discovery_prints_decision_and_plan(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "role: server\nserver: https://10.0.0.5:6443\ntoken: dry-run-token\n"
        "kubernetesVersion: v1.31.4+rke2r1\n"
    )
    result = _invoke(
        "bootstrap",
        "--config",
        str(config),
        "--data-dir",
        str(tmp_path / "d"),
        "--root",
        str(tmp_path / "root"),
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert "decision (config): server, joining https://10.0.0.5:6443" in result.output
    assert "/etc/rancher/rke2/config.yaml.d/40-rancherd.yaml" in result.output
    assert "dry-run-token" not in result.output
    assert not (tmp_path / "root").exists()
    assert not (tmp_path / "d" / "done.json").exists()
