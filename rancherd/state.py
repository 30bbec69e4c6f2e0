"""The data dir: node id, the election's durable state, the done stamp, one daemon at a time.

Layout (``/var/lib/rancher/rancherd`` by default, mode 0700)::

    node-id          32 hex characters, created once; the node's name in the protocol
    gossip.json      the core's PersistedState: incarnation, vote, next round, released
                     rounds, decision. Written before anything that depends on it leaves.
    done.json        the done stamp: the node runs its cluster's runtime (issue 6)
    lock             flock'd by the running daemon; a second one refuses to start
    control.sock     the local control socket (``rancherd peers``), mode 0600

Every file is written atomically: a temporary file in the same directory, ``fsync``, rename,
``fsync`` of the directory. A crash leaves the old version or the new one, never half. A
file that cannot be read back is an error that names it: the state holds votes, and
silently starting from nothing could let this node vote twice.

Writes happen on the trio thread. They are a handful per election, small, and the core
holds every output that depends on them until they return, so a thread would only add a
second place where time passes.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rancherd.files import write_atomic
from rancherd.gossip.core import PersistedState
from rancherd.gossip.messages import Decision, Vote, is_node_id

__all__ = [
    "DataDir",
    "DataDirBusy",
    "DoneStamp",
    "StateError",
    "decode_persisted",
    "encode_persisted",
]

_FORMAT = 1


class StateError(Exception):
    """A file of the data dir is unreadable or malformed; the message names it."""


class DataDirBusy(StateError):
    """Another rancherd holds the data dir's lock."""


@dataclass(frozen=True, slots=True)
class DoneStamp:
    """Written once the node really runs its runtime; re-running goes straight to beacon."""

    role: str
    server_url: str | None
    cluster_id: str | None
    runtime: str
    finished_at: float
    """Unix time (informational only)."""


def _vote_to_json(vote: Vote) -> dict[str, Any]:
    return {"proposer": vote.proposer, "round": vote.round, "nonce": vote.nonce}


def _decision_to_json(decision: Decision) -> dict[str, Any]:
    return {
        "cluster_id": decision.cluster_id,
        "init_node": decision.init_node,
        "init_host": decision.init_host,
        "round": decision.round,
        "members": list(decision.members),
    }


