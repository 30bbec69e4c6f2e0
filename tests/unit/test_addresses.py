"""rancherd.addresses: host:port read and written one way (memberlist's util.go cases)."""

from __future__ import annotations

import pytest

from rancherd.addresses import (
    ensure_port,
    host_of,
    is_node_id,
    join_host_port,
    split_host_port,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # memberlist's TestEnsurePort cases, with its default port.
        ("1.2.3.4", "1.2.3.4:8301"),
        ("1.2.3.4:1234", "1.2.3.4:1234"),
        ("2600:1f14:e22:1501:f9a:2e0c:a167:67e8", "[2600:1f14:e22:1501:f9a:2e0c:a167:67e8]:8301"),
        ("[2600:1f14:e22:1501:f9a:2e0c:a167:67e8]", "[2600:1f14:e22:1501:f9a:2e0c:a167:67e8]:8301"),
        ("[fd00::1]:1234", "[fd00::1]:1234"),
        ("node.example", "node.example:8301"),
    ],
)
def test_ensure_port(text: str, expected: str) -> None:
    assert ensure_port(text, 8301) == expected


def test_join_and_split_are_inverse() -> None:
    for host, port in [("10.0.0.1", 8443), ("fd00::1", 1), ("node-1.example", 65535)]:
        assert split_host_port(join_host_port(host, port)) == (host, port)
    assert join_host_port("fd00::1", 8443) == "[fd00::1]:8443"


@pytest.mark.parametrize("bad", ["10.0.0.1", "fd00::1:80", "[fd00::1]", "h:0", "h:70000", ":1"])
def test_split_refuses_what_is_not_host_port(bad: str) -> None:
    with pytest.raises(ValueError, match=r"host:port|port out of range"):
        split_host_port(bad)


def test_host_of() -> None:
    assert host_of("10.0.0.1:8443") == "10.0.0.1"
    assert host_of("[fd00::1]:8443") == "fd00::1"
    assert host_of("fd00::1") == "fd00::1"
    assert host_of("node") == "node"


def test_node_id() -> None:
    assert is_node_id("0123456789abcdef" * 2)
    assert not is_node_id("0123456789ABCDEF" * 2)
    assert not is_node_id("0" * 31)
    assert not is_node_id(None)
