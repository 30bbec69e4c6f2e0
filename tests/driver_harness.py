"""Several real drivers over the in-memory transport, for integration tests on MockClock.

Every node is the production stack below discovery: ``GossipCore`` + ``Driver`` + ``Links``
(sealed channels) + ``MemoryTransport``. Randomness comes from one seed per node, so a
test on ``MockClock(autojump_threshold=0)`` is repeatable.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import trio

from rancherd.gossip.config import GossipConfig
from rancherd.gossip.core import Event, GossipCore, Identity, PersistedState
from rancherd.gossip.driver import Driver
from rancherd.gossip.links import Links
from rancherd.gossip.memory_transport import MemoryNetwork
from rancherd.gossip.messages import Decision, Role
from rancherd.gossip.security import TokenKeys
from rancherd.gossip.transport import Transport, TransportLimits

TOKEN_KEYS = TokenKeys.derive("integration token")
WRONG_KEYS = TokenKeys.derive("not the token")


@dataclass
class MemoryStore:
    """The data dir's ``save_gossip``, in memory; ``saved`` keeps every write."""

    saved: list[PersistedState] = field(default_factory=list)

    def save_gossip(self, state: PersistedState) -> None:
        self.saved.append(state)

    @property
    def last(self) -> PersistedState | None:
        return self.saved[-1] if self.saved else None


@dataclass
class TestNode:
    name: str
    address: str
    role: Role
    keys: TokenKeys
    store: MemoryStore
    rng: random.Random
    node_id: str
    transport: Transport
    driver: Driver | None = None
    links: Links | None = None
    events: list[Event] = field(default_factory=list)
    cancel: trio.CancelScope | None = None
    stopped: trio.Event = field(default_factory=trio.Event)

    @property
    def decision(self) -> Decision | None:
        return None if self.driver is None else self.driver.core.decision


class Fleet:
    """Nodes on one ``MemoryNetwork``; ``start`` runs one in the fleet's nursery."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        expected_servers: int = 3,
        seed: int = 0,
        config: GossipConfig | None = None,
        limits: TransportLimits | None = None,
    ) -> None:
        self.nursery = nursery
        self.network = MemoryNetwork()
        self.config = replace(config or GossipConfig.local(), expected_servers=expected_servers)
        self.limits = limits or TransportLimits()
        self.seed = seed
        self.nodes: dict[str, TestNode] = {}

    def add(self, name: str, role: Role = Role.SERVER, *, keys: TokenKeys = TOKEN_KEYS) -> TestNode:
        rng = random.Random(f"{self.seed}-{name}")
        address = f"10.0.0.{len(self.nodes) + 1}:8443"
        node = TestNode(
            name,
            address,
            role,
            keys,
            MemoryStore(),
            rng,
            rng.randbytes(16).hex(),
            self.network.transport(address, self.limits),
        )
        self.nodes[name] = node
        return node

    async def start(self, node: TestNode, seeds: Sequence[str] | None = None) -> None:
        """Start (or restart, from its store) ``node``; ``seeds`` are discovered addresses,
        by default every node's address."""
        started = trio.Event()
        node.stopped = trio.Event()

        async def run() -> None:
            with trio.CancelScope() as scope:
                node.cancel = scope
                await self._run(node, seeds, started)
            node.stopped.set()

        self.nursery.start_soon(run)
        await started.wait()

    async def _run(self, node: TestNode, seeds: Sequence[str] | None, started: trio.Event) -> None:
        now = trio.current_time()
        host = node.address.rsplit(":", 1)[0]
        core = GossipCore(
            self.config,
            Identity(node.node_id, node.role, (node.address,), host),
            node.store.last,
            node.rng,
            now,
        )
        driver = Driver(core, node.store, on_event=node.events.append)
        links = Links(
            node.transport,
            node.keys,
            node.node_id,
            core.boot_id,
            driver.deliver,
            rng=node.rng,
            random_bytes=node.rng.randbytes,
            keep=core.wants_record,
        )
        node.driver, node.links = driver, links
        async with trio.open_nursery() as nursery:
            await nursery.start(links.run)
            await nursery.start(driver.run, links)
            addresses = seeds if seeds is not None else [n.address for n in self.nodes.values()]
            driver.discovered_nowait(addresses)
            started.set()

    async def start_servers(self, count: int) -> list[TestNode]:
        """Add ``count`` servers (s0, s1, ...), start them all, return them."""
        nodes = [self.add(f"s{i}") for i in range(count)]
        for node in nodes:
            await self.start(node)
        return nodes

    async def stop(self, node: TestNode) -> None:
        assert node.cancel is not None
        node.cancel.cancel()
        await node.stopped.wait()

    async def wait_all_decided(self, names: Sequence[str] | None = None) -> None:
        """Return once every named node (all by default; each started) knows a decision."""
        for node in [self.nodes[n] for n in (names or list(self.nodes))]:
            assert node.driver is not None, f"{node.name} was never started"
            await node.driver.wait_decided()

    def decisions(self) -> set[Decision]:
        return {n.decision for n in self.nodes.values() if n.decision is not None}


async def frames_per_node_second_at_rest(
    servers: int, decided_interval: float, *, window: float = 60.0
) -> float:
    """Frames each node of a decided ``lan`` fleet sends per second once it has settled
    (5 s after the last decision), with ``decided_gossip_interval`` set as given."""
    config = replace(GossipConfig.lan(), decided_gossip_interval=decided_interval)
    async with fleet(expected_servers=servers, config=config) as f:
        await f.start_servers(servers)
        await f.wait_all_decided()
        await trio.sleep(5.0)
        before = f.network.frames_sent
        await trio.sleep(window)
        return (f.network.frames_sent - before) / window / servers


@asynccontextmanager
async def fleet(**kwargs: object) -> AsyncIterator[Fleet]:
    async with trio.open_nursery() as nursery:
        yield Fleet(nursery, **kwargs)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()
