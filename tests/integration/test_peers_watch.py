"""``rancherd peers --watch``: redraws on a terminal, appends when piped, and says so and
exits 1 when the node it watches stops."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import trio
from cli_harness import ENV, rancherd_argv
from node_harness import make_config, make_node

from rancherd.gossip.memory_transport import MemoryNetwork
from rancherd.node import Node
from rancherd.peers_view import WatchScreen

SNAPSHOT = {
    "node": {"node_id": "c" * 32, "role": "server", "uptime": 3.0},
    "status": {"text": "have 1 of 3 servers (10.0.0.1:8443); waiting for 2 more servers"},
    "peers": [],
    "unanswered": [{"address": "10.0.0.9:8443", "discovered_ago": 12.2}],
}


def test_a_terminal_frame_replaces_the_last_and_a_pipe_appends() -> None:
    terminal, pipe = WatchScreen(terminal=True), WatchScreen(terminal=False)
    frames = [terminal.frame(SNAPSHOT, f"12:00:0{i}") for i in range(2)]
    assert all(frame.startswith("\x1b[H\x1b[J") for frame in frames)
    piped = [pipe.frame(SNAPSHOT, f"12:00:0{i}") for i in range(2)]
    assert not any("\x1b" in frame for frame in piped)
    assert piped[0].startswith("12:00:00  node cccccccccccc")
    assert piped[1].startswith("\n12:00:01  node cccccccccccc")
    assert "10.0.0.9:8443: discovered 12s ago, no answer: not a rancherd" in piped[1]


def _waiting_node_and_watch(tmp_path: Path) -> tuple[Node, list[str]]:
    """A node that waits for 2 more servers, and ``rancherd peers --watch`` on it."""
    config = make_config(0, 3, tmp_path)
    argv = rancherd_argv("peers", "--watch", "--data-dir", str(config.data_dir))
    return make_node(MemoryNetwork(), config), argv


async def test_watch_says_when_the_node_stops_and_exits_1(tmp_path: Path) -> None:
    node, argv = _waiting_node_and_watch(tmp_path)
    with trio.fail_after(30):
        async with trio.open_nursery() as node_nursery:
            await node_nursery.start(node.run)
            process = await trio.lowlevel.open_process(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
            )
            assert process.stdout is not None
            assert process.stderr is not None
            first = await process.stdout.receive_some()
            # One frame arrived: stop the node under the watcher.
            node_nursery.cancel_scope.cancel()
        rest = b"".join([chunk async for chunk in process.stdout])
        errors = b"".join([chunk async for chunk in process.stderr])
        code = await process.wait()
    assert b"waiting for 2 more servers" in first
    assert b"\x1b" not in first + rest  # piped: frames appended, no cursor control
    assert code == 1
    assert b"stopped (its control socket closed)" in errors


async def test_on_a_terminal_each_frame_redraws_in_place(tmp_path: Path) -> None:
    """stdout a real pseudo-terminal: every frame starts by going home and clearing."""
    node, argv = _waiting_node_and_watch(tmp_path)
    master, slave = pty.openpty()
    screen = b""
    with trio.fail_after(30):
        async with trio.open_nursery() as node_nursery:
            await node_nursery.start(node.run)
            process = await trio.lowlevel.open_process(
                argv, stdout=slave, stderr=subprocess.DEVNULL, env=ENV
            )
            os.close(slave)
            terminal = trio.lowlevel.FdStream(master)
            while screen.count(b"\x1b[H\x1b[J") < 2:
                screen += await terminal.receive_some()
            node_nursery.cancel_scope.cancel()
        assert await process.wait() == 1
        await terminal.aclose()
    frames = screen.split(b"\x1b[H\x1b[J")
    assert frames[0] == b""  # nothing before the first redraw
    assert b"waiting for 2 more servers" in frames[1]  # the second may be cut short
