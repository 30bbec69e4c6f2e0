"""The classic rancherd election, as ``rancher/rancherd`` does it in Go.

Modelled from ``pkg/discovery/discovery.go`` of rancher/rancherd and the mDNS provider of
hashicorp/go-discover (``provider/mdns/mdns_provider.go``, which calls
``github.com/hashicorp/mdns`` ``client.go`` ``Query``):

- ``discoverServerAndRole``: a ``joinServer`` is started, then ``loop`` runs again and
  again with ``time.After(5 * time.Second)`` between two rounds, until it returns a server
  URL to join or ``clusterInit``. On return the deferred ``cancel()`` shuts the join server
  down: **a node that decided stops answering** on the port.
- ``joinServer.addresses``: ``discover.Addrs`` runs the mDNS provider, which sends one PTR
  query and collects answers for its whole ``timeout`` (default ``5s``; ``client.query``
  waits for ``time.After(params.Timeout)`` whatever arrives), then strips the ports: only
  IPs are kept.
- ``joinServer.setPeers``: every answer refreshes ``peerSeen[ip] = now``; entries older than
  ``cacheDuration`` (``serverCacheDuration``, default ``5m`` there) are purged; the rest are
  **string-sorted** (``sort.Strings``) into ``j.peers``, which ``ServeHTTP`` serves to anyone
  as ``{"peers": [...]}`` with the header ``X-Cattle-Rancherd-Id: <random id>``.
- ``loop``: for each address in that order, **sequentially**, ``GET
  https://<ip>:<port>/cacerts`` with a 10 s client timeout (``insecureHTTPClient``). A
  connection or read error marks ``allAgree = false``. An answer **without** the
  ``X-Cattle-Rancherd-Id`` header is taken as an existing server and returned at once as
  the URL to join. ``firstID`` is the id that the first (lowest) address answered. Peers
  whose list differs (``slice.StringsEqual``) mark ``allAgree = false``. The node becomes
  cluster-init only if ``firstID == j.id`` (it is the lowest address and answered itself),
  ``len(addrs) == count`` (exactly ``expectedServers``, so N+1 servers that all see each
  other never elect) and ``allAgree``.

What the model adds, because the Go code leaves it to the environment:

- mDNS answers go through the simulator's flaky-mDNS model (``sim/discovery.py``). The
  original queries a service that rancherd itself never advertises; an operator has to
  publish one (avahi, say). We model **servers as advertised** from boot, agents not;
  ``classic.advertise_after_decision`` says whether that advertisement outlives rancherd
  (``true``: an avahi service file keeps answering; ``false``: it goes with rancherd).
- After its decision a node installs k3s and Rancher; ``classic.install`` seconds later its
  port answers again, as Rancher (no rancherd header). ``classic.answering`` says who
  answers then: only the cluster-init node (``init``, default) or every decided server.
  A joiner learns which cluster it joined from the node it joined (simulator bookkeeping).
- A restarted node with its data dir kept resumes its decision (k3s is configured); with it
  wiped it starts over with a new random id, as a fresh rancherd would.
- HTTP runs over the simulated network as a TCP exchange: a lost segment costs a
  retransmission, an unreachable or crashed machine costs the full 10 s timeout, a machine
  that is up with nothing listening refuses at once.

The well-known failures follow: with N+1 servers visible to everyone nobody ever has
exactly N addresses (a stall), and when the cluster-init node is silent (not answering,
not advertised) for longer than the cache, the other servers drop it from their lists
and, with N of them left, elect a second cluster-init.
"""

from __future__ import annotations

from dataclasses import dataclass

from rancherd.addresses import host_of
from sim.algorithms.base import Host
from sim.scenario import ClassicSpec, Scenario

SRV_PORT = 8443
"""Port the mDNS record advertises (rancherd ignores it and dials its own port)."""


@dataclass(frozen=True, slots=True)
class CacertsRequest:
    """``GET https://<ip>:<port>/cacerts``."""

    request: int


@dataclass(frozen=True, slots=True)
class JoinServerAnswer:
    """200 with ``X-Cattle-Rancherd-Id`` and the join server's current peer list."""

    request: int
    rancherd_id: str
    peers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ForeignAnswer:
    """An answer without the rancherd header: an existing server to join."""

    request: int
    cluster_id: str


@dataclass(frozen=True, slots=True)
class ConnectionRefused:
    request: int


@dataclass(frozen=True, slots=True)
class ClassicDisk:
    cluster_id: str
    role: str


