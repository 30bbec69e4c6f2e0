"""The WebSocket transport over real sockets on loopback (port 0, 127.0.0.1 unless noted).

Every test runs under ``trio.fail_after``: a hang fails instead of stalling CI. Waits for
"the server noticed" poll with ``eventually`` (bounded), never sleep a fixed time.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import trio
import trio_websocket
import wsproto
import wsproto.events

from rancherd.addresses import join_host_port as format_endpoint
from rancherd.gossip.messages import Address
from rancherd.gossip.transport import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    ConnectionClosed,
    FrameConnection,
    TransportError,
    TransportLimits,
)
from rancherd.gossip.ws_transport import (
    DEFAULT_PATH,
    WebSocketTransport,
    parse_address,
)

HOST = "127.0.0.1"
LOGGER = "rancherd.gossip.ws_transport"


async def eventually(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` every 5 ms for up to 5 s: for what a server task does after the
    client already saw its effect (counters are released after the socket is closed)."""
    for _ in range(1000):
        if predicate():
            return
        await trio.sleep(0.005)
    raise AssertionError("condition not reached within 5 s")


class Server:
    """Handlers that record what they saw. ``echo`` answers each frame with itself."""

    def __init__(self) -> None:
        self.calls = 0
        self.closed: list[ConnectionClosed] = []
        self.cancelled = 0
        self.remotes: list[str] = []

    async def echo(self, conn: FrameConnection) -> None:
        self.calls += 1
        self.remotes.append(conn.remote)
        try:
            while True:
                await conn.send(await conn.receive())
        except ConnectionClosed as exc:
            self.closed.append(exc)
        except trio.Cancelled:
            self.cancelled += 1
            raise


@asynccontextmanager
async def serving(
    transport: WebSocketTransport, handler: Callable[[FrameConnection], object]
) -> AsyncIterator[Address]:
    """Serve in the background; cancel serve on the way out."""
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(transport.serve, handler)
        yield address
        nursery.cancel_scope.cancel()


