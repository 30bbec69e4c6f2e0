"""``provider=srv`` against a real DNS server on loopback (``dns_harness``), real clock.

Every wait is on an event (an answer sent, a question asked) under ``trio.fail_after``.
"""

from __future__ import annotations

import math

import dns.asyncresolver
import pytest
import trio
from dns_harness import Zone, serve_dns

from rancherd.discovery import SrvProvider, make_provider
from rancherd.discovery.params import DiscoveryParams, SrvParams, check_params
from rancherd.discovery.provider import Advertisement
from rancherd.discovery.srv import MAX_REQUERY, MIN_REQUERY, requery_interval

QNAME = "_rancher-server._tcp.rancherd.test."
AD = Advertisement("0" * 32, 8443)


def params(port: int, **extra: str) -> SrvParams:
    values = {
        "provider": "srv",
        "service": "rancher-server",
        "domain": "rancherd.test",
        "nameservers": f"127.0.0.1:{port}",
        **extra,
    }
    return DiscoveryParams.from_mapping(values).typed_as(SrvParams)


def provider(port: int, **kwargs: float) -> SrvProvider:
    kwargs.setdefault("min_requery", 0.05)
    kwargs.setdefault("query_timeout", 2.0)
    return SrvProvider(params(port), refresh=60, **kwargs)


async def start_provider(
    nursery: trio.Nursery, zone: Zone
) -> trio.MemoryReceiveChannel[frozenset[str]]:
    """A DNS server for ``zone`` and a provider asking it; the provider's answers."""
    send, receive = trio.open_memory_channel[frozenset[str]](8)
    port = await nursery.start(serve_dns, zone)
    await nursery.start(provider(port).run, AD, send)
    return receive


async def start_lookups(
    nursery: trio.Nursery, zone: Zone, **kwargs: float
) -> tuple[SrvProvider, dns.asyncresolver.Resolver]:
    """A DNS server for ``zone``, and a provider to call ``lookup`` on by hand."""
    port = await nursery.start(serve_dns, zone)
    srv = provider(port, **kwargs)
    resolver = srv._make_resolver()
    assert resolver is not None
    return srv, resolver


async def next_answer(
    receive: trio.MemoryReceiveChannel[frozenset[str]], want: frozenset[str]
) -> None:
    """Until the provider sends ``want`` (answers on the way there are skipped)."""
    async for answer in receive:
        if answer == want:
            return


# --- Parameters ------------------------------------------------------------------------


def test_go_discover_readme_example_parses() -> None:
    srv = DiscoveryParams.parse("provider=srv service=consul proto=tcp domain=consul").typed_as(
        SrvParams
    )
    assert srv == SrvParams("consul", "tcp", "consul")
    assert srv.qname == "_consul._tcp.consul."


def test_defaults_and_spellings() -> None:
    srv = DiscoveryParams.parse(
        "provider=srv service=_rancher-server domain=example.com. "
        'nameservers="10.0.0.2,[fd00::1]:5353"'
    ).typed_as(SrvParams)
    assert srv.proto == "tcp"  # go-discover's default
    assert srv.qname == "_rancher-server._tcp.example.com."
    assert [str(ns) for ns in srv.nameservers] == ["10.0.0.2", "[fd00::1]:5353"]


@pytest.mark.parametrize(
    ("values", "param", "message"),
    [
        ({"domain": "x.test"}, "service", "required by provider srv"),
        ({"service": "s"}, "domain", "required by provider srv"),
        ({"service": "a b", "domain": "x.test"}, "service", "not an SRV service label"),
        ({"service": "s", "domain": "x..test"}, "domain", "not a DNS domain name"),
        ({"service": "s", "domain": "x.test", "proto": "t p"}, "proto", "not a protocol"),
        ({"service": "s", "domain": "x.test", "nameservers": "dns.test"}, "nameservers", "an IP"),
        ({"service": "s", "domain": "x.test", "name": "y"}, "name", "unknown parameter of srv"),
    ],
)
def test_srv_errors(values: dict[str, str], param: str, message: str) -> None:
    issues = check_params({"provider": "srv", **values})
    assert [issue.param for issue in issues] == [param]
    assert message in issues[0].message


def test_make_provider_builds_it() -> None:
    made = make_provider(
        DiscoveryParams.parse("provider=srv service=s domain=x.test"), default_port=8443
    )
    assert isinstance(made, SrvProvider)


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(0, MIN_REQUERY), (1, MIN_REQUERY), (60, 60), (86400, MAX_REQUERY), (math.inf, MAX_REQUERY)],
)
def test_requery_interval_is_the_ttl_within_bounds(ttl: float, expected: float) -> None:
    assert requery_interval(ttl) == expected


