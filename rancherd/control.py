"""The local control socket: ``rancherd peers`` asks a running node what it knows.

A Unix socket at ``<data dir>/control.sock``, mode 0600 inside the 0700 data dir, so only
root (or the data dir's owner) can connect. One JSON request line in, JSON lines out:

    {"op": "snapshot"}   -> one snapshot, then the server closes
    {"op": "watch"}      -> a snapshot now and one at every status change (at most 5/s)

A snapshot is ``{"node": {...}, "status": {...}, "peers": [...], "unanswered": [...],
"links": [...]}``, computed when it is sent (its ages are those of that moment); see
``snapshot()``. Nothing in it is secret. Bad requests get ``{"error": ...}`` and a close.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from rancherd.gossip.core import PeerInfo, Status
from rancherd.gossip.messages import Decision, Vote

if TYPE_CHECKING:
    from rancherd.node import Node

__all__ = ["UNANSWERED_NOTE", "ControlError", "ControlServer", "fetch_snapshots", "snapshot"]

_MAX_REQUEST = 1024
_WATCH_MIN_INTERVAL = 0.2
_MAX_CLIENTS = 16


UNANSWERED_NOTE = "no answer: not a rancherd, another token, or a firewall"
"""Why a discovered address may stay silent, for the operator to go and look."""


class ControlError(Exception):
    """No node answers on the control socket, or it answered nonsense."""


def _vote(vote: Vote | None) -> dict[str, Any] | None:
    if vote is None:
        return None
    return {"proposer": vote.proposer, "round": vote.round}


def _decision(decision: Decision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {
        "cluster_id": decision.cluster_id,
        "init_node": decision.init_node,
        "init_host": decision.init_host,
        "round": decision.round,
        "members": list(decision.members),
    }


def _status(status: Status) -> dict[str, Any]:
    return {
        "phase": str(status.phase),
        "text": status.text,
        "node_id": status.node_id,
        "role": status.role.name.lower(),
        "expected_servers": status.expected_servers,
        "view": list(status.view),
        "waiting_for": list(status.waiting_for),
        "vote": _vote(status.vote),
        "decision": _decision(status.decision),
        "split": status.split,
        "duplicate_id": status.duplicate_id,
    }


def _peer(peer: PeerInfo, decision: Decision | None) -> dict[str, Any]:
    return {
        "node_id": peer.node_id,
        "role": peer.role.name.lower(),
        "addresses": list(peer.addresses),
        "state": "alive" if peer.alive else "expired",
        "last_heard": round(peer.last_heard, 3),
        "learned": peer.learned,
        "agrees": peer.agrees,
        "vote": _vote(peer.vote),
        "decision": _decision(peer.decision),
        "same_decision": decision is not None and peer.decision == decision,
        "progress": peer.progress.name.lower(),
    }


def snapshot(node: Node) -> dict[str, Any]:
    """What ``rancherd peers --json`` prints."""
    status = node.status
    outcome = node.outcome()
    decision = None if status is None else status.decision
    links = [] if node.links is None else node.links.links()
    return {
        "node": {
            "node_id": node.node_id,
            "role": str(node.config.role),
            "uptime": round(trio.current_time() - node.started_at, 3),
            "outcome": None if outcome is None else outcome.as_dict(),
        },
        "status": None if status is None else _status(status),
        "peers": [_peer(p, decision) for p in node.peers()],
        "unanswered": [
            {"address": row.address, "discovered_ago": row.discovered_ago, "note": UNANSWERED_NOTE}
            for row in node.unanswered()
        ],
        "links": [
            {"peer": link.peer, "remote": link.remote, "outbound": link.outbound} for link in links
        ],
    }


class ControlServer:
    def __init__(self, path: Path, node: Node) -> None:
        self.path = path
        self.node = node
        self._clients = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # We hold the data dir's lock, so a socket file left here is a dead daemon's.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(os.fspath(self.path))
            os.chmod(self.path, 0o600)
            sock.listen(_MAX_CLIENTS)
        except OSError:
            sock.close()
            raise
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._handle, stream)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            with trio.CancelScope(shield=True):
                await listener.aclose()

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            if self._clients >= _MAX_CLIENTS:
                return
            self._clients += 1
            try:
                await self._answer(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                pass
            finally:
                self._clients -= 1

    async def _answer(self, stream: trio.SocketStream) -> None:
        with trio.fail_after(5):
            request = await _read_line(stream)
        try:
            op = json.loads(request).get("op")
        except (ValueError, AttributeError):
            op = None
        if op not in ("snapshot", "watch"):
            await _send(stream, {"error": 'expected {"op": "snapshot"} or {"op": "watch"}'})
            return
        await _send(stream, snapshot(self.node))
        if op == "snapshot":
            return
        while True:
            driver = self.node.driver
            if driver is None:
                await trio.sleep(_WATCH_MIN_INTERVAL)
            else:
                with trio.move_on_after(1.0):
                    await driver.wait_changed()
                await trio.sleep(_WATCH_MIN_INTERVAL)
            await _send(stream, snapshot(self.node))


async def _read_line(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(_MAX_REQUEST)
        if not chunk:
            break
        data += chunk
        if len(data) > _MAX_REQUEST:
            break
    return data.split(b"\n", 1)[0]


async def _send(stream: trio.SocketStream, document: dict[str, Any]) -> None:
    await stream.send_all(json.dumps(document).encode() + b"\n")


async def fetch_snapshots(path: Path, *, watch: bool) -> AsyncGenerator[dict[str, Any], None]:
    """Snapshots from the node whose control socket is ``path`` (one, or a stream)."""
    try:
        stream = await trio.open_unix_socket(os.fspath(path))
    except FileNotFoundError:
        raise ControlError(
            f"no control socket at {path}: is rancherd running with this data dir?"
        ) from None
    except PermissionError:
        raise ControlError(f"permission denied on {path}: run as root") from None
    except OSError as exc:
        raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
    async with stream:
        request = {"op": "watch" if watch else "snapshot"}
        await stream.send_all(json.dumps(request).encode() + b"\n")
        buffer = b""
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # the node died mid-answer: it stopped
                return
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    document = json.loads(line)
                except ValueError:
                    raise ControlError(f"{path} answered something that is not JSON") from None
                if not isinstance(document, dict):
                    raise ControlError(f"{path} answered something that is not a snapshot")
                if "error" in document:
                    raise ControlError(f"the node says: {document['error']}")
                yield document
