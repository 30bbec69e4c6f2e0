"""The context object: the shared options, their environment variables, their precedence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rancherd.cli import cli
from rancherd.gossip.core import PersistedState
from rancherd.gossip.messages import Decision, Vote
from rancherd.install.apply import PROGRESS_FILE
from rancherd.state import DataDir, DoneStamp

A, B = "a" * 32, "b" * 32


def run(*args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"RANCHERD_IMPLICIT_PATHS": "", **env})


def info_data_dir(before: tuple[str, ...] = (), after: tuple[str, ...] = (), **env: str) -> str:
    """The data dir ``rancherd BEFORE info --json AFTER`` uses."""
    result = run(*before, "info", "--json", *after, **env)
    assert result.exit_code == 0, result.output
    data_dir: str = json.loads(result.stdout)["data_dir"]
    return data_dir


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[str, str, str]:
    return str(tmp_path / "env"), str(tmp_path / "group"), str(tmp_path / "command")


def test_the_data_dir_comes_from_the_command_then_the_group_then_the_environment(
    dirs: tuple[str, str, str],
) -> None:
    env, group, command = dirs
    assert info_data_dir(RANCHERD_DATA_DIR=env) == env
    assert info_data_dir(("--data-dir", group), RANCHERD_DATA_DIR=env) == group
    both = info_data_dir(("--data-dir", group), ("--data-dir", command), RANCHERD_DATA_DIR=env)
    assert both == command
    assert info_data_dir(after=("--data-dir", command), RANCHERD_DATA_DIR=env) == command


def test_the_config_comes_from_the_environment_and_gives_the_data_dir(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"role: server\ntoken: a-long-test-token\ndataDir: {tmp_path / 'x'}\n")
    assert info_data_dir(RANCHERD_CONFIG=str(config)) == str(tmp_path / "x")
    shown = run("config", "--json", RANCHERD_CONFIG=str(config))
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["files"] == [str(config)]


def test_an_empty_implicit_paths_variable_means_none(tmp_path: Path) -> None:
    implicit = tmp_path / "implicit.yaml"
    implicit.write_text("role: server\ntoken: a-long-test-token\n")
    found = run("config", "--json", RANCHERD_IMPLICIT_PATHS=str(implicit))
    assert found.exit_code == 0, found.output
    none = run("config", RANCHERD_IMPLICIT_PATHS="")
    assert none.exit_code == 2
    assert "no rancherd config found" in none.stderr


def test_reset_forget_install_removes_the_installers_progress(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path / "d")
    decision = Decision("c1", A, "10.0.0.1", 0, (A, B))
    data_dir.save_gossip(PersistedState(incarnation=4, vote=Vote(A, 1, 2), decision=decision))
    data_dir.save_done(DoneStamp("server", "https://10.0.0.1:6443", "c1", "k3s", 0.0))
    (data_dir.path / PROGRESS_FILE).write_text("{}")
    result = run("reset", "--data-dir", str(data_dir.path), "--yes", "--forget-install")
    assert result.exit_code == 0, result.output
    assert not (data_dir.path / PROGRESS_FILE).exists()
    assert data_dir.load_done() is None
    assert data_dir.load_gossip() == PersistedState(incarnation=4)


def test_peers_and_info_show_votes_and_decisions_in_one_form(tmp_path: Path) -> None:
    from rancherd.state import decision_json, vote_json

    vote, decision = Vote(A, 1, 2), Decision("c1", A, "10.0.0.1", 3, (A, B))
    DataDir(tmp_path).save_gossip(PersistedState(vote=vote, decision=decision))
    stored = json.loads(DataDir(tmp_path).gossip_file.read_bytes())
    assert stored["vote"] == {**vote_json(vote), "nonce": 2}
    assert stored["decision"] == decision_json(decision)
    shown = json.loads(run("info", "--json", "--data-dir", str(tmp_path)).stdout)
    assert shown["vote"] == vote_json(vote)
    assert shown["decision"].items() <= decision_json(decision).items()