def encode_persisted(state: PersistedState) -> bytes:
    """``gossip.json``'s bytes for ``state`` (stable key order, readable by operators)."""
    document = {
        "format": _FORMAT,
        "incarnation": state.incarnation,
        "vote": None if state.vote is None else _vote_to_json(state.vote),
        "next_round": state.next_round,
        "released": [_vote_to_json(vote) for vote in state.released],
        "decision": None if state.decision is None else _decision_to_json(state.decision),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def _uint(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2**64:
        raise ValueError(f"{what} is not an unsigned 64-bit integer")
    return value


def _node_id(value: object, what: str) -> str:
    if type(value) is not str or not is_node_id(value):
        raise ValueError(f"{what} is not a node id")
    return value


def _vote(value: object, what: str) -> Vote:
    if type(value) is not dict or set(value) != {"proposer", "round", "nonce"}:
        raise ValueError(f"{what} is not a vote")
    return Vote(
        _node_id(value["proposer"], f"{what}.proposer"),
        _uint(value["round"], f"{what}.round"),
        _uint(value["nonce"], f"{what}.nonce"),
    )


def _decision(value: object) -> Decision:
    keys = {"cluster_id", "init_node", "init_host", "round", "members"}
    if type(value) is not dict or set(value) != keys:
        raise ValueError("decision is malformed")
    cluster_id, init_host, members = value["cluster_id"], value["init_host"], value["members"]
    if type(cluster_id) is not str or not cluster_id:
        raise ValueError("decision.cluster_id is not a string")
    if type(init_host) is not str or not init_host:
        raise ValueError("decision.init_host is not a string")
    if type(members) is not list:
        raise ValueError("decision.members is not a list")
    return Decision(
        cluster_id,
        _node_id(value["init_node"], "decision.init_node"),
        init_host,
        _uint(value["round"], "decision.round"),
        tuple(_node_id(m, "decision.members[]") for m in members),
    )


def decode_persisted(data: bytes) -> PersistedState:
    """The state in ``gossip.json``'s bytes; ``ValueError`` saying what is wrong."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if type(document) is not dict:
        raise ValueError("not a JSON object")
    if document.get("format") != _FORMAT:
        raise ValueError(f"format {document.get('format')!r} is not {_FORMAT}")
    released = document.get("released")
    if type(released) is not list:
        raise ValueError("released is not a list")
    vote, decision = document.get("vote"), document.get("decision")
    return PersistedState(
        incarnation=_uint(document.get("incarnation"), "incarnation"),
        vote=None if vote is None else _vote(vote, "vote"),
        next_round=_uint(document.get("next_round"), "next_round"),
        released=tuple(_vote(v, f"released[{i}]") for i, v in enumerate(released)),
        decision=None if decision is None else _decision(decision),
    )


class DataDir:
    """One node's data dir. ``lock()`` before acting on it as a daemon."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    @property
    def node_id_file(self) -> Path:
        return self.path / "node-id"

    @property
    def gossip_file(self) -> Path:
        return self.path / "gossip.json"

    @property
    def done_file(self) -> Path:
        return self.path / "done.json"

    @property
    def control_socket(self) -> Path:
        return self.path / "control.sock"

    def create(self) -> None:
        """Make the directory (0700) if it is missing; a clear error when that fails."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create data dir {self.path}: {exc.strerror}") from None
        if not self.path.is_dir():
            raise StateError(f"data dir {self.path} is not a directory")

    def lock(self) -> None:
        """Take the daemon lock, or ``DataDirBusy`` naming the holder's pid if known."""
        self.create()
        lock_path = self.path / "lock"
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode(errors="replace").strip()
            os.close(descriptor)
            who = f" (pid {holder})" if holder else ""
            raise DataDirBusy(
                f"another rancherd{who} is using {self.path}; stop it or pass --data-dir"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._lock_fd = descriptor

    def in_use(self) -> bool:
        """True when a running rancherd holds the lock (checked without taking it)."""
        try:
            descriptor = os.open(self.path / "lock", os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(descriptor)
        return False

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from None

    def node_id(self, random_bytes: Callable[[int], bytes]) -> str:
        """The node id, created (from ``random_bytes``) and stored on first use."""
        data = self._read(self.node_id_file)
        if data is not None:
            text = data.decode(errors="replace").strip()
            if not is_node_id(text):
                raise StateError(
                    f"{self.node_id_file}: not a node id (32 lowercase hex characters)"
                )
            return text
        self.create()
        node_id = random_bytes(16).hex()
        write_atomic(self.node_id_file, f"{node_id}\n".encode(), 0o644)
        return node_id

    def load_gossip(self) -> PersistedState | None:
        data = self._read(self.gossip_file)
        if data is None:
            return None
        try:
            return decode_persisted(data)
        except ValueError as exc:
            raise StateError(
                f"{self.gossip_file}: {exc}; it may hold a vote, so rancherd will not start "
                "from nothing. Inspect it, or run `rancherd reset` to clear it."
            ) from None

    def save_gossip(self, state: PersistedState) -> None:
        write_atomic(self.gossip_file, encode_persisted(state))

    def load_done(self) -> DoneStamp | None:
        data = self._read(self.done_file)
        if data is None:
            return None
        try:
            stamp = DoneStamp(**json.loads(data))
        except (ValueError, TypeError) as exc:
            raise StateError(f"{self.done_file}: malformed done stamp ({exc})") from None
        if not (
            isinstance(stamp.role, str)
            and isinstance(stamp.runtime, str)
            and isinstance(stamp.server_url, str | None)
            and isinstance(stamp.cluster_id, str | None)
            and isinstance(stamp.finished_at, int | float)
        ):
            raise StateError(f"{self.done_file}: malformed done stamp (a field has a wrong type)")
        return stamp

    def save_done(self, stamp: DoneStamp) -> None:
        document = {
            "role": stamp.role,
            "server_url": stamp.server_url,
            "cluster_id": stamp.cluster_id,
            "runtime": stamp.runtime,
            "finished_at": stamp.finished_at,
        }
        write_atomic(self.done_file, (json.dumps(document, indent=2) + "\n").encode())