class ClassicProcess:
    def __init__(self, host: Host, spec: ClassicSpec) -> None:
        self.host = host
        self.spec = spec
        self.id = f"{host.rng.getrandbits(256):064x}"
        self.peer_seen: dict[str, float] = {}
        self.peers: tuple[str, ...] = ()
        self.phase = "booting"
        self.request = 0
        self.addrs: tuple[str, ...] = ()
        self.index = 0
        self.all_agree = True
        self.first_id = ""
        self.decision: ClassicDisk | None = None
        self.installed = False

    # Lifecycle.

    def on_boot(self) -> None:
        host = self.host
        if host.role == "server":
            host.advertise(f"{host.ip}:{SRV_PORT}")
        disk = host.disk()
        if isinstance(disk, ClassicDisk):
            self._decided(disk, persist=False)
            return
        self._start_round()

    def _start_round(self) -> None:
        self.phase = "mdns"
        self.host.query_discovery(self.spec.mdns_timeout)

    def on_discovery(self, addresses: tuple[str, ...]) -> None:
        if self.phase != "mdns":
            return
        ips = [host_of(a) for a in addresses]
        self.addrs = self._set_peers(ips)
        self.index = 0
        self.all_agree = True
        self.first_id = ""
        self.phase = "http"
        self._next_request()

    def _set_peers(self, ips: list[str]) -> tuple[str, ...]:
        now = self.host.now()
        cache = self.host.server_cache_duration
        for ip in list(self.peer_seen):
            if self.peer_seen[ip] + cache < now:
                del self.peer_seen[ip]
        for ip in ips:
            self.peer_seen[ip] = now
        self.peers = tuple(sorted(self.peer_seen))
        return self.peers

    def _next_request(self) -> None:
        if self.index >= len(self.addrs):
            self._finish_round()
            return
        self.request += 1
        target = self.host.machine_at(self.addrs[self.index])
        if target is not None:
            self.host.send(target, CacertsRequest(self.request), within=self.spec.http_timeout)
        self.host.set_timer(self.host.now() + self.spec.http_timeout)

    def _answered(self) -> None:
        self.host.set_timer(None)
        self.index += 1
        self._next_request()

    def _finish_round(self) -> None:
        host = self.host
        if (
            self.first_id == self.id
            and len(self.addrs) == host.expected_servers
            and (self.all_agree)
        ):
            cluster = ClassicDisk(f"classic-{self.id[:16]}", "cluster-init")
            self._decided(cluster, persist=True)
            return
        self.phase = "sleep"
        host.set_timer(host.now() + self.spec.loop_sleep)

    def _decided(self, decision: ClassicDisk, *, persist: bool) -> None:
        host = self.host
        self.decision = decision
        self.phase = "installing"
        if persist:
            host.write_disk(decision)
        host.decide(decision.cluster_id, decision.role)
        if not self.spec.advertise_after_decision:
            host.advertise(None)
        host.set_timer(host.now() + self.spec.install.sample(host.rng))

    # Events.

    def on_timer(self) -> None:
        if self.phase == "http":
            self.all_agree = False  # timed out
            self.index += 1
            self._next_request()
        elif self.phase == "sleep":
            self._start_round()
        elif self.phase == "installing":
            self.phase = "installed"
            self.installed = True

    def on_message(self, src: str, payload: object) -> None:
        if isinstance(payload, CacertsRequest):
            self.host.send(src, self._serve(payload.request), within=self.spec.http_timeout)
            return
        if self.phase != "http" or getattr(payload, "request", None) != self.request:
            return
        if isinstance(payload, ForeignAnswer):
            self.host.set_timer(None)
            role = "server" if self.host.role == "server" else "agent"
            self._decided(ClassicDisk(payload.cluster_id, role), persist=True)
        elif isinstance(payload, JoinServerAnswer):
            if self.index == 0:
                self.first_id = payload.rancherd_id
            if payload.peers != self.addrs:
                self.all_agree = False
            self._answered()
        elif isinstance(payload, ConnectionRefused):
            self.all_agree = False
            self._answered()

    def _serve(self, request: int) -> object:
        decision = self.decision
        if decision is None:
            return JoinServerAnswer(request, self.id, self.peers)
        answering = decision.role == "cluster-init" or (
            self.spec.answering == "servers" and decision.role == "server"
        )
        if self.installed and answering:
            return ForeignAnswer(request, decision.cluster_id)
        return ConnectionRefused(request)

    def on_disk_written(self, state: object) -> None:
        pass


class ClassicAlgorithm:
    name = "classic"

    def __init__(self, scenario: Scenario) -> None:
        self.spec = scenario.classic

    def new_process(self, host: Host) -> ClassicProcess:
        return ClassicProcess(host, self.spec)
