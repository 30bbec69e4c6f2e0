"""A bridge and network namespaces for the mDNS benchmark (root and ``ip`` needed).

The minimum of ``tests/netns.py`` (a test kit another engineer owns, which imports pytest),
with its own name prefix so the two never clean up each other's labs: a bridge without
multicast snooping or netfilter, and per namespace a veth pair whose inner end is ``eth0``
with one address of a random free ``10.x.y.0/24``, ``lo`` up, and a route for
``224.0.0.0/4``. ``bench_lab()`` removes everything on exit, killing what still runs inside.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["BenchNamespace", "bench_lab", "netns_unavailable_reason"]

COMMAND_TIMEOUT = 10.0
_PREFIX = "rdb"


@dataclass(frozen=True, slots=True)
class BenchNamespace:
    name: str
    address: str

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` run inside the namespace (``ip netns exec`` execs them: same pid)."""
        return ["ip", "netns", "exec", self.name, *args]

    def pids(self) -> list[int]:
        result = _ip(["netns", "pids", self.name], check=False)
        return [int(word) for word in result.stdout.split() if word.isdigit()]


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the ip command (Debian package iproute2)"
    probe = f"{_PREFIX}-probe-{os.getpid()}"
    try:
        _ip(["netns", "add", probe])
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        return f"cannot create a network namespace: {exc}"
    _ip(["netns", "del", probe], check=False)
    return None


@contextlib.contextmanager
def bench_lab(count: int) -> Iterator[list[BenchNamespace]]:
    """``count`` namespaces on one bridge, removed (with their processes) on exit."""
    _remove_stale()
    token = secrets.token_hex(3)
    bridge = f"{_PREFIX}b{token}"
    hosts = list(_pick_subnet().hosts())
    namespaces = [
        BenchNamespace(f"{_PREFIX}-{os.getpid()}-{token}-{i}", str(hosts[i])) for i in range(count)
    ]
    try:
        _ip(f"link add {bridge} type bridge mcast_snooping 0 forward_delay 0".split())
        _ip(
            f"link set {bridge} type bridge nf_call_iptables 0 nf_call_ip6tables 0".split(),
            check=False,
        )
        _ip(f"link set {bridge} up".split())
        for i, ns in enumerate(namespaces):
            host_end = f"{_PREFIX}v{token}{i}"
            _ip(f"netns add {ns.name}".split())
            _ip(f"link add {host_end} type veth peer name eth0 netns {ns.name}".split())
            _ip(f"link set {host_end} master {bridge}".split())
            _ip(f"link set {host_end} up".split())
            _ip(f"-n {ns.name} link set lo up".split())
            _ip(f"-n {ns.name} addr add {ns.address}/24 dev eth0".split())
            _ip(f"-n {ns.name} link set eth0 up".split())
            _ip(f"-n {ns.name} route add 224.0.0.0/4 dev eth0".split())
        yield namespaces
    finally:
        _remove(namespaces, bridge, token)


def _remove(namespaces: Sequence[BenchNamespace], bridge: str, token: str) -> None:
    for ns in namespaces:
        for pid in ns.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _ip(["netns", "del", ns.name], check=False)
    for i in range(len(namespaces)):
        _ip(["link", "del", f"{_PREFIX}v{token}{i}"], check=False)
    _ip(["link", "del", bridge], check=False)


def _remove_stale() -> None:
    """Labs of bench processes that no longer run (killed with SIGKILL, say)."""
    for line in _ip(["netns", "list"], check=False).stdout.splitlines():
        name = line.split(" ", 1)[0]
        parts = name.split("-")
        if len(parts) != 4 or parts[0] != _PREFIX or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            _remove([BenchNamespace(name, "")], f"{_PREFIX}b{parts[2]}", parts[2])
        except PermissionError:
            continue


def _pick_subnet() -> ipaddress.IPv4Network:
    routes = _ip(["-4", "route", "show", "table", "all"], check=False).stdout
    taken: list[ipaddress.IPv4Network] = []
    for line in routes.splitlines():
        words = line.split()
        if words and words[0] in ("local", "broadcast", "unicast", "multicast", "anycast"):
            words = words[1:]
        with contextlib.suppress(ValueError, IndexError):
            taken.append(ipaddress.IPv4Network(words[0], strict=False))
    rng = random.Random()
    for _ in range(100):
        subnet = ipaddress.IPv4Network(f"10.{rng.randrange(200, 250)}.{rng.randrange(256)}.0/24")
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise RuntimeError("no free 10.200-249.x.0/24 subnet")


def _ip(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(
            result.returncode, result.args, result.stdout, result.stderr
        )
    return result
