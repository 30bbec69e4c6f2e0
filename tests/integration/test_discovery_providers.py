"""The provider interface, ``make_provider``, and the static and file providers.

Everything runs on pytest-trio's ``autojump_clock`` (``MockClock(autojump_threshold=0)``):
the file provider polls with ``trio.sleep`` and reads in the trio thread, so virtual time
drives it exactly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath

import pytest
import trio
import trio.testing

from rancherd.addresses import join_host_port as format_endpoint
from rancherd.discovery import (
    Advertisement,
    FileProvider,
    MdnsProvider,
    Provider,
    StaticProvider,
    make_provider,
)
from rancherd.discovery.file import MAX_FILE_BYTES, parse_address_list
from rancherd.discovery.params import DiscoveryParams, FileParams, ParamsError, StaticParams

NODE = "0123456789abcdef0123456789abcdef"
AD = Advertisement(NODE, 8443)
FILE_LOG = "rancherd.discovery.file"


@asynccontextmanager
async def running(
    provider: Provider, advertisement: Advertisement = AD
) -> AsyncIterator[trio.MemoryReceiveChannel[frozenset[str]]]:
    """Run ``provider`` in a nursery; yield its answers; cancel it on exit."""
    send, receive = trio.open_memory_channel[frozenset[str]](100)
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, advertisement, send)
        yield receive
        nursery.cancel_scope.cancel()


async def answer_where(
    answers: trio.MemoryReceiveChannel[frozenset[str]], want: frozenset[str]
) -> float:
    """Wait for the answer ``want``; return when it came (virtual seconds)."""
    with trio.fail_after(60):
        async for answer in answers:
            if answer == want:
                return trio.current_time()
    raise AssertionError("the provider stopped")


# --- Advertisement and endpoints -------------------------------------------------------


def test_advertisement_is_checked() -> None:
    ad = Advertisement(NODE, 1, ("10.0.0.1", "fd00::1"), {"v": "1", "role": "server"})
    assert dict(ad.txt) == {"v": "1", "role": "server"}
    with pytest.raises(TypeError):
        ad.txt["v"] = "2"  # type: ignore[index]
    for bad in ("0123", NODE.upper(), NODE + "0", "g" * 32):
        with pytest.raises(ValueError, match="32 lowercase hex"):
            Advertisement(bad, 1)
    for port in (0, 65536):
        with pytest.raises(ValueError, match="port"):
            Advertisement(NODE, port)
    with pytest.raises(ValueError, match="not an IP address"):
        Advertisement(NODE, 1, ("host.example",))
    with pytest.raises(ValueError, match="TXT key"):
        Advertisement(NODE, 1, txt={"a=b": "c"})
    with pytest.raises(ValueError, match="TXT data"):
        Advertisement(NODE, 1, txt={"k": "x" * 500})


def test_format_endpoint() -> None:
    assert format_endpoint("10.0.0.1", 8443) == "10.0.0.1:8443"
    assert format_endpoint("fd00::1", 8443) == "[fd00::1]:8443"
    assert format_endpoint("node-1.example", 1) == "node-1.example:1"


# --- make_provider ---------------------------------------------------------------------


def test_make_provider_builds_each_kind(tmp_path: Path) -> None:
    mdns = make_provider(
        DiscoveryParams.parse("provider=mdns service=rancher-server timeout=2s"),
        default_port=8443,
    )
    assert isinstance(mdns, MdnsProvider)
    assert mdns.name == "mdns"
    assert mdns.service_type == "_rancher-server._tcp.local."
    assert mdns.resolve_timeout == 2.0
    assert mdns.refresh == 5.0

    static = make_provider(
        DiscoveryParams.parse('provider=static addrs="10.0.0.1 10.0.0.2:9 [fd00::1]"'),
        default_port=8443,
        refresh=2.0,
    )
    assert isinstance(static, StaticProvider)
    assert static.refresh == 2.0
    assert static.answer == {"10.0.0.1:8443", "10.0.0.2:9", "[fd00::1]:8443"}

    path = tmp_path / "peers"
    file = make_provider(
        DiscoveryParams.from_mapping({"provider": "file", "path": str(path)}), default_port=7
    )
    assert isinstance(file, FileProvider)
    assert file.path == path
    assert file.default_port == 7


@pytest.mark.parametrize("refresh", [0.0, -1.0, float("inf"), float("nan")])
def test_refresh_must_be_positive(refresh: float) -> None:
    params = DiscoveryParams.parse("provider=static addrs=a").typed_as(StaticParams)
    with pytest.raises(ValueError, match="refresh"):
        StaticProvider(params, default_port=1, refresh=refresh)


# --- static ----------------------------------------------------------------------------


async def test_static_answers_at_once_and_every_refresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    params = DiscoveryParams.parse('provider=static addrs="a.example b.example:9"').typed_as(
        StaticParams
    )
    provider = StaticProvider(params, default_port=8443, refresh=5.0)
    want = frozenset({"a.example:8443", "b.example:9"})
    start = trio.current_time()
    async with running(provider) as answers:
        times = [await answer_where(answers, want) - start for _ in range(3)]
    assert times == [0.0, 5.0, 10.0]


async def test_static_returns_when_the_consumer_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    params = DiscoveryParams.parse("provider=static addrs=a").typed_as(StaticParams)
    send, receive = trio.open_memory_channel[frozenset[str]](0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(StaticProvider(params, default_port=1).run, AD, send)
            assert await receive.receive() == {"a:1"}
            await receive.aclose()
    # The nursery exits only because run() returned.


# --- file: parsing ---------------------------------------------------------------------


def test_parse_address_list() -> None:
    text = (
        "# servers of the lab\n"
        "10.0.0.1 10.0.0.2:9000   # two on one line\n"
        "\n"
        "\t[fd00::1]:7 fd00::2\n"
        "node-3.example  10.0.0.1\n"
        "10.0.0.1, bad:port:x 999.1.1.1:1 [fe80::1\n"
        "host:0 #10.9.9.9\n"
    )
    answer, problems = parse_address_list(text, 8443)
    assert answer == {
        "10.0.0.1:8443",
        "10.0.0.2:9000",
        "[fd00::1]:7",
        "[fd00::2]:8443",
        "node-3.example:8443",
    }
    assert [p.split(":", 1)[0] for p in problems] == ["line 6"] * 4 + ["line 7"]
    assert "separate addresses with spaces" in problems[0]
    assert "'host:0'" in problems[4]


def test_parse_address_list_of_nothing() -> None:
    assert parse_address_list("", 1) == (frozenset(), [])
    assert parse_address_list("# only a comment\n\n   \n", 1) == (frozenset(), [])


# --- file: the provider ----------------------------------------------------------------


def file_provider(path: Path, *, refresh: float = 5.0) -> FileProvider:
    return FileProvider(FileParams(PurePosixPath(path)), default_port=8443, refresh=refresh)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == FILE_LOG]


async def test_file_missing_then_created_then_edited(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, FILE_LOG)
    path = tmp_path / "peers"
    async with running(file_provider(path, refresh=5.0)) as answers:
        with trio.fail_after(60):
            assert await answers.receive() == frozenset()
            for _ in range(3):  # refreshes while missing: still empty, one log line
                assert await answers.receive() == frozenset()
        missing = [m for m in messages(caplog) if "does not exist" in m]
        assert len(missing) == 1
        assert str(path) in missing[0]

        path.write_text("10.0.0.1\n")
        created = trio.current_time()
        seen = await answer_where(answers, frozenset({"10.0.0.1:8443"}))
        assert seen - created <= 1.0  # the next poll

        path.write_text("10.0.0.1\n10.0.0.2:9\n")
        edited = trio.current_time()
        seen = await answer_where(answers, frozenset({"10.0.0.1:8443", "10.0.0.2:9"}))
        assert seen - edited <= 1.0

        path.unlink()
        await answer_where(answers, frozenset())
    assert sum("does not exist" in m for m in messages(caplog)) == 2  # once per absence


async def test_file_replaced_atomically_is_read_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "peers"
    path.write_text("10.0.0.1\n")
    async with running(file_provider(path)) as answers:
        await answer_where(answers, frozenset({"10.0.0.1:8443"}))
        # Same size, and the same mtime as far as a coarse clock can tell: a new inode.
        replacement = tmp_path / "peers.new"
        replacement.write_text("10.0.0.2\n")
        stat = path.stat()
        os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        replacement.replace(path)
        await answer_where(answers, frozenset({"10.0.0.2:8443"}))


async def test_file_garbage_is_logged_with_its_line_and_skipped(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, FILE_LOG)
    path = tmp_path / "peers"
    path.write_bytes(b"10.0.0.1\nnot/an/address\n\xff\xfe 10.0.0.3\n")
    async with running(file_provider(path)) as answers:
        await answer_where(answers, frozenset({"10.0.0.1:8443", "10.0.0.3:8443"}))
        for _ in range(3):  # unchanged: read once, logged once
            await answers.receive()
    logged = [m for m in messages(caplog) if "skipped" in m]
    assert len(logged) == 2
    assert "line 2" in logged[0]
    assert "'not/an/address'" in logged[0]
    assert "line 3" in logged[1]


async def test_file_that_cannot_be_read_is_retried(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, FILE_LOG)
    path = tmp_path / "peers"
    path.mkdir()  # reading a directory fails even as root, unlike a chmod 000 file
    async with running(file_provider(path, refresh=2.0)) as answers:
        for _ in range(4):
            assert await answers.receive() == frozenset()
        errors = [m for m in messages(caplog) if "cannot read" in m]
        assert len(errors) == 1
        assert "Is a directory" in errors[0]
        path.rmdir()
        path.write_text("10.0.0.9:1\n")
        await answer_where(answers, frozenset({"10.0.0.9:1"}))
    assert any("can be read now" in m for m in messages(caplog))


async def test_file_too_long_is_refused(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "peers"
    path.write_text("10.0.0.1\n" + " " * MAX_FILE_BYTES)
    async with running(file_provider(path)) as answers:
        assert await answers.receive() == frozenset()
    assert any("longer than" in m for m in messages(caplog))


async def test_file_answers_every_refresh_even_unchanged(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "peers"
    path.write_text("10.0.0.1\n")
    want = frozenset({"10.0.0.1:8443"})
    start = trio.current_time()
    async with running(file_provider(path, refresh=3.0)) as answers:
        times = [await answer_where(answers, want) - start for _ in range(3)]
    assert times == [0.0, 3.0, 6.0]


def test_a_lone_surrogate_is_refused_as_the_string_form_could_not_carry_it() -> None:
    with pytest.raises(ParamsError, match="lone surrogate"):
        DiscoveryParams.from_mapping({"provider": "file", "path": "/etc/a\ud800"})