# --- Against a DNS server ----------------------------------------------------------------


async def test_each_target_and_port_is_an_endpoint() -> None:
    zone = Zone()
    zone.srv(QNAME, [("n1.rancherd.test.", 8443), ("n2.rancherd.test.", 9443), (".", 1)])
    zone.a("n1.rancherd.test.", ["10.1.0.1"])
    zone.a("n2.rancherd.test.", ["10.1.0.2", "10.1.0.3"])
    zone.aaaa("n2.rancherd.test.", ["fd00::2"])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            receive = await start_provider(nursery, zone)
            assert await receive.receive() == {
                "10.1.0.1:8443",
                "10.1.0.2:9443",
                "10.1.0.3:9443",
                "[fd00::2]:9443",
            }
            nursery.cancel_scope.cancel()
    assert (".", "A") not in zone.asked  # a "." target means: not here


async def test_records_added_and_removed_while_running() -> None:
    zone = Zone()
    zone.srv(QNAME, [("n1.rancherd.test.", 8443)])
    zone.a("n1.rancherd.test.", ["10.1.0.1"])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            receive = await start_provider(nursery, zone)
            await next_answer(receive, frozenset({"10.1.0.1:8443"}))
            zone.srv(QNAME, [("n1.rancherd.test.", 8443), ("n2.rancherd.test.", 8443)])
            zone.a("n2.rancherd.test.", ["10.1.0.2"])
            await next_answer(receive, frozenset({"10.1.0.1:8443", "10.1.0.2:8443"}))
            zone.srv(QNAME, [("n2.rancherd.test.", 8443)])
            await next_answer(receive, frozenset({"10.1.0.2:8443"}))
            zone.remove(QNAME, "SRV")  # the name still holds nothing else: NXDOMAIN
            await next_answer(receive, frozenset())
            nursery.cancel_scope.cancel()


async def test_the_smallest_ttl_sets_the_next_lookup() -> None:
    zone = Zone()
    zone.srv(QNAME, [("n1.rancherd.test.", 8443)], ttl=40)
    zone.a("n1.rancherd.test.", ["10.1.0.1"], ttl=25)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            srv, resolver = await start_lookups(nursery, zone, min_requery=1, max_requery=30)
            before = trio.current_time()
            assert await srv.lookup(resolver) == {"10.1.0.1:8443"}
            assert before + 25 <= srv.next_lookup <= trio.current_time() + 25
            zone.a("n1.rancherd.test.", ["10.1.0.1"], ttl=3600)
            zone.srv(QNAME, [("n1.rancherd.test.", 8443)], ttl=3600)
            await srv.lookup(resolver)
            assert srv.next_lookup <= trio.current_time() + 30  # the ceiling
            zone.remove(QNAME, "SRV")
            zone.remove("n1.rancherd.test.", "A")
            assert await srv.lookup(resolver) == frozenset()
            assert srv.next_lookup <= trio.current_time() + 1  # the floor, for a removal
            nursery.cancel_scope.cancel()


async def test_a_silent_server_keeps_the_last_answer_and_never_blocks_trio() -> None:
    zone = Zone()
    zone.srv(QNAME, [("n1.rancherd.test.", 8443)])
    zone.a("n1.rancherd.test.", ["10.1.0.1"])
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            srv, resolver = await start_lookups(nursery, zone, query_timeout=0.5)
            assert await srv.lookup(resolver) == {"10.1.0.1:8443"}
            zone.silent = True
            nursery.start_soon(tick)
            started = trio.current_time()
            assert await srv.lookup(resolver) == {"10.1.0.1:8443"}
            waited = trio.current_time() - started
            assert waited >= 0.5
            # The trio thread ran other tasks all along the lookup.
            assert ticks >= waited / 0.01 / 4
            nursery.cancel_scope.cancel()


async def test_a_target_without_address_is_skipped() -> None:
    zone = Zone()
    zone.srv(QNAME, [("n1.rancherd.test.", 8443), ("gone.rancherd.test.", 8443)])
    zone.a("n1.rancherd.test.", ["10.1.0.1"])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            srv, resolver = await start_lookups(nursery, zone)
            assert await srv.lookup(resolver) == {"10.1.0.1:8443"}
            assert zone.count("gone.rancherd.test.", "A") == 1
            nursery.cancel_scope.cancel()
