"""The mdns provider: its pure parts, and two providers meeting over multicast on ``lo``.

The loopback tests need no root: both providers run in this process, with zeroconf bound
to 127.0.0.1 and a service name no other test or machine uses. They skip, with the reason,
where multicast does not loop back on ``lo``.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from zeroconf import IPVersion
from zeroconf._protocol.incoming import DNSIncoming

from rancherd.discovery.mdns import (
    Interface,
    MdnsProvider,
    MdnsSetupError,
    build_service_info,
    endpoints_for,
    host_name,
    instance_name,
    list_interfaces,
    plan_sockets,
    ptr_query,
)
from rancherd.discovery.params import DiscoveryParams, MdnsParams
from rancherd.discovery.provider import Advertisement

NODE_A = "aaaaaaaaaaaa00000000000000000001"
NODE_B = "bbbbbbbbbbbb00000000000000000002"
TYPE = "_rancher-server._tcp.local."
MDNS_LOG = "rancherd.discovery.mdns"


def mdns(text: str = "") -> MdnsParams:
    return DiscoveryParams.parse(f"provider=mdns service=rancher-server {text}").typed_as(
        MdnsParams
    )


# --- Names and records -----------------------------------------------------------------


def test_names_derive_from_the_node_id() -> None:
    assert instance_name(NODE_A, TYPE) == "rancherd-aaaaaaaaaaaa._rancher-server._tcp.local."
    assert host_name(NODE_A) == "rancherd-aaaaaaaaaaaa.local."
    assert instance_name(NODE_A, TYPE) != instance_name(NODE_B, TYPE)


def test_service_info_carries_the_advertisement() -> None:
    ad = Advertisement(NODE_A, 8443, txt={"v": "1", "role": "server"})
    info = build_service_info(ad, TYPE, ["10.0.0.5", "fd00::5"])
    assert info.type == TYPE
    assert info.name == instance_name(NODE_A, TYPE)
    assert info.server == host_name(NODE_A)
    assert info.port == 8443
    assert info.decoded_properties == {"v": "1", "role": "server"}
    assert info.parsed_addresses(IPVersion.V4Only) == ["10.0.0.5"]
    assert info.parsed_addresses(IPVersion.V6Only) == ["fd00::5"]


def test_ptr_query_asks_for_unicast_answers() -> None:
    packet = DNSIncoming(ptr_query(TYPE).packets()[0])
    assert packet.is_query()
    [question] = packet.questions
    assert question.name == TYPE
    assert question.unicast


@pytest.mark.parametrize(
    ("port", "addresses", "v4", "v6", "want"),
    [
        (8443, ["10.0.0.5"], True, True, {"10.0.0.5:8443"}),
        (8443, ["10.0.0.5", "fd00::5"], True, True, {"10.0.0.5:8443", "[fd00::5]:8443"}),
        (8443, ["10.0.0.5", "fd00::5"], False, True, {"[fd00::5]:8443"}),
        (8443, ["10.0.0.5", "fd00::5"], True, False, {"10.0.0.5:8443"}),
        (8443, ["fe80::1", "fe80::2%eth0"], True, True, set()),  # no zone, no dialing
        (8443, ["0.0.0.0", "::", "224.0.0.251", "ff02::fb"], True, True, set()),
        (8443, ["not an address"], True, True, set()),
        (None, ["10.0.0.5"], True, True, set()),
        (0, ["10.0.0.5"], True, True, set()),
    ],
)
def test_endpoints_for(
    port: int | None, addresses: list[str], v4: bool, v6: bool, want: set[str]
) -> None:
    assert endpoints_for(port, addresses, v4=v4, v6=v6) == want


# --- Choosing interfaces ---------------------------------------------------------------

LO = Interface("lo", 1, ("127.0.0.1", "::1"))
ETH0 = Interface("eth0", 2, ("10.0.0.5", "fe80::5", "fd00::5"))
ETH1 = Interface("eth1", 3, ("192.168.1.5",))
BARE = Interface("eth2", 4, ())


def test_plan_uses_every_interface_but_loopback() -> None:
    plan = plan_sockets(mdns(), (), [LO, ETH0, ETH1, BARE])
    assert plan.interfaces == ("10.0.0.5", "192.168.1.5", 2)
    assert plan.ip_version is IPVersion.All
    assert plan.addresses == ("10.0.0.5", "fd00::5", "192.168.1.5")


def test_plan_with_named_interfaces_takes_all_their_addresses() -> None:
    plan = plan_sockets(mdns("interface=lo v6=false"), (), [LO, ETH0])
    assert plan.interfaces == ("127.0.0.1",)
    assert plan.ip_version is IPVersion.V4Only
    assert plan.addresses == ("127.0.0.1",)
    plan = plan_sockets(mdns('interfaces="eth1 eth0"'), (), [LO, ETH0, ETH1])
    assert plan.interfaces == ("192.168.1.5", "10.0.0.5", 2)
    assert plan.addresses == ("192.168.1.5", "10.0.0.5", "fd00::5")


def test_plan_honours_the_address_families() -> None:
    plan = plan_sockets(mdns("v4=false"), (), [LO, ETH0, ETH1])
    assert plan.interfaces == (2,)
    assert plan.ip_version is IPVersion.V6Only
    assert plan.addresses == ("fd00::5",)
    plan = plan_sockets(mdns("v6=false"), (), [ETH0])
    assert plan.ip_version is IPVersion.V4Only
    assert plan.addresses == ("10.0.0.5",)


def test_plan_falls_back_to_the_family_that_exists() -> None:
    plan = plan_sockets(mdns(), (), [LO, ETH1])  # v6 enabled, but no IPv6 here
    assert plan.ip_version is IPVersion.V4Only


def test_plan_advertises_the_given_addresses() -> None:
    plan = plan_sockets(mdns("v6=false"), ("10.9.9.9", "fd00::9"), [ETH0])
    assert plan.interfaces == ("10.0.0.5",)
    assert plan.addresses == ("10.9.9.9",)


@pytest.mark.parametrize(
    ("params", "interfaces", "message"),
    [
        (
            "interface=eth7",
            [LO, ETH0],
            "no network interface named eth7 (this machine has: eth0, lo)",
        ),
        ("", [LO], "no IPv4/IPv6 address on any interface yet"),
        ("interface=eth2", [BARE], "no IPv4/IPv6 address on interface eth2 yet"),
        ("v4=false interface=eth1", [ETH1], "no IPv6 address on interface eth1"),
        ("v4=false", [Interface("eth0", 2, ("fe80::5",))], "no IPv6 address to advertise"),
    ],
)
def test_plan_errors_say_what_to_fix(
    params: str, interfaces: list[Interface], message: str
) -> None:
    with pytest.raises(MdnsSetupError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_sockets(mdns(params), (), interfaces)


# --- Setup errors are retried, not raised ----------------------------------------------


async def test_unknown_interface_is_logged_once_and_retried(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, MDNS_LOG)
    looks: list[float] = []

    def interfaces() -> list[Interface]:
        looks.append(trio.current_time())
        return [ETH0]

    provider = MdnsProvider(mdns("interface=eth9"), refresh=5.0, interfaces=interfaces)
    send, receive = trio.open_memory_channel[frozenset[str]](100)
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, Advertisement(NODE_A, 8443), send)
        with trio.fail_after(60):
            for _ in range(4):
                assert await receive.receive() == frozenset()
        nursery.cancel_scope.cancel()
    assert looks[:4] == [0.0, 5.0, 10.0, 15.0]
    errors = [r for r in caplog.records if r.name == MDNS_LOG]
    assert len(errors) == 1
    assert errors[0].levelno == logging.ERROR
    assert "no network interface named eth9" in errors[0].getMessage()


# --- Two providers on the loopback interface -------------------------------------------


def multicast_loops_on_lo() -> str | None:
    """None if a multicast datagram sent on lo comes back; otherwise why not."""
    group = "224.0.0.251"
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        ):
            receiver.bind(("0.0.0.0", 0))
            port = receiver.getsockname()[1]
            membership = socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
            receiver.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            receiver.settimeout(2.0)
            sender.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1")
            )
            sender.sendto(b"probe", (group, port))
            receiver.recv(16)
    except OSError as exc:
        return (
            f"multicast does not loop back on lo here ({exc}); "
            "`ip link set lo multicast on` (root) may help"
        )
    return None


@pytest.fixture
def lo_multicast() -> None:
    reason = multicast_loops_on_lo()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def no_thread_left() -> Iterator[None]:
    """Fail if a thread started by the test (zeroconf's loop) outlives it. trio's idle
    worker threads are a cache, not a leak."""
    before = set(threading.enumerate())
    yield
    left = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.startswith("Trio thread")
    ]
    assert not left


def lo_params(service: str) -> MdnsParams:
    return DiscoveryParams.parse(f"provider=mdns service={service} interface=lo v6=false").typed_as(
        MdnsParams
    )


@asynccontextmanager
async def provider_on_lo(
    nursery: trio.Nursery,
    service: str,
    node_id: str,
    port: int,
    interfaces: Callable[[], Sequence[Interface]] | None = None,
) -> AsyncIterator[trio.MemoryReceiveChannel[frozenset[str]]]:
    """Start an mdns provider on lo in its own cancel scope; yield its answers; stop it."""
    provider = MdnsProvider(
        lo_params(service), refresh=0.5, interfaces=interfaces or list_interfaces
    )
    send, receive = trio.open_memory_channel[frozenset[str]](1000)
    scope = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await provider.run(Advertisement(node_id, port), send, task_status=task_status)

    await nursery.start(run)
    try:
        yield receive
    finally:
        scope.cancel()


async def wait_for(
    answers: trio.MemoryReceiveChannel[frozenset[str]], check: Callable[[frozenset[str]], bool]
) -> frozenset[str]:
    async for answer in answers:
        if check(answer):
            return answer
    raise AssertionError("the provider stopped")


def unique_service() -> str:
    return f"rdt-{secrets.token_hex(4)}"  # 12 characters: DNS-SD allows 15


@pytest.mark.usefixtures("lo_multicast", "no_thread_left")
async def test_two_providers_find_each_other_and_goodbye_withdraws() -> None:
    service = unique_service()
    a_end, b_end = "127.0.0.1:1111", "127.0.0.1:2222"
    with trio.fail_after(20):
        async with (
            trio.open_nursery() as nursery,
            provider_on_lo(nursery, service, NODE_A, 1111) as a_answers,
        ):
            async with provider_on_lo(nursery, service, NODE_B, 2222) as b_answers:
                await wait_for(a_answers, lambda answer: b_end in answer)
                await wait_for(b_answers, lambda answer: a_end in answer)
            # b said goodbye on its way out: a's answer drops it, long before any TTL.
            with trio.fail_after(3):
                gone = await wait_for(a_answers, lambda answer: b_end not in answer)
            assert a_end in gone


@pytest.mark.usefixtures("lo_multicast", "no_thread_left")
async def test_interface_that_appears_later_is_used(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, MDNS_LOG)
    service = unique_service()
    appeared = trio.Event()

    def interfaces() -> list[Interface]:
        return [Interface("lo", 1, ("127.0.0.1",))] if appeared.is_set() else []

    with trio.fail_after(20):
        async with (
            trio.open_nursery() as nursery,
            provider_on_lo(nursery, service, NODE_A, 1111, interfaces) as late,
            provider_on_lo(nursery, service, NODE_B, 2222) as b_answers,
        ):
            assert await late.receive() == frozenset()
            appeared.set()
            await wait_for(b_answers, lambda answer: "127.0.0.1:1111" in answer)
            await wait_for(late, lambda answer: "127.0.0.1:2222" in answer)
    messages = [r.getMessage() for r in caplog.records if r.name == MDNS_LOG]
    assert any("no network interface named lo" in m for m in messages)
    assert any("advertising rancherd-aaaaaaaaaaaa" in m for m in messages)


def test_list_interfaces_finds_lo() -> None:
    [lo] = [i for i in list_interfaces() if i.name == "lo"]
    assert ipaddress.ip_address("127.0.0.1") in {ipaddress.ip_address(a) for a in lo.addresses}


@pytest.mark.usefixtures("lo_multicast", "no_thread_left")
async def test_new_address_is_advertised_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, MDNS_LOG)
    service = unique_service()
    grown = trio.Event()

    def interfaces() -> list[Interface]:
        # 127.0.0.2 is local on lo (127.0.0.0/8) without being configured.
        addresses = ("127.0.0.1", "127.0.0.2") if grown.is_set() else ("127.0.0.1",)
        return [Interface("lo", 1, addresses)]

    with trio.fail_after(20):
        async with (
            trio.open_nursery() as nursery,
            provider_on_lo(nursery, service, NODE_A, 1111, interfaces),
            provider_on_lo(nursery, service, NODE_B, 2222) as b_answers,
        ):
            await wait_for(b_answers, lambda answer: "127.0.0.1:1111" in answer)
            grown.set()
            both = {"127.0.0.1:1111", "127.0.0.2:1111"}
            await wait_for(b_answers, lambda answer: both <= answer)
    messages = [r.getMessage() for r in caplog.records if r.name == MDNS_LOG]
    assert any("addresses changed" in m for m in messages)


def test_requery_period_is_a_sixth_of_the_cache_and_jittered() -> None:
    import random

    from rancherd.discovery.mdns import MIN_REQUERY_PERIOD, requery_delay, requery_period

    assert requery_period(60.0) == 10.0
    assert requery_period(1.0) == MIN_REQUERY_PERIOD
    rng = random.Random(1)
    delays = [requery_delay(60.0, rng) for _ in range(200)]
    assert 7.5 <= min(delays) < 8.0
    assert 9.5 < max(delays) <= 10.0


class RequeryLog:
    """Counts ``_Browser.requery`` calls (made in zeroconf's thread) and wakes trio."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from rancherd.discovery import mdns as mdns_module

        self.times: list[float] = []
        self.changed = trio.Event()
        token = trio.lowlevel.current_trio_token()
        original = mdns_module._Browser.requery

        def requery(browser: mdns_module._Browser) -> None:
            original(browser)
            token.run_sync_soon(self._record)

        monkeypatch.setattr(mdns_module._Browser, "requery", requery)

    def _record(self) -> None:
        self.times.append(trio.current_time())
        self.changed.set()

    async def until(self, count: int) -> None:
        while len(self.times) < count:
            self.changed = trio.Event()
            await self.changed.wait()


@pytest.mark.usefixtures("lo_multicast", "no_thread_left")
async def test_queries_again_a_few_times_per_cache_period(monkeypatch: pytest.MonkeyPatch) -> None:
    log = RequeryLog(monkeypatch)
    provider = MdnsProvider(lo_params(unique_service()), refresh=0.5, server_cache_duration=6.0)
    send, receive = trio.open_memory_channel[frozenset[str]](1000)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run, Advertisement(NODE_A, 1111), send)
            started = trio.current_time()
            await log.until(3)
            nursery.cancel_scope.cancel()
    del receive
    gaps = [b - a for a, b in zip([started, *log.times], log.times, strict=False)]
    # A sixth of 6 s is 1 s; each wait is drawn from 0.75 to 1 of it.
    assert all(0.7 <= gap <= 1.5 for gap in gaps), gaps


@pytest.mark.usefixtures("lo_multicast", "no_thread_left")
async def test_a_link_change_queries_and_announces_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    log = RequeryLog(monkeypatch)
    change = trio.Event()

    async def watch(changed: Callable[[], None]) -> None:
        await change.wait()
        changed()
        await trio.sleep_forever()

    # A period of 100 s: any query within the test comes from the link change.
    provider = MdnsProvider(
        lo_params(unique_service()), refresh=60.0, server_cache_duration=600.0, watch=watch
    )
    send, receive = trio.open_memory_channel[frozenset[str]](1000)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run, Advertisement(NODE_A, 1111), send)
            assert log.times == []
            changed_at = trio.current_time()
            change.set()
            await log.until(1)
            nursery.cancel_scope.cancel()
    del receive
    # At once, but not sooner than a second after the session's own start-up query.
    assert log.times[0] - changed_at < 1.5


@pytest.mark.usefixtures("lo_multicast", "no_thread_left")
async def test_an_agent_browses_without_advertising() -> None:
    service = unique_service()
    server_end = "127.0.0.1:1111"
    agent = MdnsProvider(lo_params(service), refresh=0.5, server_cache_duration=6.0)
    agent_send, agent_answers = trio.open_memory_channel[frozenset[str]](1000)
    with trio.fail_after(20):
        async with (
            trio.open_nursery() as nursery,
            provider_on_lo(nursery, service, NODE_A, 1111) as server_answers,
        ):
            await nursery.start(agent.run, None, agent_send)
            await wait_for(agent_answers, lambda answer: server_end in answer)
            # The server's answers over two of the agent's periodic queries and
            # announcements (1 s each) name only itself: the agent published nothing.
            with trio.move_on_after(2.5):
                async for answer in server_answers:
                    assert answer <= {server_end}, answer
            nursery.cancel_scope.cancel()
