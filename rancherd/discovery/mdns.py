"""``provider=mdns``: advertise this node and browse for its peers with DNS-SD over mDNS.

``service: rancher-server`` is the DNS-SD type ``_rancher-server._tcp.local.``. Every node
registers the instance ``rancherd-<first 12 hex of its node id>`` (SRV: the gossip port on
host ``rancherd-<12 hex>.local.``; A/AAAA: its addresses; TXT: the advertisement's public
facts) and browses the type continuously; each instance found is resolved from the cache
(announcements carry every record) or by a query, and becomes ``host:port`` endpoints.

Threads: python-zeroconf runs its own asyncio loop in a thread of its own. This module
creates and closes ``Zeroconf`` through ``trio.to_thread``, runs everything else as
coroutines on zeroconf's loop, and the loop tells trio about a new answer with
``TrioToken.run_sync_soon``, which never blocks it. Nothing here blocks trio for longer than
a ``getifaddrs`` call.

Timing: registration skips the 1-2 s probe phase (``cooperating_responders``; instance
names are unique per node id) and announces at once, and a QU query goes out at once
(rather than after the browser's 20-120 ms), which responders answer by unicast at once. A
peer that is already advertising is in the first answer some 10-20 ms after ``run`` starts
(measured between network namespaces). A goodbye (TTL 0) removes an instance from the
others' answers at once; an instance that vanished without one drops out when its SRV and
address records expire (120 s).

Looking again (python-zeroconf's browser sends four start-up queries, then asks only when a
known record nears its expiry, so a peer that becomes reachable later, after a partition
heals or a cable is plugged in, is otherwise noticed only by chance): every
``requery_period(serverCacheDuration)`` seconds (a sixth of the cache period, 10 s by
default; each wait drawn from 3/4 to all of it, so that nodes started together drift
apart) the provider sends a multicast PTR query carrying its known answers, which only
responders it does not know yet answer (by multicast, so their whole segment learns them),
and announces its own record set once, so that the peers that do not know it learn it.
An rtnetlink socket (Linux; elsewhere the ``refresh`` poll of the interfaces alone) tells
at once when a link or an address changes: the socket plan is made again, a changed plan
re-registers (and so announces again), an unchanged one queries and announces at once.

Only servers advertise: an agent is handed no advertisement and only browses (the answer
lists servers, the peers an agent must reach; servers learn of agents from gossip).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import random
import socket
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import ifaddr
import trio
from zeroconf import (
    DNSQuestionType,
    IPVersion,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)

# Public in zeroconf's __init__ but not in its __all__, so mypy wants the defining modules.
from zeroconf._dns import DNSQuestion
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf._services.browser import generate_service_query
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

from rancherd.addresses import join_host_port
from rancherd.discovery.params import DEFAULT_SERVER_CACHE_DURATION, DiscoveryParams, MdnsParams
from rancherd.discovery.provider import (
    DEFAULT_REFRESH,
    Advertisement,
    AnswerSender,
    OnceLogger,
    Provider,
    ProviderSettings,
    emit_while_changing,
    send_answer,
)

__all__ = [
    "INSTANCE_PREFIX",
    "Interface",
    "MdnsProvider",
    "MdnsSetupError",
    "SocketPlan",
    "build_service_info",
    "endpoints_for",
    "host_name",
    "instance_name",
    "list_interfaces",
    "plan_sockets",
    "ptr_query",
    "requery_delay",
    "requery_period",
    "watch_netlink",
]

log = logging.getLogger(__name__)

INSTANCE_PREFIX = "rancherd-"
_ID_CHARS = 12
"""Hex characters of the node id in the instance and host names: 48 bits."""

DEFAULT_RESOLVE_TIMEOUT = 3.0
"""Seconds one resolve query waits when ``timeout`` is not set."""

_RETRY_BACKOFF = (5.0, 10.0, 20.0, 40.0, 60.0)
"""Seconds before an instance that did not resolve is queried again on the network."""

REQUERIES_PER_CACHE = 6
"""Queries (and announcements) per ``serverCacheDuration``: a peer the gossip layer would
forget is asked for several times before, and a healed partition is seen within a sixth."""

MIN_REQUERY_PERIOD = 1.0
"""Seconds between two periodic queries at least, however short the cache period (RFC 6762
5.2 asks for one second between queries at least)."""

REQUERY_JITTER = 0.75
"""Each wait is drawn uniformly from this fraction of the period up to all of it."""

STARTUP_QUERIES = (0.0, 1.0, 5.0, 14.0)
"""Seconds after a session opens at which it queries without being asked: our QU query at
0 (python-zeroconf's first, 20-120 ms later, is counted with it), then the browser's three
other start-up queries (it waits 1, 4 and 9 s between them). The simulator replays these."""

_TEARDOWN_TIMEOUT = 3.0
"""Seconds the goodbye and the browser's shutdown may take."""

_T = TypeVar("_T")

# DNS constants (RFC 1035), as zeroconf.const names them.
_FLAGS_QR_QUERY = 0x0000
_CLASS_IN = 1
_TYPE_PTR = 12


class MdnsSetupError(Exception):
    """The interfaces or addresses cannot be used; the operator must fix something."""


# --- Pure functions ---------------------------------------------------------------------


def instance_name(node_id: str, service_type: str) -> str:
    """``rancherd-0123456789ab._rancher-server._tcp.local.``"""
    return f"{INSTANCE_PREFIX}{node_id[:_ID_CHARS]}.{service_type}"


def host_name(node_id: str) -> str:
    """The SRV target, ``rancherd-0123456789ab.local.``: unlike the machine's host name it
    cannot collide with another responder (avahi) on the same machine."""
    return f"{INSTANCE_PREFIX}{node_id[:_ID_CHARS]}.local."


def build_service_info(
    advertisement: Advertisement, service_type: str, addresses: Sequence[str]
) -> ServiceInfo:
    """The record set this node registers."""
    return ServiceInfo(
        service_type,
        instance_name(advertisement.node_id, service_type),
        port=advertisement.port,
        properties=dict(advertisement.txt),
        server=host_name(advertisement.node_id),
        parsed_addresses=list(addresses),
    )


def endpoints_for(
    port: int | None, addresses: Iterable[str], *, v4: bool = True, v6: bool = True
) -> frozenset[str]:
    """Gossip endpoints of one resolved instance.

    Addresses of a disabled family, link-local IPv6 addresses (undialable without a zone),
    unspecified and multicast addresses are dropped; no port means no endpoint.
    """
    if port is None or not 1 <= port <= 65535:
        return frozenset()
    endpoints: set[str] = set()
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.partition("%")[0])
        except ValueError:
            continue
        if (address.version == 4 and not v4) or (address.version == 6 and not v6):
            continue
        if address.is_unspecified or address.is_multicast or _is_link_local_v6(address):
            continue
        endpoints.add(join_host_port(str(address), port))
    return frozenset(endpoints)


