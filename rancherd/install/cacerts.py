"""K10 join tokens and the ``/cacerts`` check a node makes before it joins a server.

Follows k3s's ``pkg/clientaccess/token.go`` (tokens are parsed in ``rancherd.join_token``):

- the CA hash is the sha256 of the ``/cacerts`` body as served (the PEM file on disk) when it
  holds one certificate; for a bundle, of the DER of the root the first certificate chains
  to (``hashCA``), falling back to the raw bytes when no chain is found, as k3s does;
- the joining node downloads ``/cacerts`` without verification, compares its hash with
  the token's, then checks that the server's own certificate verifies against that CA.

The original rancherd's ``pkg/cacerts`` talked to Rancher (``X-Cattle-Hash`` HMAC with a
nonce); we join k3s/rke2 directly, so the k3s scheme is the one that matters. A mismatch
stops the join with a message that names the server and both hashes.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import trio
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from rancherd.addresses import bracketed
from rancherd.install.http import (
    HttpError,
    describe_error,
    http_get,
    unwrap_error,
    url_host_port,
)
from rancherd.join_token import CA_HASH_LENGTH, K10_PREFIX, JoinToken, TokenError, parse_token

__all__ = [
    "CA_HASH_LENGTH",
    "K10_PREFIX",
    "CAHashMismatch",
    "JoinToken",
    "NoCertificateError",
    "ServerCA",
    "ServerCAError",
    "ServerNotVerified",
    "TokenError",
    "cacerts_url",
    "check_server_ca",
    "format_k10",
    "hash_ca",
    "parse_token",
]


def format_k10(ca_bundle: bytes, token: str) -> str:
    """The secure form of ``token`` for a cluster whose CA is ``ca_bundle``.

    ``K10<hash_ca(bundle)>::server:<token>`` for a short token, as in the server's
    ``server/token`` file; a K10 token keeps its credentials and gets this CA's hash.
    """
    return f"{K10_PREFIX}{hash_ca(ca_bundle)}::{parse_token(token).credentials}"


class NoCertificateError(ValueError):
    """A CA file or ``/cacerts`` answer holds no PEM certificate: there is nothing to hash."""


def hash_ca(bundle: bytes) -> str:
    """k3s's ``hashCA``: sha256 of the bundle, or of its root's DER for a chain.

    Raises ``NoCertificateError`` when the bundle holds no certificate, as k3s's
    ``certutil.ParseCertsPEM`` fails there: a hash of arbitrary bytes would make a
    token that no server can match.
    """
    try:
        certs = x509.load_pem_x509_certificates(bundle)
    except ValueError:
        raise NoCertificateError("holds no PEM certificate") from None
    if len(certs) > 1:
        root = _chain_root(certs)
        if root is not None:
            return hashlib.sha256(root.public_bytes(Encoding.DER)).hexdigest()
    return hashlib.sha256(bundle).hexdigest()


def _chain_root(certs: list[x509.Certificate]) -> x509.Certificate | None:
    """The self-signed certificate of ``certs[1:]`` that ``certs[0]`` chains up to."""
    current = certs[0]
    candidates = certs[1:]
    for _ in range(len(candidates) + 1):
        issuer = None
        for candidate in candidates:
            if candidate.subject != current.issuer:
                continue
            try:
                current.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature):
                continue
            issuer = candidate
            break
        if issuer is None:
            return None
        if issuer.subject == issuer.issuer:
            return issuer
        current = issuer
    return None


# --- The check before joining ---------------------------------------------------------


class ServerCAError(Exception):
    """The server to join cannot be trusted, or cannot be reached to find out."""


class CAHashMismatch(ServerCAError):
    """``/cacerts`` is not the CA the token names: another cluster, or an impostor."""

    def __init__(self, server_url: str, expected: str, actual: str) -> None:
        self.server_url = server_url
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"refusing to join {server_url}: its CA ({cacerts_url(server_url)}) has sha256 "
            f"{actual}, but the token expects {expected}. This server belongs to another "
            "cluster, or is not the server it claims to be; check the server address and "
            "the token (rancherd get-token on the cluster's first server prints the right one)"
        )


class ServerNotVerified(ServerCAError):
    """The server's TLS certificate does not verify against the CA it serves."""


def cacerts_url(server_url: str) -> str:
    scheme, host, port = url_host_port(server_url)
    if scheme != "https":
        raise ValueError(f"{server_url!r}: only https:// servers are joined")
    return f"https://{bracketed(host)}:{port}/cacerts"


@dataclass(frozen=True, slots=True)
class ServerCA:
    """What the check found: the CA bundle and its hash."""

    bundle: bytes
    ca_hash: str
    verified: bool
    """Whether a token hash was there to compare with."""


def _insecure_context() -> ssl.SSLContext:
    # The server's certificate cannot be trusted yet: that is what the hash check is for.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _pinned_context(bundle: bytes) -> ssl.SSLContext:
    # Identity is the pinned CA, not a host name: the server may be reached by an address
    # that is not in its certificate.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=bundle.decode("ascii", "replace"))
    return context


async def check_server_ca(
    server_url: str,
    expected_hash: str | None,
    *,
    interval: float = 2.0,
    attempt_timeout: float = 10.0,
    on_retry: Callable[[str], None] | None = None,
) -> ServerCA:
    """Fetch ``/cacerts`` (retrying until it answers) and check it against the token.

    Retries connection errors, TLS errors, bad answers and non-200 statuses every
    ``interval`` seconds (a try lasts at most ``attempt_timeout``), calling
    ``on_retry(reason)`` each time; bound the whole with ``trio.fail_after``. Raises
    ``CAHashMismatch`` at once on a wrong CA and ``ServerNotVerified`` when the server's
    certificate does not verify against its own CA.
    """
    url = cacerts_url(server_url)
    while True:
        result: ServerCA | str = f"{url}: no answer within {attempt_timeout:g}s"
        with trio.move_on_after(attempt_timeout):
            result = await _attempt(server_url, url, expected_hash)
        if isinstance(result, ServerCA):
            return result
        if on_retry is not None:
            on_retry(result)
        await trio.sleep(interval)


async def _attempt(server_url: str, url: str, expected_hash: str | None) -> ServerCA | str:
    """One try: the checked CA, or why to try again. Raises when trying again is futile."""
    try:
        response = await http_get(url, ssl_context=_insecure_context())
    except (OSError, trio.BrokenResourceError, HttpError) as exc:
        return f"{url}: {describe_error(exc)}"
    if response.status != 200:
        return f"{url}: HTTP status {response.status}"
    bundle = response.body
    try:
        actual = hash_ca(bundle)
    except NoCertificateError:
        return f"{url}: the answer is not a PEM certificate bundle"
    if expected_hash is not None and actual != expected_hash.lower():
        raise CAHashMismatch(server_url, expected_hash.lower(), actual)
    try:
        context = _pinned_context(bundle)
    except ssl.SSLError as exc:
        raise ServerNotVerified(
            f"refusing to join {server_url}: the CA it serves at {url} cannot be loaded "
            f"({describe_error(exc)})"
        ) from None
    try:
        await http_get(url, ssl_context=context)
    except (OSError, trio.BrokenResourceError, HttpError) as exc:
        cause = unwrap_error(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise ServerNotVerified(
                f"refusing to join {server_url}: its TLS certificate does not verify against "
                f"the CA it serves at {url} ({cause.verify_message or describe_error(cause)})"
            ) from None
        return f"{url}: {describe_error(exc)}"
    return ServerCA(bundle, actual, verified=expected_hash is not None)