async def wait_closed_by_peer(stream: trio.SocketStream) -> None:
    """Read until EOF or a reset (bounded by the caller's fail_after)."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass


async def round_trip(conn: FrameConnection, frame: bytes) -> bytes:
    await conn.send(frame)
    return await conn.receive()


# --- addresses


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.0.5:9444", ("10.0.0.5", 9444)),
        ("node-1.local:1", ("node-1.local", 1)),
        ("[::1]:65535", ("::1", 65535)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected
    assert format_endpoint(*expected) == address


@pytest.mark.parametrize(
    "address",
    ["", "host", "host:", ":80", "::1:80", "[::1]", "[::1]80", "[]:80", "h:0", "h:65536", "h:８０"],
)
async def test_bad_addresses_are_transport_errors(address: str) -> None:
    with pytest.raises(TransportError):
        parse_address(address)
    with trio.fail_after(5):
        async with WebSocketTransport(HOST, 0) as transport:
            with pytest.raises(TransportError):
                await transport.connect(address)


async def test_connect_needs_the_transport_entered() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await WebSocketTransport(HOST, 0).connect(f"{HOST}:1")


# --- frames


async def test_frames_round_trip_both_ways() -> None:
    seen: list[bytes] = []

    async def handler(conn: FrameConnection) -> None:
        frame = await conn.receive()
        seen.append(frame)
        await conn.send(frame[::-1])
        await conn.send(b"server first")
        seen.append(await conn.receive())

    with trio.fail_after(10):
        server = WebSocketTransport(HOST, 0)
        async with WebSocketTransport(HOST, 0) as client, serving(server, handler) as address:
            conn = await client.connect(address)
            assert conn.remote == address
            assert await round_trip(conn, b"\x00hello\xff") == b"\xffolleh\x00"
            assert await conn.receive() == b"server first"
            await conn.send(b"")
            with pytest.raises(ConnectionClosed) as closed:
                await conn.receive()
            assert closed.value.code == CLOSE_NORMAL  # the handler returned
            await conn.aclose()
            assert seen == [b"\x00hello\xff", b""]
            await eventually(lambda: server.statistics()["open"] == 0)
        assert client.statistics()["open"] == 0


@pytest.mark.parametrize("too_big", [TransportLimits().max_frame + 1, 2**20])
async def test_max_frame_passes_and_a_bigger_one_closes_with_1009(too_big: int) -> None:
    max_frame = TransportLimits().max_frame
    recorder = Server()
    with trio.fail_after(10):
        server = WebSocketTransport(HOST, 0)
        async with WebSocketTransport(HOST, 0) as client, serving(server, recorder.echo) as address:
            conn = await client.connect(address)
            frame = random.Random(1).randbytes(max_frame)
            assert await round_trip(conn, frame) == frame

            with pytest.raises(ConnectionClosed):
                await round_trip(conn, b"x" * too_big)
            await eventually(lambda: len(recorder.closed) == 1)
            assert recorder.closed[0].code == CLOSE_TOO_BIG
            await conn.aclose()

            second = await client.connect(address)
            assert await round_trip(second, b"still serving") == b"still serving"
            await second.aclose()


async def test_text_message_closes_with_1008() -> None:
    recorder = Server()
    with trio.fail_after(10):
        async with serving(WebSocketTransport(HOST, 0), recorder.echo) as address:
            host, port = parse_address(address)
            # A plain trio-websocket client, on a stream we close ourselves: after a close
            # the server started, trio-websocket leaves a client's socket open.
            async with await trio.open_tcp_stream(host, port) as stream, trio.open_nursery() as n:
                ws = await trio_websocket.wrap_client_stream(n, stream, address, DEFAULT_PATH)
                await ws.send_message("text is not a frame")
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == CLOSE_POLICY
            await eventually(lambda: len(recorder.closed) == 1)
            assert recorder.closed[0].code == CLOSE_POLICY


async def test_close_is_idempotent_and_later_calls_raise() -> None:
    recorder = Server()
    with trio.fail_after(10):
        server = WebSocketTransport(HOST, 0)
        async with WebSocketTransport(HOST, 0) as client, serving(server, recorder.echo) as address:
            conn = await client.connect(address)
            await conn.aclose(4000, "bye")
            await conn.aclose()
            with pytest.raises(ConnectionClosed) as closed:
                await conn.send(b"late")
            assert (closed.value.code, closed.value.reason) == (4000, "bye")
            with pytest.raises(ConnectionClosed):
                await conn.receive()
            await eventually(lambda: len(recorder.closed) == 1)
            assert (recorder.closed[0].code, recorder.closed[0].reason) == (4000, "bye")
            await eventually(lambda: server.statistics()["open"] == 0)
            assert client.statistics()["open"] == 0


async def test_peer_closing_releases_an_outbound_connection_without_aclose() -> None:
    async def hang_up(conn: FrameConnection) -> None:
        pass

    with trio.fail_after(10):
        async with (
            WebSocketTransport(HOST, 0) as client,
            serving(WebSocketTransport(HOST, 0), hang_up) as address,
        ):
            conn = await client.connect(address)
            with pytest.raises(ConnectionClosed) as closed:
                await conn.receive()
            assert closed.value.code == CLOSE_NORMAL
            await eventually(lambda: client.statistics()["open"] == 0)


async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("Python built without IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    recorder = Server()
    with trio.fail_after(10):
        server = WebSocketTransport("::1", 0)
        client = WebSocketTransport("::1", 0)
        async with client, serving(server, recorder.echo) as address:
            assert address.startswith("[::1]:")
            conn = await client.connect(address)
            assert conn.remote == address
            assert await round_trip(conn, b"six") == b"six"
            await conn.aclose()
            assert recorder.remotes[0].startswith("[::1]:")


# --- dialling failures


async def test_connect_to_a_closed_port_fails_quickly() -> None:
    with socket.socket() as placeholder:
        placeholder.bind((HOST, 0))
        port = placeholder.getsockname()[1]
    with trio.fail_after(2):  # handshake_timeout is 5 s: this is a refusal, not a timeout
        async with WebSocketTransport(HOST, 0) as client:
            with pytest.raises(TransportError, match="connect to"):
                await client.connect(f"{HOST}:{port}")
            assert client.statistics()["open"] == 0


async def test_wrong_path_is_rejected() -> None:
    recorder = Server()
    with trio.fail_after(10):
        server = WebSocketTransport(HOST, 0)
        async with (
            WebSocketTransport(HOST, 0, path="/elsewhere") as client,
            serving(server, recorder.echo) as address,
        ):
            with pytest.raises(TransportError, match="HTTP 404"):
                await client.connect(address)
            assert recorder.calls == 0
            assert server.statistics()["dropped"] == 1
            await eventually(lambda: server.statistics()["open"] == 0)


# --- misbehaving clients


async def test_random_bytes_are_dropped_and_serve_goes_on() -> None:
    recorder = Server()
    # A long handshake_timeout: the parser, not the timer, must drop the garbage.
    server = WebSocketTransport(HOST, 0, TransportLimits(handshake_timeout=60))
    with trio.fail_after(10):
        async with WebSocketTransport(HOST, 0) as client, serving(server, recorder.echo) as address:
            host, port = parse_address(address)
            async with await trio.open_tcp_stream(host, port) as raw:
                await raw.send_all(random.Random(2).randbytes(4096) + b"\r\n\r\n")
                await wait_closed_by_peer(raw)
            await eventually(lambda: server.statistics()["dropped"] == 1)
            assert recorder.calls == 0

            conn = await client.connect(address)
            assert await round_trip(conn, b"after garbage") == b"after garbage"
            await conn.aclose()


async def test_silent_client_is_dropped_after_the_handshake_timeout() -> None:
    limit = 0.3
    recorder = Server()
    server = WebSocketTransport(HOST, 0, TransportLimits(handshake_timeout=limit))
    with trio.fail_after(10):
        async with serving(server, recorder.echo) as address:
            host, port = parse_address(address)
            # The server's clock starts at accept, which comes after we start to connect.
            opened = trio.current_time()
            async with await trio.open_tcp_stream(host, port) as raw:
                await wait_closed_by_peer(raw)
                waited = trio.current_time() - opened
            assert waited >= limit
            assert recorder.calls == 0
            assert server.statistics()["dropped"] == 1
            await eventually(lambda: server.statistics()["open"] == 0)


async def test_flood_from_one_address_is_refused_before_any_handler() -> None:
    recorder = Server()
    server = WebSocketTransport(HOST, 0, TransportLimits(max_connections_per_address=2))
    with trio.fail_after(10):
        async with WebSocketTransport(HOST, 0) as client, serving(server, recorder.echo) as address:
            good = [await client.connect(address) for _ in range(2)]
            await eventually(lambda: recorder.calls == 2)

            host, port = parse_address(address)
            for _ in range(5):
                async with await trio.open_tcp_stream(host, port) as raw:
                    await wait_closed_by_peer(raw)
            with trio.fail_after(2):  # refused at once, not after handshake_timeout (5 s)
                with pytest.raises(TransportError, match="closed by the peer"):
                    await client.connect(address)
            assert recorder.calls == 2
            assert server.statistics()["refused"] == 6

            for conn in good:
                assert await round_trip(conn, b"unaffected") == b"unaffected"
            await good[0].aclose()
            await eventually(lambda: server.statistics()["open"] == 1)
            again = await client.connect(address)
            assert await round_trip(again, b"room again") == b"room again"
            assert recorder.calls == 3
            await again.aclose()
            await good[1].aclose()


async def test_total_limit_counts_inbound_and_outbound() -> None:
    recorder = Server()
    limited = WebSocketTransport(HOST, 0, TransportLimits(max_connections=2))
    other = WebSocketTransport(HOST, 0)

    async def trusted(conn: FrameConnection) -> None:
        conn.authenticated()  # as the links layer does after the sealed handshake
        await recorder.echo(conn)

    with trio.fail_after(10):
        async with (
            limited,
            other,
            serving(limited, trusted) as limited_address,
            serving(other, recorder.echo) as other_address,
        ):
            inbound = await other.connect(limited_address)
            outbound = await limited.connect(other_address)
            assert limited.statistics()["open"] == 2

            with pytest.raises(TransportError, match="max_connections"):
                await limited.connect(other_address)
            with pytest.raises(TransportError):
                await other.connect(limited_address)
            assert limited.statistics()["refused"] == 1

            assert await round_trip(inbound, b"in") == b"in"
            assert await round_trip(outbound, b"out") == b"out"
            await outbound.aclose()
            await eventually(lambda: limited.statistics()["open"] == 1)
            again = await other.connect(limited_address)
            assert await round_trip(again, b"again") == b"again"
            for conn in (inbound, again):
                await conn.aclose()


async def test_unauthenticated_connections_make_room_for_peers_and_dials() -> None:
    """Issue 15.4: silent connections are evicted, oldest first, for a new connection
    beyond ``max_unauthenticated`` and for any connection when every slot is taken; an
    authenticated peer and our own dials are never evicted."""
    recorder = Server()
    limits = TransportLimits(
        max_connections=4, max_unauthenticated=2, max_unauthenticated_per_address=8
    )
    limited = WebSocketTransport(HOST, 0, limits)
    other = WebSocketTransport("127.0.0.2", 0, TransportLimits(max_unauthenticated_per_address=8))

    async def trusted(conn: FrameConnection) -> None:
        conn.authenticated()
        await recorder.echo(conn)

    with trio.fail_after(10):
        async with (
            limited,
            other,
            serving(limited, trusted) as limited_address,
            serving(other, recorder.echo) as other_address,
        ):
            host, port = parse_address(limited_address)
            silent = [await trio.open_tcp_stream(host, port) for _ in range(2)]
            await eventually(lambda: limited.statistics()["unauthenticated"] == 2)
            silent.append(await trio.open_tcp_stream(host, port))  # evicts silent[0]
            with trio.fail_after(2):  # at once, not after handshake_timeout (5 s)
                await wait_closed_by_peer(silent[0])
            peer = await other.connect(limited_address)  # evicts silent[1]
            with trio.fail_after(2):
                await wait_closed_by_peer(silent[1])
            assert await round_trip(peer, b"peer") == b"peer"
            silent.append(await trio.open_tcp_stream(host, port))
            await eventually(lambda: limited.statistics()["open"] == 3)
            dials = [await limited.connect(other_address)]  # the fourth slot
            dials.append(await limited.connect(other_address))  # evicts silent[2]
            dials.append(await limited.connect(other_address))  # evicts silent[3]
            with pytest.raises(TransportError, match="max_connections"):
                await limited.connect(other_address)  # nothing left to evict
            with trio.fail_after(2):
                for stream in silent[2:]:
                    await wait_closed_by_peer(stream)
            statistics = limited.statistics()
            assert statistics["evicted"] == 4
            assert statistics["open"] == 4
            assert statistics["unauthenticated"] == 0
            assert await round_trip(peer, b"still") == b"still"
            for conn in [peer, *dials]:
                assert await round_trip(conn, b"x") == b"x"
                await conn.aclose()
            for stream in silent:
                await stream.aclose()


async def test_one_address_may_have_few_connections_waiting_to_authenticate() -> None:
    """A flood from one address is refused right after accept beyond
    ``max_unauthenticated_per_address``; an authenticated connection no longer counts."""
    recorder = Server()
    server = WebSocketTransport(HOST, 0, TransportLimits(max_unauthenticated_per_address=2))

    async def trusts_the_first(conn: FrameConnection) -> None:
        if recorder.calls == 0:
            conn.authenticated()
        await recorder.echo(conn)

    with trio.fail_after(10):
        async with server, serving(server, trusts_the_first) as address:
            host, port = parse_address(address)
            async with WebSocketTransport(HOST, 0) as client:
                trusted = await client.connect(address)
                await eventually(lambda: recorder.calls == 1)
                silent = [await trio.open_tcp_stream(host, port) for _ in range(2)]
                await eventually(lambda: server.statistics()["unauthenticated"] == 2)
                async with await trio.open_tcp_stream(host, port) as third:
                    with trio.fail_after(2):  # refused at once
                        await wait_closed_by_peer(third)
                assert server.statistics()["refused"] == 1
                assert await round_trip(trusted, b"fine") == b"fine"
                await trusted.aclose()
            for stream in silent:
                await stream.aclose()


async def test_a_ping_closes_the_connection_without_a_pong() -> None:
    """Issue 15.4: a ping flood whose pongs were never read grew RSS by ~90 MB for good.
    rancherd never pings, so the first ping ends the connection."""
    recorder = Server()
    server = WebSocketTransport(HOST, 0)
    with trio.fail_after(10):
        async with server, serving(server, recorder.echo) as address:
            host, port = parse_address(address)
            ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            async with await trio.open_tcp_stream(host, port) as stream:
                request = wsproto.events.Request(host=host, target="/rancherd/v1/gossip")
                await stream.send_all(ws.send(request))
                ws.receive_data(await stream.receive_some(65536))
                assert any(isinstance(e, wsproto.events.AcceptConnection) for e in ws.events())
                ping = ws.send(wsproto.events.Ping(payload=b"x" * 100))
                events: list[object] = []
                with trio.fail_after(2), suppress(trio.BrokenResourceError):
                    await stream.send_all(ping * 1000)  # the node may hang up meanwhile
                    while data := await stream.receive_some(65536):  # until closed (or reset)
                        ws.receive_data(data)
                        events.extend(ws.events())
            assert not any(isinstance(e, wsproto.events.Pong) for e in events)
            await eventually(lambda: server.statistics()["open"] == 0)
            assert recorder.calls == 1


async def test_refusals_are_logged_once_then_summarised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    server = WebSocketTransport(HOST, 0, TransportLimits(max_connections_per_address=0))
    with trio.fail_after(5):  # well inside DROP_LOG_INTERVAL
        async with serving(server, Server().echo) as address:
            host, port = parse_address(address)
            for _ in range(10):
                async with await trio.open_tcp_stream(host, port) as raw:
                    await wait_closed_by_peer(raw)
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 1
            assert f"dropped connection from {HOST}:" in warnings[0].getMessage()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2
    assert "dropped 9 connections (9 over max_connections_per_address" in warnings[1].getMessage()


# --- handlers and shutdown


async def test_a_failing_handler_is_logged_and_serving_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Server()

    async def handler(conn: FrameConnection) -> None:
        if recorder.calls == 0:
            recorder.calls += 1
            raise ValueError("handler bug")
        await recorder.echo(conn)

    with trio.fail_after(10):
        async with (
            WebSocketTransport(HOST, 0) as client,
            serving(WebSocketTransport(HOST, 0), handler) as address,
        ):
            first = await client.connect(address)
            with pytest.raises(ConnectionClosed):
                await first.receive()
            second = await client.connect(address)
            assert await round_trip(second, b"ok") == b"ok"
            await second.aclose()
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "handler failed" in error.getMessage()
    assert error.exc_info is not None
    assert isinstance(error.exc_info[1], ValueError)


async def test_a_failing_upgrade_ends_that_connection_only(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_wrap = trio_websocket.wrap_server_stream
    calls = 0

    async def wrap_once_broken(*args: Any, **kwargs: Any) -> trio_websocket.WebSocketRequest:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug on the upgrade path")
        return await real_wrap(*args, **kwargs)

    monkeypatch.setattr(trio_websocket, "wrap_server_stream", wrap_once_broken)
    recorder = Server()
    server = WebSocketTransport(HOST, 0)
    with trio.fail_after(10):
        async with WebSocketTransport(HOST, 0) as client, serving(server, recorder.echo) as address:
            with pytest.raises(TransportError):
                await client.connect(address)
            conn = await client.connect(address)
            assert await round_trip(conn, b"ok") == b"ok"
            await conn.aclose()
            await eventually(lambda: server.statistics()["open"] == 0)
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "connection from 127.0.0.1:" in error.getMessage()


def no_close_timed_out(caplog: pytest.LogCaptureFixture) -> bool:
    """Every close got the peer's reply (shutdown did not wait out CLOSE_TIMEOUT)."""
    return not [r for r in caplog.records if "no close reply" in r.getMessage()]