def ptr_query(service_type: str) -> DNSOutgoing:
    """A QU (unicast response requested) PTR query for ``service_type``."""
    question = DNSQuestion(service_type, _TYPE_PTR, _CLASS_IN)
    question.unicast = True
    query = DNSOutgoing(_FLAGS_QR_QUERY)
    query.add_question(question)
    return query


def requery_period(server_cache_duration: float) -> float:
    """Seconds between two periodic queries: a ``REQUERIES_PER_CACHE``-th of the cache
    period, ``MIN_REQUERY_PERIOD`` at least."""
    return max(MIN_REQUERY_PERIOD, server_cache_duration / REQUERIES_PER_CACHE)


def requery_delay(server_cache_duration: float, rng: random.Random) -> float:
    """The wait before the next periodic query: uniform in [3/4, 1] of the period."""
    period = requery_period(server_cache_duration)
    return period * rng.uniform(REQUERY_JITTER, 1.0)


def _is_link_local_v6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.version == 6 and address.is_link_local


@dataclass(frozen=True, slots=True)
class Interface:
    """A network interface as the operating system lists it."""

    name: str
    index: int | None
    addresses: tuple[str, ...]
    """IPv4 and IPv6 addresses, without zone."""


def list_interfaces() -> list[Interface]:
    """The machine's interfaces and their addresses (``getifaddrs``, through ifaddr)."""
    interfaces = []
    for adapter in ifaddr.get_adapters():
        addresses = tuple(ip.ip if isinstance(ip.ip, str) else ip.ip[0] for ip in adapter.ips)
        interfaces.append(Interface(adapter.name, adapter.index, addresses))
    return interfaces


_RTMGRP_LINK = 0x1
_RTMGRP_IPV4_IFADDR = 0x10
_RTMGRP_IPV6_IFADDR = 0x100

