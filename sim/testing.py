"""Helpers for the simulator's own tests: a scriptable probe algorithm, a gossip check.

The probe records everything its nodes see (with each node's own clock) and lets a test
script react, so the fault models can be tested without any election algorithm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sim.algorithms.base import Host
from sim.scenario import Scenario, load, load_text
from sim.world import run_seed


@dataclass
class ProbeLog:
    """Everything every probe incarnation saw, in order."""

    events: list[tuple[str, str, float, object]] = field(default_factory=list)
    """(machine, kind, node clock, detail)."""
    hosts: dict[str, Host] = field(default_factory=dict)

    def of(self, name: str, kind: str) -> list[tuple[float, Any]]:
        """(node clock, detail) of every ``kind`` event of machine ``name``."""
        return [(t, d) for n, k, t, d in self.events if n == name and k == kind]


Script = Callable[["Probe", str, object], None]


class Probe:
    def __init__(self, host: Host, log: ProbeLog, script: Script | None) -> None:
        self.host = host
        self.log = log
        self.script = script

    def _record(self, kind: str, detail: object) -> None:
        self.log.events.append((self.host.name, kind, self.host.now(), detail))
        if self.script is not None:
            self.script(self, kind, detail)

    def on_boot(self) -> None:
        self.log.hosts[self.host.name] = self.host
        self._record("boot", (self.host.node_id, self.host.disk()))

    def on_message(self, src: str, payload: object) -> None:
        self._record("message", (src, payload))

    def on_timer(self) -> None:
        self._record("timer", None)

    def on_discovery(self, addresses: tuple[str, ...]) -> None:
        self._record("discovery", addresses)

    def on_disk_written(self, state: object) -> None:
        self._record("disk", state)


class ProbeAlgorithm:
    name = "probe"

    def __init__(self, script: Script | None = None) -> None:
        self.log = ProbeLog()
        self.script = script

    def new_process(self, host: Host) -> Probe:
        return Probe(host, self.log, self.script)


def scenario(text: str) -> Scenario:
    return load_text(text, "test.yaml")


def gossip_unavailable() -> str | None:
    """Why gossip cannot run here (``None`` when ``GossipCore`` works)."""
    try:
        run_seed(load("happy-n3"), 0, "gossip")
    except NotImplementedError:
        return "GossipCore is not implemented yet"
    return None
