"""The status a node serves is computed when asked: its ages advance between two asks.

Node A restarts holding a vote for B (as after a crash mid-election). B is heard, then
stops: A's status line says when it last heard B, and that age grows on MockClock while
nothing in the core changes (no status change event, so a cached line would stay put).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import trio
import trio.testing
from node_harness import make_config, make_node

from rancherd.control import fetch_snapshots
from rancherd.gossip.core import PersistedState
from rancherd.gossip.messages import Vote
from rancherd.state import DataDir

A_ID = "a" * 32
B_ID = "b" * 32


def _last_heard(text: str) -> int:
    match = re.search(r"last heard (\d+)s ago", text)
    assert match is not None, text
    return int(match.group(1))


async def _snapshot(path: Path) -> dict[str, object]:
    async with contextlib.aclosing(fetch_snapshots(path, watch=False)) as stream:
        async for snapshot in stream:
            return snapshot
    raise AssertionError("no snapshot")


async def test_the_served_status_ages_between_two_asks(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    from rancherd.gossip.memory_transport import MemoryNetwork

    network = MemoryNetwork()
    config_a, config_b = (make_config(i, 3, tmp_path) for i in range(2))
    data_a, data_b = DataDir(config_a.data_dir), DataDir(config_b.data_dir)
    for data, node_id in ((data_a, A_ID), (data_b, B_ID)):
        data.create()
        data.node_id_file.write_text(node_id + "\n")
    data_a.save_gossip(PersistedState(vote=Vote(B_ID, 1, 7)))
    node_a, node_b = make_node(network, config_a), make_node(network, config_b)
    async with trio.open_nursery() as nursery:
        # Started outside the guard: a node derives its keys in a thread, and autojump
        # would jump to a lone deadline while it waits.
        await nursery.start(node_a.run)
        async with trio.open_nursery() as b_nursery:
            await b_nursery.start(node_b.run)
            with trio.fail_after(60):
                while not any(p.node_id == B_ID for p in node_a.peers()):
                    assert node_a.driver is not None
                    await node_a.driver.wait_changed()
            b_nursery.cancel_scope.cancel()
        with trio.fail_after(60):
            first = await _snapshot(data_a.control_socket)
            changed_before = node_a.last_change
            await trio.sleep(7)
            second = await _snapshot(data_a.control_socket)
        assert node_a.last_change is changed_before  # no change event in between
        nursery.cancel_scope.cancel()
    first_text = first["status"]["text"]  # type: ignore[index]
    second_text = second["status"]["text"]  # type: ignore[index]
    assert _last_heard(second_text) >= _last_heard(first_text) + 7
    # The JSON's waiting_for is computed at the same moment as the line.
    assert second["status"]["waiting_for"] == [B_ID]  # type: ignore[index]
