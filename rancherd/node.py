"""One running node: config and data dir in, a decision out.

Assembles the engine's layers for a real machine: the data dir (lock, node id, persisted
state), the token's keys, the transport, the sealed links, the core and its driver, the
discovery provider, and the control socket that ``rancherd peers`` reads. ``discover``,
``demo`` and (issue 6) ``bootstrap`` all start a ``Node`` with ``nursery.start``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import ipaddress
import logging
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import trio

from rancherd.addresses import host_of, is_ip, join_host_port
from rancherd.config import Config
from rancherd.control import ControlServer
from rancherd.discovery import make_provider
from rancherd.discovery.provider import Advertisement, Provider
from rancherd.gossip.config import GossipConfig
from rancherd.gossip.core import GossipCore, Identity, PeerInfo, Status
from rancherd.gossip.driver import Driver
from rancherd.gossip.election import JoinRole
from rancherd.gossip.links import Links
from rancherd.gossip.messages import Decision
from rancherd.gossip.security import TokenKeys
from rancherd.gossip.transport import Transport, TransportLimits
from rancherd.peers_view import UNANSWERED_NOTE, peer_json, status_json
from rancherd.state import DataDir

__all__ = [
    "Node",
    "NodeError",
    "Unanswered",
    "own_addresses",
    "server_url",
    "single_errors",
]

log = logging.getLogger("rancherd")

_MAX_DISCOVERED = 1024
"""Discovered addresses remembered for ``unanswered`` (a bound against a flooding network)."""


class NodeError(Exception):
    """The node cannot start; the message says why and what to do."""


def server_url(config: Config, decision: Decision) -> str:
    """Where the other nodes join ``decision``'s init node, as the installer writes it in
    ``server:`` (the runtime's supervisor port: 6443 k3s, 9345 rke2)."""
    from rancherd.install.builders import runtime_server_url
    from rancherd.install.runtime import Runtime, VersionError, resolve_kubernetes_version

    try:
        runtime = resolve_kubernetes_version(config.kubernetes_version).runtime
    except VersionError:  # `rancherd plan` says what is wrong with it
        runtime = Runtime.RKE2 if "rke2" in (config.kubernetes_version or "") else Runtime.K3S
    url, _ = runtime_server_url(decision.init_host, runtime)
    return url


def _interface_addresses() -> list[str]:
    """Non-loopback, non-link-local IPv4 then IPv6 addresses of this machine's interfaces."""
    import ifaddr  # zeroconf's own dependency; imported late to keep startup light

    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                address = ipaddress.ip_address(text.split("%")[0])
            except ValueError:
                continue
            if not (address.is_loopback or address.is_link_local or address.is_multicast):
                found.append(address)
    return [str(a) for a in sorted(set(found), key=lambda a: (a.version, a.packed))]


def own_addresses(config: Config) -> tuple[list[str], list[str]]:
    """(gossip endpoints peers should dial, IPs to advertise) from the discovery config.

    ``advertiseAddresses`` when given; else the listen address when it is a specific IP;
    else every interface's address (listening on ``0.0.0.0``)."""
    discovery = config.discovery
    assert discovery is not None
    port = discovery.port
    if discovery.advertise_addresses:
        endpoints = [a.endpoint(port) for a in discovery.advertise_addresses]
        ips = [a.host for a in discovery.advertise_addresses if is_ip(a.host)]
        return endpoints, ips
    listen = discovery.listen_address
    if listen not in ("0.0.0.0", "::"):
        return [join_host_port(listen, port)], [listen]
    ips = _interface_addresses()
    if not ips:
        raise NodeError(
            "no network address to advertise: no interface has a non-loopback address; "
            "set discovery.advertiseAddresses"
        )
    return [join_host_port(ip, port) for ip in ips], ips


def _token_text(config: Config) -> str:
    """The token, or ``NodeError`` when it cannot be UTF-8 (a lone surrogate such as
    ``\\ud800``, which YAML's escapes can produce): no key can be derived from it."""
    assert config.token is not None
    token = config.token.reveal()
    try:
        token.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NodeError(
            f"the token is not valid text: character {exc.start + 1} is a lone surrogate "
            "(an escape such as \\ud800); write the token as plain UTF-8 text"
        ) from None
    return token


@dataclass(frozen=True, slots=True)
class Outcome:
    """A node's decision, as ``discover`` prints it."""

    role: JoinRole
    server_url: str | None
    cluster_id: str
    node_id: str
    init_node: str
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Unanswered:
    """An address discovery listed where no peer answers."""

    address: str
    discovered_ago: float
    """Seconds since discovery first listed it."""


class Node:
    """A running node. ``await nursery.start(node.run)``; then ``wait_decided``."""

    def __init__(
        self,
        config: Config,
        data_dir: DataDir,
        *,
        transport_factory: Callable[[TransportLimits], Transport] | None = None,
        provider: Provider | None = None,
        gossip_config: GossipConfig | None = None,
        limits: TransportLimits | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if config.discovery is None:
            raise NodeError("the config has no discovery section: nothing to discover")
        if config.token is None:
            raise NodeError("the config has no token: discovery needs the fleet's token")
        if config.role not in (JoinRole.SERVER, JoinRole.AGENT):
            raise NodeError(f"role {config.role} does not take part in discovery")
        self.config = config
        self.data_dir = data_dir
        self._discovery = config.discovery
        self._transport_factory = transport_factory
        self._provider = provider
        self._limits = limits or TransportLimits()
        self._random_bytes = random_bytes
        self.gossip_config = GossipConfig.for_fleet(
            self._discovery.preset,
            expected_servers=self._discovery.expected_servers,
            server_cache_duration=self._discovery.server_cache_duration,
            base=gossip_config,
        )
        self.driver: Driver | None = None
        self.links: Links | None = None
        self.node_id: str | None = None
        self.started_at = 0.0
        self.endpoints: tuple[str, ...] = ()
        """This node's own gossip endpoints (discovery answers list them too)."""
        self._discovered: dict[str, float] = {}
        """Address -> when discovery first listed it (trio time)."""
        self._running = trio.Event()

    # --- lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.started_at = trio.current_time()
        self.data_dir.lock()
        try:
            await self._run(task_status)
        finally:
            self.data_dir.unlock()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        config, discovery = self.config, self._discovery
        assert config.token is not None
        node_id = self.data_dir.node_id(self._random_bytes)
        self.node_id = node_id
        persisted = self.data_dir.load_gossip()
        keys = await trio.to_thread.run_sync(TokenKeys.derive, _token_text(config))
        endpoints, ips = own_addresses(config)
        self.endpoints = tuple(endpoints)
        api_host = config.address or (ips[0] if ips else host_of(endpoints[0]))
        role = config.role.node_role
        seed = int.from_bytes(self._random_bytes(16), "big")
        rng = random.Random(seed)
        core = GossipCore(
            self.gossip_config,
            Identity(node_id, role, tuple(endpoints), api_host),
            persisted,
            rng,
            trio.current_time(),
        )
        driver = Driver(core, self.data_dir, on_event=None)
        transport = self._make_transport()
        links = Links(
            transport,
            keys,
            node_id,
            core.boot_id,
            driver.deliver,
            rng=random.Random(rng.getrandbits(64)),
            random_bytes=self._random_bytes,
            keep=core.wants_record,
        )
        self.driver, self.links = driver, links
        provider = self._provider or make_provider(
            discovery.params,
            default_port=discovery.port,
            server_cache_duration=discovery.server_cache_duration,
        )
        # Only servers advertise (docs/CONFIG.md, discovery): the answer is where servers
        # are; agents browse, dial servers, and are known to everyone through gossip.
        advertisement = (
            None
            if config.role is JoinRole.AGENT
            else Advertisement(
                node_id, discovery.port, tuple(ips), {"v": "1", "role": str(config.role)}
            )
        )
        log.info(
            "rancherd node %s (%s) starting: gossip on %s, discovery %s, expecting %d servers",
            node_id,
            config.role,
            ", ".join(endpoints),
            discovery.params.to_string(),
            discovery.expected_servers,
        )
        answers_send, answers = trio.open_memory_channel[frozenset[str]](16)
        async with transport, trio.open_nursery() as nursery:
            try:
                await nursery.start(links.run)
            except (OSError, BaseExceptionGroup) as exc:
                # The bind error comes out of the transport's nursery in a group.
                error = _os_error_in(exc)
                if error is None:
                    raise
                raise NodeError(
                    f"cannot listen on {discovery.listen_address}:{discovery.port}: "
                    f"{error.strerror or error}"
                ) from None
            await nursery.start(driver.run, links)
            control = ControlServer(self.data_dir.control_socket, self)
            await nursery.start(control.serve)
            nursery.start_soon(self._feed_answers, answers, driver)
            await nursery.start(provider.run, advertisement, answers_send)
            # Everything imported and built so far lives as long as the process: keep the
            # collector from walking it again at every collection of the oldest generation.
            gc.freeze()
            self._running.set()
            task_status.started()

    def _make_transport(self) -> Transport:
        if self._transport_factory is not None:
            return self._transport_factory(self._limits)
        from rancherd.gossip.ws_transport import WebSocketTransport

        return WebSocketTransport(
            self._discovery.listen_address, self._discovery.port, self._limits
        )

    async def _feed_answers(
        self, answers: trio.MemoryReceiveChannel[frozenset[str]], driver: Driver
    ) -> None:
        async for answer in answers:
            now = trio.current_time()
            for address in sorted(answer):
                if len(self._discovered) < _MAX_DISCOVERED:
                    self._discovered.setdefault(address, now)
            driver.discovered_nowait(answer)

    # --- what the node knows

    @property
    def decided_at(self) -> float | None:
        return None if self.driver is None else self.driver.decided_at

    @property
    def status(self) -> Status | None:
        """The status as of now: its ages ("last heard 7s ago") are computed at each call."""
        driver = self.driver
        return None if driver is None else driver.core.status(trio.current_time())

    @property
    def last_change(self) -> Status | None:
        """The status as of its last change: what to print once per change (its ages are
        those of that moment)."""
        return None if self.driver is None else self.driver.status

    def unanswered(self) -> list[Unanswered]:
        """Addresses discovery lists that no known peer has: nothing answers there with our
        token (not a rancherd, another token, or a firewall in between). Oldest first."""
        known = set(self.endpoints)
        for peer in self.peers():
            known.update(peer.addresses)
        now = trio.current_time()
        rows = [
            Unanswered(address, round(now - since, 3))
            for address, since in self._discovered.items()
            if address not in known
        ]
        return sorted(rows, key=lambda row: (-row.discovered_ago, row.address))

    def peers(self) -> list[PeerInfo]:
        return [] if self.driver is None else self.driver.peers()

    def outcome(self) -> Outcome | None:
        driver = self.driver
        if driver is None or driver.core.decision is None or self.node_id is None:
            return None
        decision = driver.core.decision
        role = driver.core.join_role()
        assert role is not None
        decided_at = driver.decided_at if driver.decided_at is not None else trio.current_time()
        return Outcome(
            role,
            None if role is JoinRole.CLUSTER_INIT else server_url(self.config, decision),
            decision.cluster_id,
            self.node_id,
            decision.init_node,
            round(decided_at - self.started_at, 3),
        )

    async def wait_decided(self) -> Outcome:
        """The decision, once there is one; ``NodeError`` when it would make this machine
        join itself (``self_join_problem``)."""
        await self._running.wait()
        assert self.driver is not None
        await self.driver.wait_decided()
        problem = self.self_join_problem()
        if problem is not None:
            log.error("%s", problem)
            raise NodeError(problem)
        outcome = self.outcome()
        assert outcome is not None
        return outcome

    async def wait_changed(self) -> None:
        """Return at the node's next status change (for the control socket's watchers)."""
        await self._running.wait()
        assert self.driver is not None
        await self.driver.wait_changed()

    def self_join_problem(self) -> str | None:
        """What is wrong when the decision names this machine's address as the init node's
        but another node id: this machine was the init node and its data dir was wiped or
        replaced (a new node id, no vote, no stamp). Joining would point the runtime at
        itself while nobody creates the cluster any more, so the node must not go on.

        The init node's address alone is not enough (several test nodes share a host on
        different ports): the init node must also be unknown, or known at one of our own
        gossip endpoints (its old record, still relayed, carries this machine's address)."""
        driver = self.driver
        decision = None if driver is None else driver.core.decision
        if driver is None or decision is None or decision.init_node == self.node_id:
            return None
        hosts = {self.config.address, *(host_of(e) for e in self.endpoints)}
        if decision.init_host not in hosts:
            return None
        init = next((p for p in driver.peers() if p.node_id == decision.init_node), None)
        if init is not None and init.alive and not set(init.addresses) & set(self.endpoints):
            return None
        return (
            f"the cluster's decision names this machine ({decision.init_host}) as its init "
            f"node {decision.init_node}, but this data dir ({self.data_dir.path}) has another "
            f"node id ({self.node_id}) and no vote for it: the init node's data dir was wiped "
            "or replaced. This node will not join itself. If the cluster still runs here, "
            "restore the data dir (node-id, gossip.json, done.json) from a backup; if it is "
            "gone for good, stop rancherd on every node, run `rancherd reset` on each, and "
            "start them again to elect a new init node (docs/OPERATIONS.md, recovery)"
        )

    def snapshot(self) -> dict[str, Any]:
        """What ``rancherd peers --json`` prints (the control socket sends it)."""
        status = self.status
        outcome = self.outcome()
        decision = None if status is None else status.decision
        links = [] if self.links is None else self.links.links()
        return {
            "node": {
                "node_id": self.node_id,
                "role": str(self.config.role),
                "uptime": round(trio.current_time() - self.started_at, 3),
                "outcome": None if outcome is None else outcome.as_dict(),
            },
            "status": None if status is None else status_json(status),
            "peers": [peer_json(p, decision) for p in self.peers()],
            "unanswered": [
                {
                    "address": row.address,
                    "discovered_ago": row.discovered_ago,
                    "note": UNANSWERED_NOTE,
                }
                for row in self.unanswered()
            ],
            "links": [
                {"peer": link.peer, "remote": link.remote, "outbound": link.outbound}
                for link in links
            ],
        }

    def members_informed(self) -> bool:
        """Every other member of the decision has reported it (``GossipCore.members_informed``:
        a member never heard of has not)."""
        driver = self.driver
        return driver is not None and driver.core.members_informed()

    def health_score(self) -> int:
        """The driver's local health score (0 on time .. 8 far behind; 0 before it runs)."""
        driver = self.driver
        return 0 if driver is None else driver.statistics.health_score

    async def wait_members_informed(self, poll: float = 0.05) -> None:
        """Return once every member of the decision reports it (callers bound the wait)."""
        assert self.driver is not None
        while not self.members_informed():
            with trio.move_on_after(poll):
                await self.driver.wait_changed()


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside ``exc``'s (nested) groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _os_error_in(exc: BaseException) -> OSError | None:
    return next((leaf for leaf in _leaves(exc) if isinstance(leaf, OSError)), None)


@contextlib.contextmanager
def single_errors() -> Iterator[None]:
    """Let a lone error out of trio's exception groups.

    A nursery wraps whatever its body raises in an ``ExceptionGroup``; for a command, a
    ``NodeError`` or a failed plan step is one error with one message, not a traceback."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) != 1 or not isinstance(leaves[0], Exception):
            raise
        raise leaves[0] from None
