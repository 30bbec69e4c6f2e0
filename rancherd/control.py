"""The local control socket: ``rancherd peers`` asks a running node what it knows.

A Unix socket at ``<data dir>/control.sock``, mode 0600 inside the 0700 data dir, so only
root (or the data dir's owner) can connect. One JSON request line in, JSON lines out:

    {"op": "snapshot"}   -> one snapshot, then the server closes
    {"op": "watch"}      -> a snapshot now and one at every status change (at most 5/s)

A snapshot is ``{"node": {...}, "status": {...}, "peers": [...], "unanswered": [...],
"links": [...]}``, computed when it is sent (its ages are those of that moment); see
``Node.snapshot()``. Nothing in it is secret. Bad requests get ``{"error": ...}`` and a close.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, Protocol

import trio

__all__ = ["ControlError", "ControlServer", "SnapshotSource", "fetch_snapshots"]

_MAX_REQUEST = 1024
_WATCH_MIN_INTERVAL = 0.2
_MAX_CLIENTS = 16


class ControlError(Exception):
    """No node answers on the control socket, or it answered nonsense."""


class SnapshotSource(Protocol):
    """What the socket serves: a running node (``rancherd.node.Node``)."""

    def snapshot(self) -> dict[str, Any]:
        """What ``rancherd peers --json`` prints, as of now."""
        ...

    async def wait_changed(self) -> None:
        """Return at the next change of the status."""
        ...


class ControlServer:
    def __init__(self, path: Path, source: SnapshotSource) -> None:
        self.path = path
        self.source = source
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
        await _send(stream, self.source.snapshot())
        if op == "snapshot":
            return
        while True:
            with trio.move_on_after(1.0):
                await self.source.wait_changed()
            await trio.sleep(_WATCH_MIN_INTERVAL)
            await _send(stream, self.source.snapshot())


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
