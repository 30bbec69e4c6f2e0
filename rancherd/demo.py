"""``rancherd demo``: a fleet of real nodes on this machine's loopback, then cleaned up.

Each node is the full engine (websocket transport on its own 127.0.0.x address, sealed
links, core, driver, control socket) with a temporary data dir. Discovery is ``static``
(every node's address) with answers dropped at random at ``--loss``, as a poor mDNS
network would; gossip carries what one node found to the others. Nothing is installed:
once every node has decided, the demo prints the plan each one would apply.
"""

from __future__ import annotations

import random
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from rancherd.config import Config, DiscoveryConfig, Preset, Secret
from rancherd.discover import LOG_NODE
from rancherd.discovery.params import DiscoveryParams, StaticParams
from rancherd.discovery.provider import (
    Advertisement,
    AnswerSender,
    Provider,
    send_answer,
)
from rancherd.kinds import JoinRole
from rancherd.node import Node, Outcome
from rancherd.state import DataDir

__all__ = ["DemoResult", "LossyStaticProvider", "demo_configs", "free_port", "run_demo"]


class LossyStaticProvider(Provider):
    """Static answers with each address dropped with probability ``loss`` per answer."""

    name = "static"

    def __init__(
        self, addresses: frozenset[str], loss: float, rng: random.Random, refresh: float = 0.5
    ) -> None:
        super().__init__(refresh=refresh)
        self._addresses = addresses
        self._loss = loss
        self._rng = rng

    async def run(
        self,
        advertisement: Advertisement | None,
        answers: AnswerSender,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        while True:
            kept = frozenset(a for a in sorted(self._addresses) if self._rng.random() >= self._loss)
            if not await send_answer(answers, kept):
                return
            await trio.sleep(self.refresh)


def free_port(hosts: list[str], first: int = 18443) -> int:
    """A TCP port free on every one of ``hosts`` (tried from ``first`` upwards)."""
    for port in range(first, first + 200):
        sockets: list[socket.socket] = []
        try:
            for host in hosts:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((host, port))
        except OSError:
            continue
        else:
            return port
        finally:
            for sock in sockets:
                sock.close()
    raise OSError(f"no free port from {first} to {first + 199} on {', '.join(hosts)}")


def demo_configs(count: int, port: int, token: str, data_root: Path) -> list[Config]:
    hosts = [f"127.0.0.{i + 1}" for i in range(count)]
    addrs = " ".join(f"{host}:{port}" for host in hosts)
    params = DiscoveryParams.from_mapping({"provider": "static", "addrs": addrs})
    return [
        Config(
            role=JoinRole.SERVER,
            token=Secret(token),
            discovery=DiscoveryConfig(
                params=params,
                expected_servers=count,
                listen_address=host,
                port=port,
                preset=Preset.LOCAL,
            ),
            address=host,
            data_dir=data_root / f"node-{i + 1}",
        )
        for i, host in enumerate(hosts)
    ]


@dataclass(frozen=True, slots=True)
class DemoResult:
    configs: list[Config]
    outcomes: list[Outcome | None]
    seconds: float

    @property
    def one_cluster(self) -> bool:
        """Every node decided, all on the same cluster."""
        clusters = {o.cluster_id for o in self.outcomes if o is not None}
        return None not in self.outcomes and len(clusters) == 1

    def report(self) -> list[str]:
        """What the demo prints at the end: who decided what, and each node's plan."""
        if not self.one_cluster:
            undecided = sum(o is None for o in self.outcomes)
            return [f"not decided after {self.seconds:.1f}s: {undecided} node(s) undecided"]
        from rancherd.install.builders import PlanError, build_plan

        cluster = next(o.cluster_id for o in self.outcomes if o is not None)
        lines = [
            f"\nall {len(self.outcomes)} nodes decided in {self.seconds:.2f}s on cluster {cluster}"
        ]
        for index, (config, outcome) in enumerate(zip(self.configs, self.outcomes, strict=True)):
            assert outcome is not None
            where = "" if outcome.server_url is None else f", joins {outcome.server_url}"
            lines.append(f"\n== node-{index + 1} ({config.address}): {outcome.role}{where}")
            try:
                plan = build_plan(config, outcome.role, outcome.server_url)
            except PlanError as exc:
                lines.append(f"(no plan: {exc})")
                continue
            lines.append(plan.to_text().rstrip())
        return lines


async def run_demo(
    count: int,
    loss: float,
    limit: float,
    show: Callable[[str], None],
    *,
    seed: int | None = None,
) -> DemoResult:
    """Start ``count`` nodes, show each status change, stop once all decided (or at
    ``limit`` seconds)."""
    rng = random.Random(seed)
    token = f"demo-{rng.getrandbits(64):016x}"
    with tempfile.TemporaryDirectory(prefix="rancherd-demo-") as root:
        port = free_port([f"127.0.0.{i + 1}" for i in range(count)])
        hosts = "127.0.0.1" if count == 1 else f"127.0.0.1-{count}"
        configs = demo_configs(count, port, token, Path(root))
        nodes: list[Node] = []
        for config in configs:
            assert config.discovery is not None
            addresses = frozenset(
                a.endpoint(port) for a in config.discovery.params.typed_as(StaticParams).addrs
            )
            provider = LossyStaticProvider(addresses, loss, random.Random(rng.getrandbits(64)))
            nodes.append(Node(config, DataDir(config.data_dir), provider=provider))
        show(
            f"starting {count} node{'s' * (count != 1)} on {hosts} port {port}, discovery answers "
            f"dropped at {loss:.0%}, data dirs in {root}"
        )
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for index, node in enumerate(nodes, 1):
                named = LOG_NODE.set(f"node-{index}")  # its log lines say which node
                try:
                    await nursery.start(node.run)
                finally:
                    LOG_NODE.reset(named)
            last: list[str | None] = [None] * count
            with trio.move_on_after(limit):
                while True:
                    for index, node in enumerate(nodes):
                        status = node.last_change
                        text = None if status is None else status.text
                        if text != last[index]:
                            last[index] = text
                            show(f"  node-{index + 1} {configs[index].address}: {text}")
                    if all(node.members_informed() for node in nodes):
                        break
                    await trio.sleep(0.05)
            seconds = trio.current_time() - started
            outcomes = [node.outcome() for node in nodes]
            nursery.cancel_scope.cancel()
    return DemoResult(configs, outcomes, seconds)
