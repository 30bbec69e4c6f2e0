"""``rancherd discover``: run discovery and the election only, print the decision.

Changes nothing outside the data dir (where the vote and decision live, so that a later
``bootstrap`` resumes the same decision). After deciding, the node stays up until every
member of the decision reports it too (bounded by ``INFORM_WAIT``), so a node that exits
first never leaves a peer waiting for a commit it cannot get any more.
"""

from __future__ import annotations

import contextvars
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from typing import ClassVar

import trio

from rancherd.config import Config
from rancherd.gossip.config import GossipConfig
from rancherd.node import Node, Outcome, single_errors
from rancherd.state import DataDir

__all__ = ["LOG_NODE", "DiscoverResult", "cancel_on_signals", "run_discover", "setup_logging"]

INFORM_WAIT = 10.0
"""Seconds a decided node waits at most for every member to report the decision, times
``1 + health_score`` on a node that serves its timers late (``inform_seconds``)."""
RELAY_TICKS = 5
"""Gossip ticks an informed node stays up to relay: a node learns that the others know
from their records, which travel through partners; the whole fleet exiting the moment each
node is informed would take the relays away from the last ones (with 10 or 20 servers,
most runs of a simulated fleet left a member waiting out INFORM_WAIT)."""
RELAY_EXCHANGES = 2
"""Full-state exchanges an informed node stays up for, at least: a server that relays
missed (one starved of CPU, say) asks a partner for the full state every
``gathering_push_pull_interval`` until its members all report the decision, and that
partner must still be there to answer."""


def inform_seconds(health_score: int = 0) -> float:
    """How long a decided node waits at most for its members to report the decision: a
    node behind on its timers is on a machine where its members are behind too."""
    return INFORM_WAIT * (1 + health_score)


def relay_seconds(config: GossipConfig, health_score: int = 0) -> float:
    """How long an informed node stays up to relay before ``discover`` exits, stretched by
    ``1 + health_score`` as the core's timers are: a node that serves its timers late is on
    a machine where the others are late too."""
    base = max(
        RELAY_TICKS * config.gossip_interval,
        RELAY_EXCHANGES * config.gathering_push_pull_interval,
    )
    return base * (1 + health_score)


LOG_NODE: contextvars.ContextVar[str] = contextvars.ContextVar("rancherd_log_node", default="")
"""The node a log line comes from, when one process runs several (``demo``): set it around
``nursery.start(node.run)``; the node's tasks inherit it."""


class _NodeName(logging.Filter):
    """Adds ``node_prefix``: ``"node-2 "`` inside a named node's tasks, else nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = LOG_NODE.get()
        record.node_prefix = f"{name} " if name else ""
        return True


class _JournalFormatter(logging.Formatter):
    """``<6>rancherd: message``: journald reads the priority prefix, adds the time."""

    _PRIORITY: ClassVar[dict[str, int]] = {
        "DEBUG": 7,
        "INFO": 6,
        "WARNING": 4,
        "ERROR": 3,
        "CRITICAL": 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        priority = self._PRIORITY.get(record.levelname, 6)
        prefix = getattr(record, "node_prefix", "")
        return f"<{priority}>{prefix}{record.name}: {record.getMessage()}"


def setup_logging(verbose: bool = False, *, journal: bool | None = None) -> None:
    """One line per state change on stderr. Under systemd (``JOURNAL_STREAM`` set) lines
    carry a ``<N>`` priority prefix; on a terminal a plain ``LEVEL name: message``."""
    import os

    if journal is None:
        journal = "JOURNAL_STREAM" in os.environ
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_NodeName())
    handler.setFormatter(
        _JournalFormatter()
        if journal
        else logging.Formatter("%(levelname)-7s %(node_prefix)s%(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Third-party libraries (zeroconf, trio-websocket) log every frame at DEBUG: -v is
    # for rancherd's own peer events, so they say only what goes wrong.
    for name in ("zeroconf", "trio-websocket", "trio_websocket"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def cancel_on_signals(scope: trio.CancelScope) -> None:
    """Cancel ``scope`` at SIGTERM or SIGINT, so the node shuts down cleanly (mDNS goodbye,
    connections closed with 1001, the data dir unlocked)."""
    if threading.current_thread() is not threading.main_thread():
        await trio.sleep_forever()  # signals reach the main thread only (tests, embedding)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as receiver:
        async for signum in receiver:
            logging.getLogger("rancherd").info(
                "%s received: shutting down", signal.Signals(signum).name
            )
            scope.cancel()
            return


@dataclass(frozen=True, slots=True)
class DiscoverResult:
    outcome: Outcome | None
    """None when the time ran out (or a signal stopped the node) before a decision."""
    last_status: str
    waiting_for: list[str]
    """The node ids the status says the node waits for (as of the end)."""
    informed: bool
    """Every member reported the decision before the node stopped."""


async def run_discover(
    config: Config, data_dir: DataDir, limit: float, linger: float = 0.0
) -> DiscoverResult:
    """Run a node until it decides (at most ``limit`` seconds) and its members know, then
    ``linger`` seconds more, answering late nodes with the decision as a beacon would."""
    node = Node(config, data_dir)
    outcome: Outcome | None = None
    informed = False
    with single_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_signals, nursery.cancel_scope)
            await nursery.start(node.run)
            with trio.move_on_after(limit):
                outcome = await node.wait_decided()
                with trio.move_on_after(inform_seconds(node.health_score())):
                    await node.wait_members_informed()
                    informed = True
                    await trio.sleep(relay_seconds(node.gossip_config, node.health_score()))
            if outcome is not None and linger > 0:
                await trio.sleep(linger)
            nursery.cancel_scope.cancel()
    status = node.status  # as of now: the ages in it are those of the timeout
    if status is None:
        return DiscoverResult(outcome, "", [], informed)
    return DiscoverResult(outcome, status.text, list(status.waiting_for), informed)