LinkWatcher = Callable[[Callable[[], None]], Coroutine[Any, Any, None]]
"""``await watch(changed)`` calls ``changed()`` whenever a link or an address may have
changed, until cancelled; it returns at once where it cannot watch."""


async def watch_netlink(changed: Callable[[], None]) -> None:
    """Call ``changed()`` for every rtnetlink link or address message (Linux), so that a
    cable plugged in, a link brought up or an address added is acted on at once. Where
    there is no rtnetlink (another system, a sandbox refusing the socket) it logs why and
    returns: the ``refresh`` poll of the interfaces still notices, later."""
    family = getattr(socket, "AF_NETLINK", None)
    if family is None:
        log.debug("mdns: no rtnetlink here; interface changes are polled")
        return
    try:
        sock = socket.socket(
            family, socket.SOCK_RAW | socket.SOCK_CLOEXEC, getattr(socket, "NETLINK_ROUTE", 0)
        )
        sock.setblocking(False)
        sock.bind((0, _RTMGRP_LINK | _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV6_IFADDR))
    except OSError as exc:
        log.info("mdns: cannot watch interfaces with rtnetlink (%s); polling them", exc)
        return
    with sock:
        while True:
            await trio.lowlevel.wait_readable(sock)
            got = False
            while True:
                try:
                    got = bool(sock.recv(65536)) or got
                except BlockingIOError:
                    break
                except OSError:  # ENOBUFS: messages were lost, so something changed
                    got = True
                    break
            if got:
                changed()


@dataclass(frozen=True, slots=True)
class SocketPlan:
    """Where zeroconf listens and what this node advertises."""

    interfaces: tuple[str | int, ...]
    """Zeroconf's ``interfaces``: IPv4 addresses and IPv6 interface indexes."""
    ip_version: IPVersion
    addresses: tuple[str, ...]
    """The A/AAAA records of this node."""


def plan_sockets(
    params: MdnsParams, advertised: Sequence[str], interfaces: Sequence[Interface]
) -> SocketPlan:
    """Choose zeroconf's interfaces and this node's addresses.

    Named interfaces are used with all their addresses (``lo`` included); with none named,
    every interface but the loopback addresses. ``advertised`` (the advertisement's
    addresses), when given, replaces the interfaces' addresses in the A/AAAA records.
    Raises MdnsSetupError for an unknown interface name or when no usable address is left.
    """
    if params.interfaces:
        by_name = {interface.name: interface for interface in interfaces}
        missing = [name for name in params.interfaces if name not in by_name]
        if missing:
            have = ", ".join(sorted(by_name)) or "none"
            raise MdnsSetupError(
                f"no network interface named {', '.join(missing)} (this machine has: {have})"
            )
        chosen = [(by_name[name], True) for name in params.interfaces]
    else:
        chosen = [(interface, False) for interface in interfaces]
    v4_sockets: list[str] = []
    v6_sockets: list[int] = []
    own: list[str] = []
    for interface, named in chosen:
        for text in interface.addresses:
            address = ipaddress.ip_address(text)
            if address.is_loopback and not named:
                continue
            if address.version == 4 and params.v4:
                v4_sockets.append(text)
                own.append(text)
            elif address.version == 6 and params.v6 and interface.index is not None:
                if interface.index not in v6_sockets:
                    v6_sockets.append(interface.index)
                if not address.is_link_local:
                    own.append(text)
    if advertised:
        own = [
            text
            for text in advertised
            if (ipaddress.ip_address(text).version == 4 and params.v4)
            or (ipaddress.ip_address(text).version == 6 and params.v6)
        ]
    families = "/".join(f for f, on in (("IPv4", params.v4), ("IPv6", params.v6)) if on)
    where = f"interface {', '.join(params.interfaces)}" if params.interfaces else "any interface"
    if not v4_sockets and not v6_sockets:
        raise MdnsSetupError(f"no {families} address on {where} yet")
    if not own:
        raise MdnsSetupError(f"no {families} address to advertise on {where} yet")
    if v4_sockets and v6_sockets:
        version = IPVersion.All
    elif v4_sockets:
        version = IPVersion.V4Only
    else:
        version = IPVersion.V6Only
    return SocketPlan(
        tuple(dict.fromkeys([*v4_sockets, *v6_sockets])), version, tuple(dict.fromkeys(own))
    )


