"""``provider=srv``: the servers are the targets of DNS SRV records, as in go-discover.

go-discover's srv provider asks Go's resolver for ``_<service>._<proto>.<domain>`` and
returns each record's ``target:port``. We do the same with dnspython's asynchronous
resolver (trio backend: nothing blocks the trio thread), then resolve each target's A and
AAAA records with the same resolver, so that a DNS server named in ``nameservers`` is the
only one asked and peers get IP endpoints they can dial. Records of every priority and
weight are used: every server is a peer, not a fallback.

Operators whose servers do not share an L2 segment use it where mDNS cannot reach: one SRV
record per server, ``_rancher-server._tcp.example.com. 60 IN SRV 0 0 8443 node1.example.com.``,
the port being the node's ``discovery.port``.

The records are asked again when their TTL runs out (the smallest TTL of the SRV and
address records), but never sooner than ``MIN_REQUERY`` seconds (dnsmasq's local records
have a TTL of 0) nor later than ``MAX_REQUERY``, so a server added to the records is found
within minutes even behind a long TTL. A name that does not exist, or has no SRV records,
is an empty answer: the records were removed. A DNS server that does not answer leaves the
last answer in place (the servers did not go away because DNS did) and is asked again
after ``MIN_REQUERY`` seconds; both are logged once until they change.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import trio

from rancherd.addresses import join_host_port
from rancherd.discovery.params import DiscoveryParams, SrvParams
from rancherd.discovery.provider import (
    DEFAULT_REFRESH,
    Advertisement,
    AnswerSender,
    OnceLogger,
    Provider,
    ProviderSettings,
    emit_while_changing,
)

__all__ = [
    "MAX_REQUERY",
    "MAX_TARGETS",
    "MIN_REQUERY",
    "QUERY_TIMEOUT",
    "SrvProvider",
    "requery_interval",
]

log = logging.getLogger(__name__)

MIN_REQUERY = 5.0
"""Seconds between two lookups at least, whatever the TTL (0 is common)."""
MAX_REQUERY = 300.0
"""Seconds between two lookups at most, whatever the TTL: new servers are found in time."""
QUERY_TIMEOUT = 5.0
"""Seconds one lookup (the SRV records and their targets' addresses) may take."""
MAX_TARGETS = 128
"""SRV records used at most: more than any fleet rancherd elects in (``expectedServers``
is at most 128), and a bound on the address lookups one answer can cause."""

_DNS_PORT = 53


def requery_interval(ttl: float, floor: float = MIN_REQUERY, ceiling: float = MAX_REQUERY) -> float:
    """Seconds until the next lookup for records whose smallest TTL is ``ttl``."""
    return min(max(ttl, floor), ceiling)


class _LookupFailed(Exception):
    """The DNS server did not give an answer (timeout, refusal, no server reachable)."""


class SrvProvider(Provider):
    """Answers the addresses of the SRV records' targets; advertises nothing (the records
    are the operator's)."""

    name = "srv"

    def __init__(
        self,
        params: SrvParams,
        *,
        refresh: float = DEFAULT_REFRESH,
        min_requery: float = MIN_REQUERY,
        max_requery: float = MAX_REQUERY,
        query_timeout: float = QUERY_TIMEOUT,
    ) -> None:
        super().__init__(refresh=refresh)
        if not 0 < min_requery <= max_requery or math.isinf(max_requery):
            raise ValueError("requery bounds must be 0 < min_requery <= max_requery < inf")
        self.params = params
        self.min_requery = min_requery
        self.max_requery = max_requery
        self.query_timeout = query_timeout
        self._answer: frozenset[str] = frozenset()
        self._due = -math.inf
        self._trouble = OnceLogger(log)

    @property
    def next_lookup(self) -> float:
        """The trio time of the next lookup (-inf before the first)."""
        return self._due

    @classmethod
    def create(cls, params: DiscoveryParams, settings: ProviderSettings) -> SrvProvider:
        return cls(params.typed_as(SrvParams), refresh=settings.refresh)

    async def run(
        self,
        advertisement: Advertisement | None,
        answers: AnswerSender,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # Reading /etc/resolv.conf is file I/O: off the trio thread.
        resolver = await trio.to_thread.run_sync(self._make_resolver)
        task_status.started()
        if resolver is None:
            await trio.sleep_forever()  # logged; the config cannot work until it changes
        assert resolver is not None
        await self.lookup(resolver)

        async def wait_change(deadline: float) -> frozenset[str]:
            before = self._answer
            while trio.current_time() < deadline:
                if trio.current_time() >= self._due:
                    await self.lookup(resolver)
                    if self._answer != before:
                        break
                else:
                    await trio.sleep_until(min(deadline, self._due))
            return self._answer

        await emit_while_changing(answers, self.refresh, wait_change)

    def _make_resolver(self) -> dns.asyncresolver.Resolver | None:
        servers = self.params.nameservers
        try:
            resolver = dns.asyncresolver.Resolver(configure=not servers)
        except (dns.resolver.NoResolverConfiguration, OSError) as exc:
            self._trouble.report(
                logging.ERROR,
                f"discovery srv: no DNS server to ask ({exc}); set nameservers in "
                "discovery.params or fix /etc/resolv.conf",
            )
            return None
        if servers:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(s.host, _DNS_PORT if s.port is None else s.port)
                for s in servers
            ]
        resolver.cache = None  # every lookup asks: the TTL schedule is ours
        return resolver

    async def lookup(self, resolver: dns.asyncresolver.Resolver) -> frozenset[str]:
        """Ask for the records now; update the answer and when to ask next."""
        qname = self.params.qname
        ttl: float = self.min_requery
        with trio.move_on_after(self.query_timeout) as scope:
            try:
                answer, ttl = await self._resolve(resolver)
            except _LookupFailed as exc:
                self._trouble.report(
                    logging.WARNING,
                    f"discovery srv: {qname} could not be resolved ({exc}); keeping the last "
                    f"answer ({len(self._answer)} addresses), asking again in "
                    f"{self.min_requery:g}s",
                )
            else:
                if answer != self._answer:
                    log.info("discovery srv: %s gives %d addresses", qname, len(answer))
                if answer:
                    self._trouble.clear(f"discovery srv: {qname} resolves again")
                else:
                    self._trouble.report(
                        logging.WARNING,
                        f"discovery srv: {qname} has no SRV records (yet); asking again in "
                        f"{requery_interval(ttl, self.min_requery, self.max_requery):g}s",
                    )
                self._answer = answer
        if scope.cancelled_caught:
            self._trouble.report(
                logging.WARNING,
                f"discovery srv: no answer for {qname} within {self.query_timeout:g}s; "
                "keeping the last answer",
            )
        self._due = trio.current_time() + requery_interval(ttl, self.min_requery, self.max_requery)
        return self._answer

    async def _resolve(self, resolver: dns.asyncresolver.Resolver) -> tuple[frozenset[str], float]:
        """The endpoints the records name, and the smallest TTL met on the way."""
        try:
            srv = await resolver.resolve(
                self.params.qname, dns.rdatatype.SRV, search=False, lifetime=self.query_timeout
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return frozenset(), self.min_requery  # removed, or not yet added
        except (dns.exception.DNSException, OSError) as exc:
            raise _LookupFailed(_describe(exc)) from None
        ttl: float = srv.rrset.ttl if srv.rrset is not None else self.min_requery
        targets: dict[dns.name.Name, set[int]] = {}
        for record in list(srv)[:MAX_TARGETS]:
            if record.target == dns.name.root:
                continue  # "." : the service is decidedly not available there (RFC 2782)
            targets.setdefault(record.target, set()).add(record.port)
        addresses: dict[dns.name.Name, list[str]] = {}
        ttls: list[float] = [ttl]
        failures: list[str] = []

        async def addresses_of(target: dns.name.Name) -> None:
            found: list[str] = []
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                try:
                    result = await resolver.resolve(
                        target, rdtype, search=False, lifetime=self.query_timeout
                    )
                except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                    continue
                except (dns.exception.DNSException, OSError) as exc:
                    failures.append(f"{target}: {_describe(exc)}")
                    return
                if result.rrset is not None:
                    ttls.append(result.rrset.ttl)
                found.extend(record.address for record in result)
            if not found:
                log.warning("discovery srv: target %s has no A or AAAA record; skipped", target)
            addresses[target] = found

        async with trio.open_nursery() as nursery:
            for target in sorted(targets):
                nursery.start_soon(addresses_of, target)
        if failures:
            raise _LookupFailed(failures[0])
        endpoints = _endpoints(
            (address, port)
            for target, ports in targets.items()
            for address in addresses.get(target, [])
            for port in ports
        )
        return endpoints, min(ttls)


def _endpoints(pairs: Iterable[tuple[str, int]]) -> frozenset[str]:
    return frozenset(join_host_port(address, port) for address, port in pairs)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "the DNS server did not answer in time"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "no DNS server gave a usable answer"
    return str(exc) or type(exc).__name__
