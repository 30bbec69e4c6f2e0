"""A small HTTP(S) GET on trio streams, for probes and ``/cacerts``.

Why not urllib in a thread: a thread blocked in ``urlopen`` cannot be cancelled, so a probe
that the caller gives up on would outlive it. Here every byte goes through trio, so
``fail_after`` and nursery cancellation end a request at once.

The request is HTTP/1.0 with ``Connection: close``: the server answers without chunked
encoding and closes, so the body is everything up to EOF (or ``Content-Length``). That is
all a readiness probe and a CA download need; it is not a general client (no redirects,
no keep-alive).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

from rancherd.addresses import bracketed

__all__ = [
    "MAX_RESPONSE",
    "HttpError",
    "HttpResponse",
    "describe_error",
    "http_get",
    "unwrap_error",
    "url_host_port",
]

MAX_RESPONSE = 1 << 20
"""Responses larger than this (headers and body) are refused: a CA bundle is kilobytes."""

_HEADER_END = b"\r\n\r\n"


class HttpError(Exception):
    """The server answered something that is not a usable HTTP response."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes


def url_host_port(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an http(s) URL; ``ValueError`` for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port


async def http_get(
    url: str, *, ssl_context: ssl.SSLContext | None = None, max_size: int = MAX_RESPONSE
) -> HttpResponse:
    """GET ``url``; raise ``OSError`` (connect, TLS), ``trio.BrokenResourceError`` or
    ``HttpError``. No timeout of its own: wrap it in ``trio.fail_after``."""
    scheme, host, port = url_host_port(url)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = bracketed(host)
    if parts.port is not None:
        host_header += f":{parts.port}"
    request = (
        f"GET {target} HTTP/1.0\r\nHost: {host_header}\r\nUser-Agent: rancherd\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii")

    stream: trio.abc.Stream
    if scheme == "https":
        context = ssl_context or ssl.create_default_context()
        stream = await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=context, https_compatible=True
        )
    else:
        stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(request)
        data = bytearray()
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > max_size:
                raise HttpError(f"{url}: response larger than {max_size} bytes")
    return _parse(url, bytes(data))


def _parse(url: str, data: bytes) -> HttpResponse:
    head, sep, body = data.partition(_HEADER_END)
    if not sep:
        raise HttpError(f"{url}: no complete HTTP response")
    lines = head.split(b"\r\n")
    status_line = lines[0].split(None, 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/"):
        raise HttpError(f"{url}: not an HTTP response")
    try:
        status = int(status_line[1])
    except ValueError:
        raise HttpError(f"{url}: bad HTTP status line") from None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise HttpError(f"{url}: bad Content-Length") from None
            if length < 0 or len(body) < length:
                raise HttpError(f"{url}: response body cut short")
            body = body[:length]
        elif name == b"transfer-encoding" and value.strip().lower() != b"identity":
            raise HttpError(f"{url}: unexpected Transfer-Encoding in an HTTP/1.0 answer")
    return HttpResponse(status, body)


def unwrap_error(exc: BaseException) -> BaseException:
    """trio reports TLS failures as ``BrokenResourceError`` caused by the ``SSLError``."""
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def describe_error(exc: BaseException) -> str:
    """A short reason for people: the TLS reason, the OS's ``strerror``, or the message."""
    exc = unwrap_error(exc)
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