# --- The part that lives in zeroconf's loop ---------------------------------------------


class _Browser:
    """Tracks the instances of one service type and their endpoints.

    Every method but ``answer`` runs in zeroconf's event loop thread; ``answer`` is what
    the trio side reads, under a lock. ``notify`` is called (in the loop) after the answer
    changed and must not block.
    """

    def __init__(
        self,
        zc: Zeroconf,
        service_type: str,
        params: MdnsParams,
        resolve_timeout: float,
        notify: Callable[[], None],
    ) -> None:
        self._zc = zc
        self._type = service_type
        self._v4 = params.v4
        self._v6 = params.v6
        self._timeout_ms = resolve_timeout * 1000
        self._notify = notify
        self._lock = threading.Lock()
        self._answer: frozenset[str] = frozenset()
        self._names: set[str] = set()
        self._endpoints: dict[str, frozenset[str]] = {}
        self._requests: dict[str, asyncio.Task[None]] = {}
        self._failures: dict[str, tuple[int, float]] = {}
        self._browser: AsyncServiceBrowser | None = None
        self._info: ServiceInfo | None = None
        self._announcing: asyncio.Future[Any] | None = None

    def answer(self) -> frozenset[str]:
        """The current endpoints; callable from any thread."""
        with self._lock:
            return self._answer

    async def start(self, info: ServiceInfo | None) -> None:
        """Announce ``info`` (if any) without probing and start browsing."""
        if info is not None:
            announcing = await self._zc.async_register_service(info, cooperating_responders=True)
            self._info = info
            self._announcing = asyncio.ensure_future(announcing)
        self._browser = AsyncServiceBrowser(self._zc, [self._type], handlers=[self._on_change])
        # The browser's first query waits 20-120 ms (RFC 6762 5.2, against storms when
        # many hosts start at once). One QU query now gets unicast answers in
        # milliseconds; a few booting servers are no storm.
        self._zc.async_send(ptr_query(self._type))

    async def stop(self) -> None:
        """Stop browsing and resolving; withdraw the registration (goodbye)."""
        if self._browser is not None:
            await self._browser.async_cancel()
        for task in self._requests.values():
            task.cancel()
        self._requests.clear()
        if self._announcing is not None:
            self._announcing.cancel()
        if self._info is not None:
            info, self._info = self._info, None
            await _await_if_needed(await self._zc.async_unregister_service(info))

    def requery(self) -> None:
        """Ask for the type by multicast with the known answers, so that only instances
        not known yet answer, and announce our own record set once."""
        now = current_time_millis()
        for out in generate_service_query(self._zc, now, {self._type}, True, DNSQuestionType.QM):
            self._zc.async_send(out)
        if self._info is not None:
            self._zc.async_send(self._zc.generate_service_broadcast(self._info, None))

    def revalidate(self) -> None:
        """Read every instance again from the cache: records that expired drop out, and an
        instance that could not be resolved is queried again (with a backoff)."""
        now = current_time_millis()
        for name in sorted(self._names):
            info = AsyncServiceInfo(self._type, name)
            if info.load_from_cache(self._zc, now):
                self._resolved(name, info)
            else:
                self._endpoints.pop(name, None)
                _, not_before = self._failures.get(name, (0, 0.0))
                if now >= not_before:
                    self._request(name)
        self._publish()

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        del zeroconf, service_type
        if state_change is ServiceStateChange.Removed:
            self._names.discard(name)
            self._endpoints.pop(name, None)
            self._failures.pop(name, None)
            task = self._requests.pop(name, None)
            if task is not None:
                task.cancel()
            self._publish()
            return
        self._names.add(name)
        info = AsyncServiceInfo(self._type, name)
        if info.load_from_cache(self._zc):
            self._resolved(name, info)
            self._publish()
        else:
            self._request(name)

    def _request(self, name: str) -> None:
        if name not in self._requests:
            self._requests[name] = asyncio.ensure_future(self._resolve(name))

    async def _resolve(self, name: str) -> None:
        info = AsyncServiceInfo(self._type, name)
        try:
            found = await info.async_request(self._zc, self._timeout_ms)
        finally:
            self._requests.pop(name, None)
        if name not in self._names:
            return
        if found:
            self._resolved(name, info)
        else:
            count, _ = self._failures.get(name, (0, 0.0))
            delay = _RETRY_BACKOFF[min(count, len(_RETRY_BACKOFF) - 1)]
            self._failures[name] = (count + 1, current_time_millis() + delay * 1000)
            self._endpoints.pop(name, None)
            log.debug("mdns: %s did not resolve; asking again in %gs", name, delay)
        self._publish()

    def _resolved(self, name: str, info: ServiceInfo) -> None:
        self._failures.pop(name, None)
        self._endpoints[name] = endpoints_for(
            info.port, info.parsed_addresses(), v4=self._v4, v6=self._v6
        )

    def _publish(self) -> None:
        answer = frozenset().union(*self._endpoints.values())
        with self._lock:
            changed, self._answer = answer != self._answer, answer
        if changed:
            self._notify()


