"""The rough edges a new user hit (issue 12), one test each."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner, Result
from fake_runtime import root_with_install_script

from rancherd.cli import cli
from rancherd.demo import free_port, run_demo
from rancherd.discover import setup_logging
from rancherd.gossip.core import PeerInfo, PersistedState, SplitDetected
from rancherd.gossip.driver import Driver
from rancherd.gossip.messages import Decision, Progress, Role, Vote
from rancherd.state import DataDir

A, B = "a" * 32, "b" * 32


def run(*args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"RANCHERD_IMPLICIT_PATHS": "", **env})


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("role: server\ntoken: a-long-test-token\nkubernetesVersion: v1.31.4+k3s1\n")
    return path


@pytest.mark.parametrize("server", ["not a url", "http://10.0.0.5", "https://a b", "x:y"])
def test_plan_refuses_a_server_that_is_not_a_host_or_url(tmp_path: Path, server: str) -> None:
    result = run("plan", "--config", str(_config(tmp_path)), "--role", "server", "--server", server)
    assert result.exit_code == 2
    assert f"{server!r} is not a host or an https:// URL" in result.stderr


@pytest.mark.parametrize(
    ("server", "url"),
    [
        ("10.0.0.5", "https://10.0.0.5:6443"),
        # A server: is a Rancher URL: its host's supervisor port, whatever port it names.
        ("k8s.example.com:7443", "https://k8s.example.com:6443"),
        ("https://[fd00::5]", "https://[fd00::5]:6443"),
    ],
)
def test_plan_takes_hosts_and_urls(tmp_path: Path, server: str, url: str) -> None:
    result = run("plan", "--config", str(_config(tmp_path)), "--role", "server", "--server", server)
    assert result.exit_code == 0, result.output
    assert f"joining {url}" in result.stdout.splitlines()[0]


def test_plan_says_cluster_init_joins_nobody(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    result = run("plan", "--config", config, "--role", "cluster-init", "--server", "10.0.0.5")
    assert result.exit_code == 2
    assert "--server is for a join" in result.stderr


def test_info_prints_plain_words_not_python(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path)
    (tmp_path / "node-id").write_text(B + "\n")
    decision = Decision("c1", A, "10.0.0.1", 0, (A, B))
    data_dir.save_gossip(PersistedState(vote=Vote(A, 2, 5), decision=decision))
    result = run("info", "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert not any(mark in result.stdout for mark in ("{", "}", "'", "None", "False"))
    assert f"vote: proposer {A}, round 2\n" in result.stdout
    assert f"decision: cluster id c1, init node {A}, init host 10.0.0.1\n" in result.stdout
    assert "running: no\n" in result.stdout


def test_reset_leaves_a_missing_data_dir_missing(tmp_path: Path) -> None:
    missing = tmp_path / "never-created"
    result = run("reset", "--data-dir", str(missing), "--yes")
    assert result.exit_code == 0, result.output
    assert "does not exist" in result.stdout
    assert not missing.exists()


def test_a_failed_step_shows_its_output_once(tmp_path: Path) -> None:
    script = "#!/bin/sh\necho the-one-line-of-output\nexit 3\n"
    root = root_with_install_script(tmp_path / "root", script)
    result = run(
        "bootstrap",
        "--config",
        str(_config(tmp_path)),
        "--data-dir",
        str(tmp_path / "data"),
        "--root",
        str(root),
        RANCHERD_INSTALL_SCRIPT="/install.sh",
    )
    assert result.exit_code == 1
    assert result.stderr.count("the-one-line-of-output") == 1


async def test_demo_of_one_node_says_node_not_nodes() -> None:
    shown: list[str] = []
    with trio.fail_after(30):
        await run_demo(1, 0.0, 20.0, shown.append, seed=1)
    assert shown[0].startswith("starting 1 node on 127.0.0.1 port ")


async def test_the_split_error_names_the_address_as_the_status_line_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Core:
        """Just what the driver reads when it logs a split."""

        def status(self, now: float) -> None:
            return None

        def peers(self, now: float) -> list[PeerInfo]:
            return [
                PeerInfo(
                    B, Role.SERVER, ("10.0.0.7:8443",), True, 0.0, "discovery", True, None,
                    None, Progress.NONE,
                )
            ]  # fmt: skip

    ours = Decision("c1", A, "10.0.0.1", 0, (A,))
    theirs = Decision("c2", B, "10.0.0.7", 0, (B,))
    core: Any = Core()
    driver = Driver(core, DataDir(Path("/nonexistent")))
    with caplog.at_level(logging.ERROR, logger="rancherd.gossip"):
        driver._note(SplitDetected(ours, theirs, B))
    assert "ours c1, 10.0.0.7:8443 reports c2" in caplog.text
    assert B not in caplog.text


def test_verbose_logging_keeps_library_chatter_out_and_names_the_node(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rancherd.discover import LOG_NODE

    setup_logging(verbose=True, journal=False)
    try:
        logging.getLogger("trio-websocket").debug("a frame")
        named = LOG_NODE.set("node-2")
        logging.getLogger("rancherd.gossip").debug("peer alive")
        LOG_NODE.reset(named)
    finally:
        logging.getLogger().handlers[:] = []
    err = capsys.readouterr().err
    assert "a frame" not in err
    assert "DEBUG   node-2 rancherd.gossip: peer alive" in err


def test_discover_json_on_a_timeout_says_what_it_waited_for(tmp_path: Path) -> None:
    port = free_port(["127.0.0.1"], first=30000 + os.getpid() % 20000)
    config = tmp_path / "n.yaml"
    config.write_text(
        "role: server\ntoken: a-long-test-token\naddress: 127.0.0.1\n"
        "discovery:\n  params: 'provider=static addrs=127.0.0.1'\n  expectedServers: 2\n"
        f"  listenAddress: 127.0.0.1\n  port: {port}\n  preset: local\n"
    )
    result = run(
        "discover", "--config", str(config), "--data-dir", str(tmp_path / "d"), "--json",
        "--timeout", "0.5",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    answer = json.loads(result.stdout)
    assert answer["decided"] is False
    assert "waiting for 1 more server" in answer["status"]
    assert answer["waiting_for"] == []
    assert "no decision after 0.5s" in result.stderr
