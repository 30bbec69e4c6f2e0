"""K10 tokens, CA hashes and the /cacerts check against a fake server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import hashlib
import socket
from functools import partial
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fake_runtime import FakeServer, Tls, make_tls

from rancherd.install.cacerts import (
    CAHashMismatch,
    JoinToken,
    NoCertificateError,
    ServerNotVerified,
    TokenError,
    cacerts_url,
    check_server_ca,
    format_k10,
    hash_ca,
    parse_token,
)
from rancherd.install.http import HttpError, http_get

HASH = "a" * 64


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other_tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("other-tls"), name="another-cluster-ca")


# --- parse_token ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("somethingrandom", JoinToken(None, "server:somethingrandom")),
        ("with:colon", JoinToken(None, "server:with:colon")),
        (f"K10{HASH}::server:secret", JoinToken(HASH, "server:secret")),
        (f"K10{HASH.upper()}::node:secret", JoinToken(HASH, "node:secret")),
        ("K10::server:secret", JoinToken(None, "server:secret")),
        ("K10server:secret", JoinToken(None, "server:secret")),
        (f"K10{HASH}::abcdef.0123456789abcdef", JoinToken(HASH, "abcdef.0123456789abcdef")),
        ("abcdef.0123456789abcdef", JoinToken(None, "abcdef.0123456789abcdef")),
        (f"K10{HASH}::server:pass::word", JoinToken(HASH, "server:pass::word")),
    ],
)
def test_parse_token(token: str, expected: JoinToken) -> None:
    assert parse_token(token) == expected


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "empty"),
        ("K10abc::server:pw-secret", "3 characters, not 64"),
        (f"K10{'g' * 64}::server:pw-secret", "not hexadecimal"),
        (f"K10{HASH}::pw-secret", "no username:password"),
        (f"K10{HASH}::server:", "no username:password"),
        ("K10nocolon-secret", "no username:password"),
    ],
)
def test_bad_tokens_are_refused_without_showing_them(token: str, message: str) -> None:
    with pytest.raises(TokenError, match=message) as caught:
        parse_token(token)
    assert "secret" not in str(caught.value)


def test_join_token_repr_hides_credentials() -> None:
    assert "hunter2" not in repr(parse_token("hunter2"))


# --- hash_ca and format_k10 -----------------------------------------------------------


def test_hash_of_one_certificate_is_of_the_file_bytes(tls: Tls) -> None:
    assert hash_ca(tls.ca_pem) == hashlib.sha256(tls.ca_pem).hexdigest()


def test_hash_of_a_bundle_is_of_its_root_der(tls: Tls) -> None:
    bundle = tls.cert_pem + tls.ca_pem
    root = x509.load_pem_x509_certificate(tls.ca_pem).public_bytes(Encoding.DER)
    assert hash_ca(bundle) == hashlib.sha256(root).hexdigest()


def test_hash_of_a_bundle_without_chain_is_of_the_bytes(tls: Tls, other_tls: Tls) -> None:
    bundle = tls.cert_pem + other_tls.ca_pem  # the leaf is not signed by this CA
    assert hash_ca(bundle) == hashlib.sha256(bundle).hexdigest()


@pytest.mark.parametrize(
    "bundle",
    [
        b"",
        b"not a certificate\n",
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    ],
)
def test_no_certificate_is_an_error_never_a_hash(bundle: bytes) -> None:
    # k3s's hashCA fails where certutil.ParseCertsPEM finds no certificate.
    with pytest.raises(NoCertificateError):
        hash_ca(bundle)
    with pytest.raises(NoCertificateError):
        format_k10(bundle, "mytoken")


def test_format_k10(tls: Tls) -> None:
    digest = hash_ca(tls.ca_pem)
    assert format_k10(tls.ca_pem, "mytoken") == f"K10{digest}::server:mytoken"
    assert format_k10(tls.ca_pem, f"K10{HASH}::node:pw") == f"K10{digest}::node:pw"
    assert parse_token(format_k10(tls.ca_pem, "mytoken")).ca_hash == digest


def test_cacerts_url() -> None:
    assert cacerts_url("https://10.0.0.5:6443") == "https://10.0.0.5:6443/cacerts"
    assert cacerts_url("https://[fd00::5]:9345/x") == "https://[fd00::5]:9345/cacerts"
    with pytest.raises(ValueError, match="only https"):
        cacerts_url("http://10.0.0.5:6443")


# --- check_server_ca ------------------------------------------------------------------


async def serve(nursery: trio.Nursery, tls: Tls, cacerts: bytes) -> FakeServer:
    server = FakeServer(tls, {"/cacerts": (200, cacerts)})
    await server.start(nursery)
    return server


async def test_matching_hash_is_accepted(nursery: trio.Nursery, tls: Tls) -> None:
    server = await serve(nursery, tls, tls.ca_pem)
    with trio.fail_after(10):
        found = await check_server_ca(server.https_url, hash_ca(tls.ca_pem).upper())
    assert found.bundle == tls.ca_pem
    assert found.verified
    assert server.requests == ["/cacerts", "/cacerts"]  # fetched, then verified with it


async def test_wrong_hash_is_refused_naming_server_and_hashes(
    nursery: trio.Nursery, tls: Tls
) -> None:
    server = await serve(nursery, tls, tls.ca_pem)
    with trio.fail_after(10), pytest.raises(CAHashMismatch) as caught:
        await check_server_ca(server.https_url, HASH)
    message = str(caught.value)
    assert server.https_url in message
    assert HASH in message
    assert hash_ca(tls.ca_pem) in message
    assert server.requests == ["/cacerts"]  # nothing more is asked of an impostor


async def test_short_token_checks_only_the_server_against_its_ca(
    nursery: trio.Nursery, tls: Tls
) -> None:
    server = await serve(nursery, tls, tls.ca_pem)
    with trio.fail_after(10):
        found = await check_server_ca(server.https_url, None)
    assert not found.verified
    assert found.ca_hash == hash_ca(tls.ca_pem)


async def test_server_not_signed_by_its_ca_is_refused(
    nursery: trio.Nursery, tls: Tls, other_tls: Tls
) -> None:
    # An impostor that copied the cluster's public CA but has not got its key.
    server = await serve(nursery, other_tls, tls.ca_pem)
    with trio.fail_after(10), pytest.raises(ServerNotVerified, match="does not verify"):
        await check_server_ca(server.https_url, hash_ca(tls.ca_pem))


async def test_retries_until_the_server_answers(nursery: trio.Nursery, tls: Tls) -> None:
    with socket.socket() as probe:  # a free port, closed: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reasons: list[str] = []
    started = trio.Event()

    def on_retry(reason: str) -> None:
        reasons.append(reason)
        started.set()

    server = FakeServer(tls, {"/cacerts": (200, tls.ca_pem)})

    async def start_later() -> None:
        await started.wait()
        await nursery.start(
            partial(
                trio.serve_ssl_over_tcp,
                server.handle,
                port,
                tls.server_context(),
                host="127.0.0.1",
                https_compatible=True,
            )
        )

    nursery.start_soon(start_later)
    with trio.fail_after(10):
        found = await check_server_ca(
            f"https://127.0.0.1:{port}", hash_ca(tls.ca_pem), interval=0.05, on_retry=on_retry
        )
    assert found.verified
    assert reasons
    assert f"127.0.0.1:{port}/cacerts" in reasons[0]


async def test_non_200_and_non_pem_answers_are_retried(nursery: trio.Nursery, tls: Tls) -> None:
    server = FakeServer(tls, {"/cacerts": (503, b"starting")})
    await server.start(nursery)
    reasons: list[str] = []

    def on_retry(reason: str) -> None:
        reasons.append(reason)
        if len(reasons) == 1:
            server.routes["/cacerts"] = (200, b"<html>not a certificate</html>")
        elif len(reasons) == 2:
            server.routes["/cacerts"] = (200, tls.ca_pem)

    with trio.fail_after(10):
        await check_server_ca(server.https_url, None, interval=0.01, on_retry=on_retry)
    assert "HTTP status 503" in reasons[0]
    assert "not a PEM certificate bundle" in reasons[1]


async def test_check_is_bounded_by_the_caller(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with trio.move_on_after(0.3) as scope:
        await check_server_ca(f"https://127.0.0.1:{port}", None, interval=0.05)
    assert scope.cancelled_caught


# --- The HTTP client's answers to bad servers -----------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n", "no complete HTTP response"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP response"),
        (b"HTTP/1.1 abc OK\r\n\r\n", "bad HTTP status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "cut short"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello", "Transfer-Encoding"),
    ],
)
async def test_bad_http_answers(nursery: trio.Nursery, raw: bytes, message: str) -> None:
    async def answer(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)  # unread data would make close() a reset
        await stream.send_all(raw)
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, answer, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(10), pytest.raises(HttpError, match=message):
        await http_get(f"http://127.0.0.1:{port}/x")


async def test_oversized_answers_are_refused(nursery: trio.Nursery) -> None:
    async def flood(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 70_000)
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, flood, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(10), pytest.raises(HttpError, match="larger than 65536"):
        await http_get(f"http://127.0.0.1:{port}/", max_size=65536)


async def test_content_length_trims_and_host_header(nursery: trio.Nursery) -> None:
    seen: list[bytes] = []

    async def answer(stream: trio.SocketStream) -> None:
        seen.append(await stream.receive_some(4096))
        await stream.send_all(b"HTTP/1.0 204 No\r\ncontent-length: 2\r\n\r\nokEXTRA")
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, answer, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(10):
        response = await http_get(f"http://127.0.0.1:{port}/readyz?verbose")
    assert (response.status, response.body) == (204, b"ok")
    assert seen[0].startswith(b"GET /readyz?verbose HTTP/1.0\r\n")
    assert f"Host: 127.0.0.1:{port}\r\n".encode() in seen[0]
