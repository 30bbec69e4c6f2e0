"""``python -m bench frame-cost``: CPU per sealed frame on the real websocket path.

``nodes`` whole nodes in this one process (``bench.inprocess``: websocket transport on
127.0.0.x, static discovery of every node) decide; after ``settle`` more seconds the fleet
is in its steady state (decided gossip; with ``--pace busy``, the default, at the
election's frame rate, see ``busy_config``), and over the next ``window`` seconds of real time
the harness divides the process's CPU time (``time.process_time()``: user + system, all
threads) by the frames sent. Every frame is sent and received in this process, so the
figure is the whole cost of one frame: encode, seal, websocket send, receive, open,
decode, core. No profiler runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import trio

from bench.inprocess import open_ws_fleet
from rancherd.gossip.config import GossipConfig

__all__ = ["frame_cost"]


def busy_config(preset: str) -> GossipConfig:
    """The preset, but a decided fleet keeps the election's pace: every tick goes to
    ``fanout`` partners every ``gossip_interval``. At rest a decided node sends about one
    frame a second, and the CPU of its timers, not of its frames, is what a division by
    the frames would measure."""
    config = GossipConfig.preset(preset)
    return dataclasses.replace(
        config, decided_gossip_interval=config.gossip_interval, quiet_fanout=config.fanout
    )


async def frame_cost(
    nodes: int,
    preset: str,
    limit: float,
    settle: float,
    window: float,
    report: Callable[[str], None],
    pace: str = "busy",
) -> dict[str, object]:
    config = busy_config(preset) if pace == "busy" else None
    async with open_ws_fleet(nodes, preset, config) as fleet:
        report(f"{nodes} nodes started in {fleet.ready_at - fleet.started_at:.2f}s")
        result: dict[str, object] = {
            "nodes": nodes,
            "preset": preset,
            "pace": pace,
            "window_s": window,
        }
        if not await fleet.wait_decided(limit):
            report(f"not decided: {'; '.join(fleet.failures)}")
            return {
                **result,
                "us_per_frame": None,
                "frames": 0,
                "cpu_s": None,
                "failure": "; ".join(fleet.failures),
            }
        assert fleet.decided_at is not None
        report(f"decided after {fleet.decided_at - fleet.started_at:.2f}s; settling {settle:g}s")
        await trio.sleep(settle)
        frames_before, bytes_before = fleet.counter.snapshot()
        cpu_before, wall_before = time.process_time(), trio.current_time()
        await trio.sleep(window)
        cpu = time.process_time() - cpu_before
        measured = trio.current_time() - wall_before
        frames = fleet.counter.frames - frames_before
        sent = fleet.counter.bytes - bytes_before
        report(f"{frames} frames in {measured:.2f}s using {cpu:.3f}s of CPU")
        return {
            **result,
            "us_per_frame": round(cpu / frames * 1e6, 1) if frames else None,
            "frames": frames,
            "bytes": sent,
            "cpu_s": round(cpu, 4),
            "window_s": round(measured, 3),
            "frames_per_node_per_s": round(frames / nodes / measured, 2),
            "decided_s": round(fleet.decided_at - fleet.started_at, 3),
        }
