"""The contract between the harness and an election algorithm.

The harness (``sim/world.py``) owns virtual time, the network, mDNS, disks, crashes and
the invariants. An algorithm owns one ``Process`` per running node incarnation and talks
to the world only through its ``Host``: a node sees its own clock (virtual time plus its
offset), its own seeded generator, its own disk, and what arrives for it.
"""

from __future__ import annotations

import random
from typing import Protocol


class Host(Protocol):
    """What one node incarnation may use. Every method is deterministic."""

    @property
    def name(self) -> str:
        """The simulator's name of the machine (``s0``, ``a12``); stable across restarts."""

    @property
    def role(self) -> str:
        """``server`` or ``agent``."""

    @property
    def node_id(self) -> str:
        """32 hex characters from the seed; a wiped data dir gets a new one."""

    @property
    def ip(self) -> str: ...

    @property
    def rng(self) -> random.Random:
        """This incarnation's own generator."""

    @property
    def expected_servers(self) -> int: ...

    @property
    def server_cache_duration(self) -> float: ...

    def now(self) -> float:
        """This node's clock: virtual time plus its offset (an epoch-like number)."""

    def disk(self) -> object | None:
        """What this node last wrote durably (``None`` on a fresh or wiped data dir)."""

    def write_disk(self, state: object) -> None:
        """Start a durable write; ``Process.on_disk_written(state)`` follows after fsync."""

    def send(self, target: str, payload: object, *, within: float | None = None) -> None:
        """Send ``payload`` to the machine named ``target``: a datagram, or with ``within``
        a TCP exchange whose lost segments are sent again until ``within`` seconds pass."""

    def machine_at(self, address: str) -> str | None:
        """The machine that owns ``address`` (``ip`` or ``ip:port``), up or not."""

    def machine_with_id(self, node_id: str) -> str | None:
        """The machine whose current data dir holds ``node_id``."""

    def set_timer(self, deadline: float | None) -> None:
        """Call ``Process.on_timer`` at this node-clock time (replaces any earlier timer)."""

    def query_discovery(self, window: float) -> None:
        """Send an mDNS query; ``Process.on_discovery`` gets the answers after ``window``."""

    def advertise(self, address: str | None) -> None:
        """What this node's mDNS record answers with (``None``: not advertised)."""

    def decide(self, cluster_id: str, role: str) -> None:
        """Record a decision: ``role`` is ``cluster-init``, ``server`` or ``agent``."""

    def note(self, kind: str) -> None:
        """Count an anomaly the node reported (a split, a protocol violation, ...)."""


class Process(Protocol):
    def on_boot(self) -> None: ...

    def on_message(self, src: str, payload: object) -> None: ...

    def on_timer(self) -> None: ...

    def on_discovery(self, addresses: tuple[str, ...]) -> None: ...

    def on_disk_written(self, state: object) -> None: ...


class Algorithm(Protocol):
    name: str

    def new_process(self, host: Host) -> Process: ...
