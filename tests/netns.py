"""A test kit of Linux network namespaces: a private L2 segment for real-network tests.

``netns_lab(n)`` builds, as root, a bridge and ``n`` namespaces, each joined to the bridge by
a veth pair whose inner end is ``eth0`` with ``10.<a>.<b>.<i+1>/24`` (one random /24 for
the whole lab), ``lo`` up and a route for 224.0.0.0/4 on ``eth0``. The bridge does no
multicast snooping and no netfilter, so mDNS crosses it like a plain switch. Everything is
removed on exit, also when the body or the setup fails; processes still running inside the
namespaces are killed first.

Usage (the test skips with a visible reason when it cannot run)::

    from netns import netns_lab, skip_unless_netns

    @pytest.mark.real
    async def test_x() -> None:
        skip_unless_netns()
        with netns_lab(3) as lab:
            a, b, c = lab.namespaces
            print(a.run(["ip", "-br", "addr"]).stdout)  # blocking, bounded by a timeout
            process = await a.open_process(["sleep", "60"])  # or trio.run_process(a.command(...))
            ...
            await stop_process(process)  # SIGTERM, SIGKILL after a grace period, reap

As a pytest fixture::

    @pytest.fixture
    def lab() -> Iterator[Lab]:
        skip_unless_netns()
        with netns_lab(3) as lab:
            yield lab

The benchmarks (``bench/netns.py``) load this same file; it imports pytest only to skip.

``avahi_daemon(ns, tmp_path)`` starts dbus and avahi-daemon inside a namespace, in a
private mount namespace with its own ``/run`` so that several daemons (one per namespace)
never meet; ``Avahi.command([...])`` runs ``avahi-browse``/``avahi-publish`` next to it.

Names: namespaces ``rdt-<pid>-<token>-<i>``, bridge ``rdtb<token>``, host veth ends
``rdtv<token><i>`` (interface names are limited to 15 characters). ``remove_stale_labs()``
(called by ``netns_lab``) deletes namespaces and bridges left behind by test processes that
no longer exist.
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
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

__all__ = [
    "Avahi",
    "Lab",
    "Namespace",
    "avahi_daemon",
    "avahi_unavailable_reason",
    "join_lab",
    "netns_lab",
    "netns_unavailable_reason",
    "remove_stale_labs",
    "skip_unless_avahi",
    "skip_unless_netns",
    "split_lab",
    "stop_process",
]

COMMAND_TIMEOUT = 10.0
"""Seconds any one setup, teardown or helper command may take."""

_PREFIX = "rdt"


# --- Can we? ----------------------------------------------------------------------------


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be built here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the ip command (Debian package iproute2)"
    if not Path("/proc/self/ns/net").exists():
        return "the kernel has no network namespaces"
    probe = f"{_PREFIX}-probe-{os.getpid()}"
    try:
        _ip(["netns", "add", probe])
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        return f"cannot create a network namespace here: {_describe(exc)}"
    with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        _ip(["netns", "del", probe])
    return None


def skip_unless_netns() -> None:
    """Skip the calling test, with the reason, unless namespaces can be built here."""
    reason = netns_unavailable_reason()
    if reason is not None:
        import pytest  # here, so the benchmarks can use this kit without pytest

        pytest.skip(reason)


def avahi_unavailable_reason() -> str | None:
    """Why ``avahi_daemon`` cannot run here (namespaces included), or None."""
    reason = netns_unavailable_reason()
    if reason is not None:
        return reason
    missing = [
        f"{tool} ({package})"
        for tool, package in (
            ("avahi-daemon", "avahi-daemon"),
            ("avahi-browse", "avahi-utils"),
            ("avahi-publish", "avahi-utils"),
            ("dbus-daemon", "dbus"),
            ("unshare", "util-linux"),
            ("nsenter", "util-linux"),
        )
        if shutil.which(tool) is None
    ]
    if missing:
        return "needs Debian packages: " + ", ".join(missing)
    return None


def skip_unless_avahi() -> None:
    """Skip the calling test, with the reason, unless avahi can run in a namespace."""
    reason = avahi_unavailable_reason()
    if reason is not None:
        import pytest  # here, so the benchmarks can use this kit without pytest

        pytest.skip(reason)


# --- Namespaces -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Namespace:
    """One network namespace of a lab."""

    name: str
    address: str
    """Its IPv4 address on ``interface``."""
    interface: str = "eth0"
    prefix_length: int = 24

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` wrapped to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def run(
        self, args: Sequence[str], *, timeout: float = COMMAND_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` inside the namespace to completion (text output captured)."""
        return subprocess.run(
            self.command(args), capture_output=True, text=True, timeout=timeout, check=check
        )

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``args`` inside the namespace; the caller waits for it (with a timeout)."""
        return subprocess.Popen(self.command(args), **kwargs)

    async def run_process(
        self, args: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[bytes]:
        """``trio.run_process`` inside the namespace; bound it with ``trio.fail_after``."""
        return await trio.run_process(self.command(args), **kwargs)

    async def open_process(self, args: Sequence[str], **kwargs: Any) -> trio.Process:
        """``trio.lowlevel.open_process`` inside the namespace; the caller must kill and
        ``await process.wait()`` it, e.g. with ``stop_process``."""
        return await trio.lowlevel.open_process(self.command(args), **kwargs)

    def pids(self) -> list[int]:
        """Processes running inside the namespace."""
        result = _ip(["netns", "pids", self.name], check=False)
        return [int(word) for word in result.stdout.split() if word.isdigit()]


@dataclass(frozen=True, slots=True)
class Lab:
    """A bridge and the namespaces attached to it."""

    token: str
    bridge: str
    subnet: ipaddress.IPv4Network
    namespaces: tuple[Namespace, ...]


@contextlib.contextmanager
def netns_lab(count: int) -> Iterator[Lab]:
    """Build a lab of ``count`` namespaces on one bridge; remove it all on exit.

    Needs root and ``ip``; call ``skip_unless_netns()`` first. Setup takes some 50 ms per
    namespace.
    """
    if not 1 <= count <= 250:
        raise ValueError("a lab has 1 to 250 namespaces")
    remove_stale_labs()
    token = secrets.token_hex(3)
    bridge = f"{_PREFIX}b{token}"
    subnet = _pick_subnet()
    hosts = list(subnet.hosts())
    namespaces = tuple(
        Namespace(f"{_PREFIX}-{os.getpid()}-{token}-{i}", str(hosts[i])) for i in range(count)
    )
    lab = Lab(token, bridge, subnet, namespaces)
    try:
        _add_bridge(bridge)
        for i, ns in enumerate(namespaces):
            host_end = f"{_PREFIX}v{token}{i}"
            inner = ns.interface
            _ip(f"netns add {ns.name}".split())
            _ip(f"link add {host_end} type veth peer name {inner} netns {ns.name}".split())
            _ip(f"link set {host_end} master {bridge}".split())
            _ip(f"link set {host_end} up".split())
            _ip(f"-n {ns.name} link set lo up".split())
            _ip(f"-n {ns.name} addr add {ns.address}/{ns.prefix_length} dev {inner}".split())
            _ip(f"-n {ns.name} link set {inner} up".split())
            _ip(f"-n {ns.name} route add 224.0.0.0/4 dev {inner}".split())
        yield lab
    finally:
        _remove(namespaces, bridge, token)


def _add_bridge(name: str) -> None:
    """A bridge ``name``, up, that floods multicast to every port at once."""
    _ip(f"link add {name} type bridge mcast_snooping 0 forward_delay 0".split())
    # Bridged frames must not meet the host's iptables (Docker's FORWARD policy is DROP).
    _ip(
        f"link set {name} type bridge nf_call_iptables 0 nf_call_ip6tables 0".split(),
        check=False,
    )
    _ip(f"link set {name} up".split())


def remove_stale_labs() -> None:
    """Delete the namespaces and bridges of labs whose test process no longer runs."""
    result = _ip(["netns", "list"], check=False)
    for line in result.stdout.splitlines():
        name = line.split(" ", 1)[0]
        parts = name.split("-")
        if len(parts) != 4 or parts[0] != _PREFIX or not parts[1].isdigit():
            continue
        if _alive(int(parts[1])):
            continue
        _remove([Namespace(name, "")], f"{_PREFIX}b{parts[2]}", parts[2])


def _remove(namespaces: Sequence[Namespace], bridge: str, token: str) -> None:
    for ns in namespaces:
        for pid in ns.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _ip(["netns", "del", ns.name], check=False)
    for i in range(len(namespaces)):
        # Normally gone with its peer; not when the namespace was never created.
        _ip(["link", "del", f"{_PREFIX}v{token}{i}"], check=False)
    _ip(["link", "del", bridge], check=False)
    _ip(["link", "del", f"{_PREFIX}c{token}"], check=False)  # split_lab's second bridge


def split_lab(lab: Lab, indexes: Sequence[int]) -> None:
    """Move the namespaces at ``indexes`` to a second bridge of their own: the two groups
    can no longer reach each other (no unicast, no multicast); nothing changes inside the
    namespaces (their links stay up with the same addresses). ``join_lab`` undoes it."""
    other = f"{_PREFIX}c{lab.token}"
    if _ip(["link", "show", other], check=False).returncode != 0:
        _add_bridge(other)
    for i in indexes:
        _ip(f"link set {_PREFIX}v{lab.token}{i} master {other}".split())


def join_lab(lab: Lab) -> None:
    """Put every namespace back on the lab's bridge: one segment again."""
    for i in range(len(lab.namespaces)):
        _ip(f"link set {_PREFIX}v{lab.token}{i} master {lab.bridge}".split())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pick_subnet() -> ipaddress.IPv4Network:
    """A random 10.200-249.x.0/24 that no route of the host covers."""
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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return (exc.stderr or "").strip() or str(exc)
    return str(exc)