async def test_cancelling_serve_closes_every_connection_with_going_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    recorder = Server()
    # Several connections from one address that never authenticate: allow them.
    server = WebSocketTransport(HOST, 0, TransportLimits(max_unauthenticated_per_address=8))
    serve_scope = trio.CancelScope()
    serve_ended = trio.Event()

    async def run_serve(*, task_status: trio.TaskStatus[list[Address]]) -> None:
        try:
            with serve_scope:
                await server.serve(recorder.echo, task_status=task_status)
        finally:
            serve_ended.set()

    with trio.fail_after(10):
        async with WebSocketTransport(HOST, 0) as client, trio.open_nursery() as nursery:
            (address,) = await nursery.start(run_serve)
            conns = [await client.connect(address) for _ in range(3)]
            await eventually(lambda: recorder.calls == 3)

            serve_scope.cancel()
            for conn in conns:
                with pytest.raises(ConnectionClosed) as closed:
                    await conn.receive()
                assert closed.value.code == CLOSE_GOING_AWAY
            await serve_ended.wait()
            assert no_close_timed_out(caplog)
            assert recorder.cancelled == 3
            assert server.statistics()["open"] == 0
            assert not nursery.child_tasks
            await eventually(lambda: client.statistics()["open"] == 0)
            with pytest.raises(TransportError):
                await client.connect(address)


async def test_leaving_the_transport_closes_outbound_connections_with_going_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    recorder = Server()
    with trio.fail_after(10):
        async with serving(WebSocketTransport(HOST, 0), recorder.echo) as address:
            async with WebSocketTransport(HOST, 0) as client:
                await client.connect(address)
                await client.connect(address)
                await eventually(lambda: recorder.calls == 2)
            assert client.statistics()["open"] == 0
            assert no_close_timed_out(caplog)
            await eventually(lambda: len(recorder.closed) == 2)
            assert {c.code for c in recorder.closed} == {CLOSE_GOING_AWAY}


async def test_an_error_in_the_body_leaves_the_transport_unwrapped() -> None:
    with trio.fail_after(5), pytest.raises(KeyError):
        async with WebSocketTransport(HOST, 0):
            raise KeyError("not an ExceptionGroup")
