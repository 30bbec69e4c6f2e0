"""A deliberately unsafe election, to prove the harness catches what it should.

"Every server that sees N servers becomes cluster-init": each server advertises itself,
queries mDNS every two seconds, and as soon as an answer lists ``expectedServers``
addresses it creates a cluster of its own and tells everyone it heard of. Servers that
hear of a cluster first join it. With N >= 2 servers booting together several of them
create clusters, and the invariant checker must stop the run and print the command that
reproduces it. Never use it for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.algorithms.base import Host
from sim.scenario import Scenario

QUERY_INTERVAL = 2.0
PORT = 1


@dataclass(frozen=True, slots=True)
class Created:
    cluster_id: str


class EagerProcess:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.decided = False

    def on_boot(self) -> None:
        host = self.host
        if host.role == "server":
            host.advertise(f"{host.ip}:{PORT}")
        state = host.disk()
        if isinstance(state, Created):
            self.decided = True
            return
        host.set_timer(host.now() + QUERY_INTERVAL)

    def on_discovery(self, addresses: tuple[str, ...]) -> None:
        host = self.host
        if self.decided:
            return
        if host.role == "server" and len(addresses) >= host.expected_servers:
            created = Created(f"toy-{host.node_id[:12]}")
            self.decided = True
            host.write_disk(created)
            host.decide(created.cluster_id, "cluster-init")
            for address in addresses:
                target = host.machine_at(address)
                if target is not None and target != host.name:
                    host.send(target, created)
            return
        host.set_timer(host.now() + QUERY_INTERVAL)

    def on_timer(self) -> None:
        if not self.decided:
            self.host.query_discovery(1.0)

    def on_message(self, src: str, payload: object) -> None:
        if isinstance(payload, Created) and not self.decided:
            self.decided = True
            self.host.write_disk(payload)
            self.host.decide(payload.cluster_id, self.host.role)

    def on_disk_written(self, state: object) -> None:
        pass


class EagerAlgorithm:
    name = "broken"

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def new_process(self, host: Host) -> EagerProcess:
        return EagerProcess(host)