async def _await_if_needed(awaitable: Any) -> None:
    """Await what zeroconf's ``async_*`` calls hand back (a task), if anything."""
    if awaitable is not None:
        await awaitable


async def _in_loop(zc: Zeroconf, coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` on zeroconf's loop and wait for it without blocking trio.

    Cancelling the waiting trio task cancels the coroutine.
    """
    loop = zc.loop
    assert loop is not None
    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: concurrent.futures.Future[_T]) -> None:
        _run_soon(token, done.set)

    future.add_done_callback(wake)
    try:
        await done.wait()
    except trio.Cancelled:
        future.cancel()
        raise
    return future.result()


def _run_soon(token: trio.lowlevel.TrioToken, function: Callable[[], object]) -> None:
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(function)


# --- The provider -----------------------------------------------------------------------


class _Rebuild(Exception):
    """The interfaces or addresses changed: close the session and open a new one."""


@dataclass(slots=True)
class _Session:
    zc: Zeroconf
    browser: _Browser
    plan: SocketPlan


class MdnsProvider(Provider):
    """Advertises this node and browses for the others over mDNS."""

    name = "mdns"

    def __init__(
        self,
        params: MdnsParams,
        *,
        refresh: float = DEFAULT_REFRESH,
        server_cache_duration: float = DEFAULT_SERVER_CACHE_DURATION,
        interfaces: Callable[[], Sequence[Interface]] = list_interfaces,
        watch: LinkWatcher = watch_netlink,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(refresh=refresh)
        self.params = params
        self.service_type = params.service_type
        self.resolve_timeout = params.timeout or DEFAULT_RESOLVE_TIMEOUT
        self.server_cache_duration = server_cache_duration
        self._interfaces = interfaces
        self._watch = watch
        self._rng = rng or random.Random()
        self._trouble = OnceLogger(log)
        self._changed = trio.Event()
        self._link_changed = False

    @classmethod
    def create(cls, params: DiscoveryParams, settings: ProviderSettings) -> MdnsProvider:
        return cls(
            params.typed_as(MdnsParams),
            refresh=settings.refresh,
            server_cache_duration=settings.server_cache_duration,
        )

    async def run(
        self,
        advertisement: Advertisement | None,
        answers: AnswerSender,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Advertise (servers) and browse; rebuilt when the interfaces' addresses change.

        ``task_status.started()`` comes after the first attempt to set up: with the
        registration announced, or with the reason it failed logged (it is retried every
        ``refresh`` seconds, and the answer stays empty meanwhile).
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch, self._on_link_change)
            await self._sessions(advertisement, answers, task_status)
            nursery.cancel_scope.cancel()

    def _on_link_change(self) -> None:
        self._link_changed = True
        self._changed.set()

    async def _sessions(
        self,
        advertisement: Advertisement | None,
        answers: AnswerSender,
        task_status: trio.TaskStatus[None],
    ) -> None:
        token = trio.lowlevel.current_trio_token()
        started = False
        while True:
            session = await self._open(advertisement, token)
            if not started:
                task_status.started()
                started = True
            if session is None:
                if not await send_answer(answers, frozenset()):
                    return
                with trio.move_on_after(self.refresh):
                    await self._changed.wait()  # a link change: try again at once
                self._changed, self._link_changed = trio.Event(), False
                continue
            try:
                if not await self._serve(session, advertisement, answers):
                    return
            finally:
                with trio.CancelScope(shield=True):
                    await self._close(session)

    async def _open(
        self, advertisement: Advertisement | None, token: trio.lowlevel.TrioToken
    ) -> _Session | None:
        advertised = () if advertisement is None else advertisement.addresses
        try:
            plan = plan_sockets(self.params, advertised, self._interfaces())
        except MdnsSetupError as exc:
            self._trouble.report(
                logging.ERROR,
                f"mdns: {exc}; retrying every {self.refresh:g}s and at any link change",
            )
            return None
        try:
            zc = await trio.to_thread.run_sync(
                partial(
                    Zeroconf,
                    interfaces=list(plan.interfaces),
                    ip_version=plan.ip_version,
                    use_asyncio=False,
                )
            )
        except Exception as exc:  # zeroconf's errors are many; none may stop the node
            self._trouble.report(
                logging.ERROR,
                f"mdns: cannot open mDNS sockets on {list(plan.interfaces)}: {exc}; "
                f"retrying every {self.refresh:g}s and at any link change",
            )
            return None
        browser = _Browser(
            zc,
            self.service_type,
            self.params,
            self.resolve_timeout,
            partial(_run_soon, token, self._wake),
        )
        session = _Session(zc, browser, plan)
        name = (
            "nothing"
            if advertisement is None
            else instance_name(advertisement.node_id, self.service_type)
        )
        try:
            info = None
            if advertisement is not None:
                info = build_service_info(advertisement, self.service_type, plan.addresses)
            await _in_loop(zc, browser.start(info))
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self._close(session)
            if not isinstance(exc, Exception):
                raise
            self._trouble.report(logging.ERROR, f"mdns: cannot register {name}: {exc}")
            return None
        self._trouble.clear()
        if advertisement is None:
            log.info("mdns: browsing %s (an agent advertises nothing)", self.service_type)
        else:
            log.info(
                "mdns: advertising %s on %s port %d; browsing %s",
                name,
                ", ".join(plan.addresses),
                advertisement.port,
                self.service_type,
            )
        return session

    async def _serve(
        self, session: _Session, advertisement: Advertisement | None, answers: AnswerSender
    ) -> bool:
        """Send answers until the plan changes (True: rebuild) or the consumer leaves."""
        now = trio.current_time()
        next_check = now + self.refresh
        next_query = now + requery_delay(self.server_cache_duration, self._rng)
        last_query = now  # the session's start queried
        advertised = () if advertisement is None else advertisement.addresses

        async def wait_change(deadline: float) -> frozenset[str]:
            nonlocal next_check, next_query, last_query
            with trio.move_on_at(min(deadline, next_check, next_query)):
                await self._changed.wait()
            self._changed = trio.Event()
            link_changed, self._link_changed = self._link_changed, False
            now = trio.current_time()
            if link_changed or now >= next_check:
                next_check = now + self.refresh
                self._check_plan(session, advertised, link_changed)
                self._in_session(session, session.browser.revalidate)
            if link_changed:  # at once, but never more than once a second (link storms)
                next_query = min(next_query, max(now, last_query + MIN_REQUERY_PERIOD))
            if now >= next_query:
                last_query = now
                next_query = now + requery_delay(self.server_cache_duration, self._rng)
                self._in_session(session, session.browser.requery)
            return session.browser.answer()

        try:
            await emit_while_changing(answers, self.refresh, wait_change)
        except _Rebuild:
            return True
        return False

    def _check_plan(self, session: _Session, advertised: Sequence[str], link: bool) -> None:
        """Raise ``_Rebuild`` if the interfaces or addresses no longer match the session."""
        try:
            plan = plan_sockets(self.params, advertised, self._interfaces())
        except MdnsSetupError:
            raise _Rebuild from None  # reopening says why
        if plan != session.plan:
            log.info("mdns: interfaces or addresses changed; advertising again")
            raise _Rebuild
        if link:
            log.debug("mdns: a link or address changed; asking and announcing again")

    @staticmethod
    def _in_session(session: _Session, function: Callable[[], None]) -> None:
        loop = session.zc.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # closed: the next rebuild tells
                loop.call_soon_threadsafe(function)

    def _wake(self) -> None:
        self._changed.set()

    async def _close(self, session: _Session) -> None:
        """Goodbye, stop the browser, close the sockets and join zeroconf's thread."""
        with trio.move_on_after(_TEARDOWN_TIMEOUT):
            try:
                await _in_loop(session.zc, session.browser.stop())
            except Exception as exc:
                log.warning("mdns: withdrawing the advertisement failed: %s", exc)
        await trio.to_thread.run_sync(session.zc.close)
