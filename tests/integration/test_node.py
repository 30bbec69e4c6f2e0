"""A whole node (data dir, keys, links, driver, provider, control socket) in one process.

The nodes use the in-memory transport, so these run anywhere; the control socket is a
real Unix socket in the node's temporary data dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

import pytest
import trio
import trio.testing
from click.testing import CliRunner
from node_harness import PORT, make_config, make_node

from rancherd.cli import cli
from rancherd.control import ControlError, fetch_snapshots
from rancherd.gossip.election import JoinRole
from rancherd.gossip.memory_transport import MemoryNetwork
from rancherd.node import Node, NodeError
from rancherd.peers_view import render
from rancherd.state import DataDir, DataDirBusy


async def test_three_nodes_decide_and_report_through_the_control_socket(tmp_path: Path) -> None:
    network = MemoryNetwork()
    configs = [make_config(i, 3, tmp_path) for i in range(3)]
    nodes = [make_node(network, c) for c in configs]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run)
            outcomes = [await node.wait_decided() for node in nodes]
            for node in nodes:
                with trio.fail_after(10):
                    await node.wait_members_informed()
            socket_path = DataDir(configs[0].data_dir).control_socket
            assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
            snapshots = [s async for s in fetch_snapshots(socket_path, watch=False)]
            nursery.cancel_scope.cancel()
    assert len({o.cluster_id for o in outcomes}) == 1
    assert sorted(o.role for o in outcomes) == sorted(
        [JoinRole.CLUSTER_INIT, JoinRole.SERVER, JoinRole.SERVER]
    )
    init = next(o for o in outcomes if o.role is JoinRole.CLUSTER_INIT)
    assert init.server_url is None
    init_host = next(n for n in nodes if n.node_id == init.node_id).config.address
    assert [o.server_url for o in outcomes if o.server_url] == [f"https://{init_host}:6443"] * 2
    (snapshot,) = snapshots
    assert snapshot["status"]["phase"] == "decided"
    assert snapshot["node"]["node_id"] == nodes[0].node_id
    assert {p["node_id"] for p in snapshot["peers"]} == {n.node_id for n in nodes[1:]}
    assert all(p["same_decision"] for p in snapshot["peers"])
    text = render(snapshot)
    assert text.splitlines()[1].startswith("status: decided")
    assert "node test token" not in repr(snapshot)
    # The socket is removed when the node stops.
    assert not socket_path.exists()


async def test_a_waiting_node_says_what_it_waits_for(tmp_path: Path) -> None:
    network = MemoryNetwork()
    config = make_config(0, 3, tmp_path)
    node = make_node(network, config)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            socket_path = DataDir(config.data_dir).control_socket
            watched = []
            async with contextlib.aclosing(fetch_snapshots(socket_path, watch=True)) as stream:
                async for snapshot in stream:
                    watched.append(snapshot)
                    if len(watched) == 2:
                        break
            nursery.cancel_scope.cancel()
    assert "waiting for 2 more servers" in watched[-1]["status"]["text"]
    assert watched[-1]["peers"] == []
    # Discovery lists the two other addresses, where nobody answers: they get rows.
    silent = [row["address"] for row in watched[-1]["unanswered"]]
    assert silent == [f"10.1.0.2:{PORT}", f"10.1.0.3:{PORT}"]
    text = render(watched[-1])
    assert f"10.1.0.2:{PORT}: discovered " in text
    assert "no answer: not a rancherd, another token, or a firewall" in text


async def test_second_node_on_one_data_dir_is_refused(tmp_path: Path) -> None:
    network = MemoryNetwork()
    config = make_config(0, 2, tmp_path)
    first = make_node(network, config)
    second = make_node(MemoryNetwork(), config)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            with pytest.raises(DataDirBusy, match="another rancherd"):
                await second.run()
            nursery.cancel_scope.cancel()


async def test_control_socket_absent_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="is rancherd running"):
        async for _ in fetch_snapshots(tmp_path / "control.sock", watch=False):
            pass


def test_node_needs_discovery_and_token(tmp_path: Path) -> None:
    config = make_config(0, 1, tmp_path)
    from dataclasses import replace

    with pytest.raises(NodeError, match="no token"):
        Node(replace(config, token=None), DataDir(tmp_path))
    with pytest.raises(NodeError, match="no discovery"):
        Node(replace(config, discovery=None), DataDir(tmp_path))


def test_discover_with_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("role: server\ntoken: 0123\n")
    result = CliRunner().invoke(
        cli,
        ["discover", "--config", str(bad), "--data-dir", str(tmp_path / "d")],
        env={"RANCHERD_IMPLICIT_PATHS": ""},
    )
    assert result.exit_code == 2, result.output


def test_peers_without_a_running_node_fails_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["peers", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "is rancherd running with this data dir" in result.output


async def test_a_wiped_init_node_says_so_and_never_joins_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15, item 6: the init node restarted with an empty data dir gets a new node id
    and learns the old decision from its peers; it names this machine as the init node."""
    network = MemoryNetwork()
    configs = [make_config(i, 2, tmp_path) for i in range(2)]
    # The init node is the lower node id: make it node-0.
    for config, node_id in zip(configs, ("0" * 32, "f" * 32), strict=True):
        DataDir(config.data_dir).create()
        (config.data_dir / "node-id").write_text(node_id + "\n")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            init_scope = trio.CancelScope()
            init, other = (make_node(network, c) for c in configs)

            async def run_init(task_status: trio.TaskStatus[None]) -> None:
                with init_scope:
                    await init.run(task_status=task_status)

            await nursery.start(run_init)
            await nursery.start(other.run)
            assert (await init.wait_decided()).role is JoinRole.CLUSTER_INIT
            assert (await other.wait_decided()).role is JoinRole.SERVER
            await init.wait_members_informed()
            init_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            # The operator wipes the init node's data dir; it starts again, same address.
            shutil.rmtree(configs[0].data_dir)
            wiped = make_node(network, configs[0])
            await nursery.start(wiped.run)
            with pytest.raises(NodeError, match="data dir was wiped") as error:
                await wiped.wait_decided()
            nursery.cancel_scope.cancel()
    assert wiped.node_id != "0" * 32
    assert "will not join itself" in str(error.value)
    assert "rancherd reset" in str(error.value)
    assert "data dir was wiped" in caplog.text
    # The peer that stayed is not fooled: the init node it knows is another machine.
    assert other.self_join_problem() is None
