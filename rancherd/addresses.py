"""Host, ``host:port`` and node-id text, read and written one way everywhere.

memberlist's ``util.go`` is the model: ``join_host_port`` writes ``host:port`` with an IPv6
literal in brackets (Go's ``net.JoinHostPort``), ``ensure_port`` adds a default port to an
address written without one (memberlist's ``ensurePort``), ``split_host_port`` reads an
endpoint back (``net.SplitHostPort``, plus a port range check). ``parse_host_port`` is the
operator-facing reader of configs and address files: it also accepts a bare host and
explains what is wrong. Standard library only: the gossip core may use it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

__all__ = [
    "NODE_ID_LENGTH",
    "NODE_ID_PATTERN",
    "HostPort",
    "bracketed",
    "ensure_port",
    "host_of",
    "is_dns_name",
    "is_ip",
    "is_node_id",
    "join_host_port",
    "parse_host_port",
    "split_host_port",
]

NODE_ID_LENGTH = 32
"""Hex characters of a node id (128 random bits)."""

NODE_ID_PATTERN = re.compile(f"[0-9a-f]{{{NODE_ID_LENGTH}}}", re.ASCII)
"""A node id: 32 lowercase hex characters (use ``fullmatch``)."""
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)


def is_node_id(value: object) -> bool:
    """True for a well-formed node id: a string of 32 lowercase hex characters."""
    return type(value) is str and NODE_ID_PATTERN.fullmatch(value) is not None


def bracketed(host: str) -> str:
    """``host`` as a URL or ``Host:`` header writes it: an IPv6 literal in brackets."""
    return f"[{host}]" if ":" in host else host


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets: ``[fd00::1]:8443``."""
    return f"{bracketed(host)}:{port}"


def _has_port(text: str) -> bool:
    """memberlist's ``hasPort``: ``[v6]:port`` or exactly one colon."""
    if text.startswith("["):
        return text.rfind(":") > text.rfind("]")
    return text.count(":") == 1


def ensure_port(text: str, default_port: int) -> str:
    """``text`` with ``default_port`` added when it has none (memberlist's ``ensurePort``):
    ``10.0.0.1`` -> ``10.0.0.1:8443``, ``fd00::1`` and ``[fd00::1]`` -> ``[fd00::1]:8443``."""
    if _has_port(text):
        return text
    return join_host_port(text.removeprefix("[").removesuffix("]"), default_port)


def split_host_port(endpoint: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError if it is not one (no
    port, a port outside 1-65535, an IPv6 literal without brackets)."""
    if endpoint.startswith("["):
        host, bracket, rest = endpoint[1:].partition("]")
        port_text = rest[1:] if bracket and rest.startswith(":") else ""
    else:
        host, colon, port_text = endpoint.rpartition(":")
        if not colon or ":" in host:
            host = ""  # no port, or an IPv6 literal without brackets
    if not (host and port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"not a host:port address: {endpoint[:80]!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port out of range in {endpoint[:80]!r}")
    return host, port


def host_of(address: str) -> str:
    """The host of ``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address,
    without brackets."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    if address.count(":") == 1:
        return address.partition(":")[0]
    return address


class HostPort(NamedTuple):
    """A ``host`` or ``host:port``; ``port`` is None when the default port applies."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        return bracketed(self.host) if self.port is None else join_host_port(self.host, self.port)

    def endpoint(self, default_port: int) -> str:
        """``host:port``, ``default_port`` when none was written."""
        return join_host_port(self.host, default_port if self.port is None else self.port)


def parse_host_port(text: str) -> HostPort:
    """Parse ``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address.

    The host is an IP address or a DNS name; the port is 1 to 65535. Raises ValueError
    with a message meant for the operator.
    """
    if not text:
        raise ValueError("empty address")
    port_text: str | None = None
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            raise ValueError(f"{text!r}: missing ']' after an IPv6 address")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':port' after ']'")
            port_text = rest[1:]
        if not is_ip(host, version=6):
            raise ValueError(f"{text!r}: {host!r} in brackets is not an IPv6 address")
    elif text.count(":") > 1:
        host = text
        if not is_ip(host, version=6):
            raise ValueError(f"{text!r} is not host, host:port or [IPv6]:port")
    else:
        host, _, port_text_or_empty = text.partition(":")
        if ":" in text:
            port_text = port_text_or_empty
        if not is_ip(host, version=4) and not is_dns_name(host):
            hint = "; separate addresses with spaces" if "," in text else ""
            raise ValueError(f"{text!r} is not host, host:port or [IPv6]:port{hint}")
    port = None
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    return HostPort(host, port)


def is_ip(text: str, *, version: int | None = None) -> bool:
    """Whether ``text`` is an IP address (of ``version``, 4 or 6, when given)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version


def is_dns_name(text: str) -> bool:
    """Whether ``text`` is a DNS host name (labels of letters, digits and inner hyphens)."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    # An all-numeric last label would be a mistyped IPv4 address, not a name.
    return all(_DNS_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()
