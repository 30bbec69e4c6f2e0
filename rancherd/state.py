"""The data dir: node id, the election's durable state, the done stamp, one daemon at a time.

Layout (``/var/lib/rancher/rancherd`` by default, mode 0700)::

    node-id             32 hex characters, created once; the node's name in the protocol
    gossip.json         the core's PersistedState: incarnation, vote, next round, released
                        rounds, decision. Written before anything that depends on it leaves.
    done.json           the done stamp: the node runs its cluster's runtime (issue 6)
    plan-progress.json  the installer's progress (``rancherd.install.apply``)
    lock                flock'd by the running daemon; a second one refuses to start
    control.sock        the local control socket (``rancherd peers``), mode 0600

Every file is written atomically: a temporary file in the same directory, ``fsync``, rename,
``fsync`` of the directory. A crash leaves the old version or the new one, never half. A
file that cannot be read back is an error that names it: the state holds votes, and
silently starting from nothing could let this node vote twice.

The directory is trusted only when it is safe: owned by the effective user and writable by
nobody else (else a local user could delete a vote, plant a ``node-id`` or point ``lock`` at
a file of root's). Files are opened without following symlinks, read only when they are
regular files (never a FIFO or a device) of at most ``MAX_STATE_FILE`` bytes, and what
``gossip.json`` holds passes the same checks as what a peer sends (``codec.wire_problem``).
Every failure, a full disk or a read-only mount included, is a ``StateError`` that names the
file and says what to do.

Writes happen on the trio thread. They are a handful per election, small, and the core
holds every output that depends on them until they return, so a thread would only add a
second place where time passes.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rancherd.files import write_atomic
from rancherd.gossip.codec import MAX_UINT, wire_problem
from rancherd.gossip.core import PersistedState
from rancherd.gossip.membership import is_uint
from rancherd.gossip.messages import Decision, Vote, is_node_id

__all__ = [
    "MAX_STATE_FILE",
    "DataDir",
    "DataDirBusy",
    "DoneStamp",
    "Held",
    "StateError",
    "decision_json",
    "decode_persisted",
    "encode_persisted",
    "vote_json",
]

_FORMAT = 1

MAX_STATE_FILE = 1024 * 1024
"""Largest file of the data dir rancherd reads. ``gossip.json`` is a few KiB at most."""

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
"""Never follow a symlink; never block on a FIFO (it is then refused as not regular)."""


class StateError(Exception):
    """A file of the data dir is unreadable, unsafe or malformed; the message names it."""


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


# --- The one JSON form of votes and decisions ------------------------------------------------
# ``gossip.json``, ``rancherd peers --json`` and ``rancherd info`` all show these two forms;
# the file adds the vote's nonce, the only part a reader has no use for.


def vote_json(vote: Vote) -> dict[str, Any]:
    """A vote as every output shows it."""
    return {"proposer": vote.proposer, "round": vote.round}


def decision_json(decision: Decision) -> dict[str, Any]:
    """A decision as every output shows it."""
    return {
        "cluster_id": decision.cluster_id,
        "init_node": decision.init_node,
        "init_host": decision.init_host,
        "round": decision.round,
        "members": list(decision.members),
    }


def _stored_vote(vote: Vote) -> dict[str, Any]:
    return {**vote_json(vote), "nonce": vote.nonce}


def encode_persisted(state: PersistedState) -> bytes:
    """``gossip.json``'s bytes for ``state`` (stable key order, readable by operators)."""
    document = {
        "format": _FORMAT,
        "incarnation": state.incarnation,
        "vote": None if state.vote is None else _stored_vote(state.vote),
        "next_round": state.next_round,
        "released": [_stored_vote(vote) for vote in state.released],
        "decision": None if state.decision is None else decision_json(state.decision),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def _uint(value: object, what: str) -> int:
    if type(value) is not int or not is_uint(value):
        raise ValueError(f"{what} is not an unsigned 64-bit integer")
    return value


def _counter(value: object, what: str) -> int:
    """A counter the node adds one to before sending it: it must leave room for that."""
    number = _uint(value, what)
    if number == MAX_UINT:
        raise ValueError(f"{what} is {MAX_UINT}: no room left to count on the wire")
    return number


def _node_id(value: object, what: str) -> str:
    if type(value) is not str or not is_node_id(value):
        raise ValueError(f"{what} is not a node id")
    return value


def _on_the_wire(value: Vote | Decision, what: str) -> None:
    problem = wire_problem(value)
    if problem is not None:
        raise ValueError(f"{what} would be refused on the wire ({problem})")


def _vote(value: object, what: str) -> Vote:
    if type(value) is not dict or set(value) != {"proposer", "round", "nonce"}:
        raise ValueError(f"{what} is not a vote")
    vote = Vote(
        _node_id(value["proposer"], f"{what}.proposer"),
        _uint(value["round"], f"{what}.round"),
        _uint(value["nonce"], f"{what}.nonce"),
    )
    _on_the_wire(vote, what)
    return vote


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
    decision = Decision(
        cluster_id,
        _node_id(value["init_node"], "decision.init_node"),
        init_host,
        _uint(value["round"], "decision.round"),
        tuple(_node_id(m, "decision.members[]") for m in members),
    )
    _on_the_wire(decision, "decision")
    return decision


def _json_document(data: bytes) -> object:
    """The JSON value in ``data``; ``ValueError`` for binary, broken or absurdly deep text."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text (a binary file?)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    except RecursionError:
        raise ValueError("not JSON this file could hold (nested too deeply)") from None


def decode_persisted(data: bytes) -> PersistedState:
    """The state in ``gossip.json``'s bytes; ``ValueError`` saying what is wrong."""
    document = _json_document(data)
    if type(document) is not dict:
        raise ValueError("not a JSON object")
    if document.get("format") != _FORMAT:
        raise ValueError(f"format {document.get('format')!r} is not {_FORMAT}")
    released = document.get("released")
    if type(released) is not list:
        raise ValueError("released is not a list")
    vote, decision = document.get("vote"), document.get("decision")
    return PersistedState(
        incarnation=_counter(document.get("incarnation"), "incarnation"),
        vote=None if vote is None else _vote(vote, "vote"),
        next_round=_counter(document.get("next_round"), "next_round"),
        released=tuple(_vote(v, f"released[{i}]") for i, v in enumerate(released)),
        decision=None if decision is None else _decision(decision),
    )


def _done_stamp(data: bytes) -> DoneStamp:
    document = _json_document(data)
    if type(document) is not dict:
        raise ValueError("not a JSON object")
    try:
        stamp = DoneStamp(**document)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    if not (
        isinstance(stamp.role, str)
        and isinstance(stamp.runtime, str)
        and isinstance(stamp.server_url, str | None)
        and isinstance(stamp.cluster_id, str | None)
        and isinstance(stamp.finished_at, int | float)
    ):
        raise ValueError("a field has a wrong type")  # noqa: TRY004 (the file's fault)
    return stamp


@dataclass(frozen=True, slots=True)
class Held:
    """What ``rancherd reset`` would release: the durable state as read, and the stamp."""

    state: PersistedState | None
    damaged: str | None
    """Why ``gossip.json`` could not be read (it is then replaced by an empty state)."""
    done: bool

    @property
    def vote(self) -> Vote | None:
        return None if self.state is None else self.state.vote

    @property
    def decision(self) -> Decision | None:
        return None if self.state is None else self.state.decision


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
    def lock_file(self) -> Path:
        return self.path / "lock"

    @property
    def control_socket(self) -> Path:
        return self.path / "control.sock"

    # --- the directory

    def exists(self) -> bool:
        """True when the directory is there and safe to use (``StateError`` when unsafe)."""
        user = os.geteuid()
        try:
            link = os.lstat(self.path)
            info = os.stat(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StateError(f"cannot use data dir {self.path}: {exc.strerror}") from None
        if stat.S_ISLNK(link.st_mode) and link.st_uid not in (user, 0):
            # Whoever made the link chose where our files go (a user's link in /tmp to /etc).
            raise StateError(
                f"data dir {self.path} is a symlink made by uid {link.st_uid}: it chooses "
                f"where rancherd writes. Fix: remove it, or pass the real directory"
            )
        if not stat.S_ISDIR(info.st_mode):
            raise StateError(f"data dir {self.path} is not a directory")
        if info.st_uid != user:
            raise StateError(
                f"data dir {self.path} belongs to uid {info.st_uid}, not to this user "
                f"(uid {user}): its owner could change the votes in it. Fix: "
                f"chown {user} {self.path} after checking its files, or pass another --data-dir"
            )
        if info.st_mode & 0o022:
            raise StateError(
                f"data dir {self.path} is writable by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}): any local user could delete a "
                f"vote or plant files. Fix: chmod 700 {self.path} after checking its files"
            )
        return True

    def create(self) -> None:
        """Make the directory (0700) if it is missing; a clear error when that fails or
        when the directory found is not safe (see ``exists``)."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create data dir {self.path}: {exc.strerror}") from None
        self.exists()

    # --- the daemon lock

    def lock(self) -> None:
        """Take the daemon lock, or ``DataDirBusy`` naming the holder's pid if known."""
        self.create()
        descriptor = self._open(self.lock_file, os.O_RDWR | os.O_CREAT, "open")
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode(errors="replace").strip()
            os.close(descriptor)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise DataDirBusy(
                f"another rancherd{who} is using {self.path}; stop it or pass --data-dir"
            ) from None
        try:
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())
        except OSError as exc:
            os.close(descriptor)
            raise self._write_error(self.lock_file, exc) from None
        self._lock_fd = descriptor

    def in_use(self) -> bool:
        """True when a running rancherd holds the lock (checked without taking it)."""
        try:
            descriptor = os.open(self.lock_file, os.O_RDONLY | _OPEN_FLAGS)
        except OSError:
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(descriptor)
        return False

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- reading and writing files

    def _open(self, path: Path, flags: int, doing: str) -> int:
        """``path`` opened without following a symlink; only a regular file of ours."""
        try:
            descriptor = os.open(path, flags | _OPEN_FLAGS, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StateError(
                    f"{path} is a symlink: rancherd uses only regular files in its data dir. "
                    "Remove it (and find out who made it)"
                ) from None
            if flags & os.O_CREAT:
                raise self._write_error(path, exc) from None
            raise
        info = os.fstat(descriptor)
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "is not a regular file (a FIFO, device, socket or directory)"
        elif info.st_uid != os.geteuid():
            problem = f"belongs to uid {info.st_uid}, not to this user"
        elif info.st_size > MAX_STATE_FILE:
            problem = f"is {info.st_size} bytes, more than rancherd ever writes"
        if problem is not None:
            os.close(descriptor)
            raise StateError(f"cannot {doing} {path}: it {problem}. Remove it")
        return descriptor

    def _read(self, path: Path) -> bytes | None:
        """``path``'s bytes; None when it (or the data dir) does not exist."""
        if not self.exists():
            return None
        try:
            descriptor = self._open(path, os.O_RDONLY, "read")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from None
        try:
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_STATE_FILE:
                chunk = os.read(descriptor, MAX_STATE_FILE + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from None
        finally:
            os.close(descriptor)
        if size > MAX_STATE_FILE:
            raise StateError(f"cannot read {path}: it grew past {MAX_STATE_FILE} bytes")
        return b"".join(chunks)

    @staticmethod
    def _write_error(path: Path, exc: OSError) -> StateError:
        advice = {
            errno.ENOSPC: "free some space, then start rancherd again",
            errno.EDQUOT: "free some space, then start rancherd again",
            errno.EROFS: "the data dir must be on a writable file system (or pass --data-dir)",
            errno.EACCES: "run as root, or as the data dir's owner",
            errno.EPERM: "run as root, or as the data dir's owner",
        }.get(exc.errno or 0, "fix that, then start rancherd again")
        return StateError(
            f"cannot write {path}: {exc.strerror or exc}. Nothing that depends on it was "
            f"sent; {advice}"
        )

    def _write(self, path: Path, data: bytes, mode: int = 0o600) -> None:
        self.create()
        try:
            write_atomic(path, data, mode)
        except OSError as exc:
            raise self._write_error(path, exc) from None

    # --- the node id

    def read_node_id(self) -> str | None:
        """The stored node id, None if there is none yet (nothing is created)."""
        data = self._read(self.node_id_file)
        if data is None:
            return None
        text = data.decode(errors="replace").strip()
        if not is_node_id(text):
            raise StateError(f"{self.node_id_file}: not a node id (32 lowercase hex characters)")
        return text

    def node_id(self, random_bytes: Callable[[int], bytes]) -> str:
        """The node id, created (from ``random_bytes``) and stored on first use."""
        known = self.read_node_id()
        if known is not None:
            return known
        node_id = random_bytes(16).hex()
        self._write(self.node_id_file, f"{node_id}\n".encode(), 0o644)
        return node_id

    # --- the election's state

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
        self._write(self.gossip_file, encode_persisted(state))

    def held(self) -> Held:
        """What this node holds: its vote, decision and done stamp, for ``release``. A
        damaged ``gossip.json`` is reported in ``damaged``, not raised."""
        try:
            state, damaged = self.load_gossip(), None
        except StateError as exc:
            state, damaged = None, str(exc)
        return Held(state, damaged, self.done_file.exists())

    def release(self, held: Held, *, forget_install: bool = False) -> None:
        """Drop the vote and the decision (an operator's ``rancherd reset``), keeping the
        incarnation, round counter and released rounds so that old rounds cannot be
        confused with new ones. ``forget_install``: the done stamp and the installer's
        progress go too. Call with the lock held."""
        from rancherd.install.apply import PROGRESS_FILE  # the installer names its file

        base = held.state if held.state is not None else PersistedState()
        self.save_gossip(dataclasses.replace(base, vote=None, decision=None))
        if forget_install:
            for path in (self.done_file, self.path / PROGRESS_FILE):
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    raise self._write_error(path, exc) from None

    # --- the done stamp

    def load_done(self) -> DoneStamp | None:
        data = self._read(self.done_file)
        if data is None:
            return None
        try:
            return _done_stamp(data)
        except ValueError as exc:
            raise StateError(f"{self.done_file}: malformed done stamp ({exc})") from None

    def save_done(self, stamp: DoneStamp) -> None:
        document = {
            "role": stamp.role,
            "server_url": stamp.server_url,
            "cluster_id": stamp.cluster_id,
            "runtime": stamp.runtime,
            "finished_at": stamp.finished_at,
        }
        self._write(self.done_file, (json.dumps(document, indent=2) + "\n").encode())