# --- Processes --------------------------------------------------------------------------


async def stop_process(process: trio.Process, *, grace: float = 5.0) -> int:
    """Terminate ``process`` (SIGTERM, then SIGKILL after ``grace`` seconds) and reap it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with trio.move_on_after(grace):
            return await process.wait()
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    return await process.wait()


# --- Avahi ------------------------------------------------------------------------------

_AVAHI_SCRIPT = """
set -e
mount -t tmpfs -o mode=0755 rdt-run /run
mkdir -p /run/dbus /run/avahi-daemon
dbus-daemon --system --nofork --nopidfile --nosyslog &
tries=0
until [ -S /run/dbus/system_bus_socket ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 200 ] || { echo "dbus-daemon did not start" >&2; exit 1; }
    sleep 0.05
done
avahi-daemon --no-drop-root --no-chroot --no-rlimits --file="$1" &
wait
"""


@dataclass(frozen=True, slots=True)
class Avahi:
    """A dbus + avahi-daemon pair inside a namespace, with a ``/run`` of their own."""

    namespace: Namespace
    host_name: str
    process: subprocess.Popen[Any]
    """The shell that holds the mount namespace; its process group is the daemons'."""
    log: Path
    """The daemons' standard error."""

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` wrapped to run next to the daemon (its mount and network namespace)."""
        return ["nsenter", f"--target={self.process.pid}", "--mount", "--net", *args]

    def run(
        self, args: Sequence[str], *, timeout: float = COMMAND_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(args), capture_output=True, text=True, timeout=timeout, check=check
        )

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(self.command(args), **kwargs)


@contextlib.contextmanager
def avahi_daemon(
    namespace: Namespace, workdir: Path, *, ready_timeout: float = 15.0
) -> Iterator[Avahi]:
    """Run dbus and avahi-daemon in ``namespace`` until exit; call ``skip_unless_avahi()``
    first. ``workdir`` (e.g. pytest's ``tmp_path``) holds the daemon's config and log."""
    host_name = f"avahi-{namespace.name}"
    config = workdir / f"avahi-{namespace.name}.conf"
    log = workdir / f"avahi-{namespace.name}.log"
    config.write_text(
        "[server]\n"
        f"host-name={host_name}\n"
        "use-ipv4=yes\nuse-ipv6=no\n"
        f"allow-interfaces={namespace.interface}\n"
        "ratelimit-interval-usec=0\n"
        "[wide-area]\nenable-wide-area=no\n"
        "[publish]\npublish-hinfo=no\npublish-workstation=no\n"
    )
    unshare = ["unshare", "--mount", "--propagation", "private"]
    with log.open("wb") as log_file:  # the child keeps its own descriptor
        process = namespace.popen(
            [*unshare, "sh", "-c", _AVAHI_SCRIPT, "sh", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,
        )
    avahi = Avahi(namespace, host_name, process, log)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                tail = log.read_text(errors="replace").strip()[-2000:]
                raise RuntimeError(f"avahi-daemon in {namespace.name} exited: {tail}")
            check = subprocess.run(
                avahi.command(["avahi-browse", "--all", "--terminate", "--parsable"]),
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
            if check.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"avahi-daemon in {namespace.name} not ready after {ready_timeout}s: "
                    f"{check.stderr.decode(errors='replace').strip()}"
                )
            time.sleep(0.1)
        yield avahi
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group, SIGKILL it after 5 s, reap the leader."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, COMMAND_TIMEOUT)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
