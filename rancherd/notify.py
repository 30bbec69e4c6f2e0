"""systemd's notify protocol: tell the service manager what the daemon does.

Under ``Type=notify`` systemd hands the service ``$NOTIFY_SOCKET``, an ``AF_UNIX``
datagram socket (a path, or an abstract name written ``@name``), and reads newline-separated
``KEY=VALUE`` assignments from each datagram (sd_notify(3)). rancherd sends:

- ``STATUS=<the node's status line>`` at every change, which ``systemctl status`` shows;
- ``READY=1`` once the node is bootstrapped (decided, plan applied, done stamp written; at
  once on a restart after the stamp), which releases units ordered after rancherd;
- ``STOPPING=1`` when it shuts down;
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC``, from a task of the trio loop, so a wedged
  loop stops the pings and systemd restarts the daemon.

Without ``$NOTIFY_SOCKET`` (a terminal, a test) every call does nothing. A send never
raises: the service manager going away must not take the node down with it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, MutableMapping

import trio

__all__ = ["STATUS_REFRESH", "Notifier"]

log = logging.getLogger("rancherd")

STATUS_REFRESH = 5.0
"""Seconds between two re-sends of a status line whose ages moved ("last heard 7s ago")."""

_ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _socket_address(value: str) -> str | bytes | None:
    if value.startswith("@"):  # abstract namespace: a leading NUL byte
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other families: not for a boot-time daemon on one host


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half the watchdog period (sd_watchdog_enabled(3)'s advice), if it is meant for us."""
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Notifier:
    """Sends notify datagrams to ``address`` (``None``: does nothing)."""

    def __init__(self, address: str | bytes | None, watchdog_interval: float | None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_interval
        self._socket: socket.socket | None = None
        self._last_status: str | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str]) -> Notifier:
        """The notifier systemd set up in ``environ``, whose keys are then removed so the
        plan's commands (install scripts) do not inherit them."""
        value = environ.get("NOTIFY_SOCKET", "")
        notifier = cls(_socket_address(value) if value else None, _watchdog_interval(environ))
        for key in _ENV_KEYS:
            environ.pop(key, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """One datagram of ``KEY=VALUE`` lines; False when it could not be sent."""
        if self.address is None:
            return False
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)
        try:
            self._socket.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %r: %s", self.address, exc.strerror or exc)
            return False
        return True

    def status(self, text: str) -> None:
        """``STATUS=text``, unless it is the line sent last."""
        text = " ".join(text.split())  # one line: a newline would start a new assignment
        if text != self._last_status and self.send(f"STATUS={text}"):
            self._last_status = text

    def ready(self, text: str) -> None:
        text = " ".join(text.split())
        if self.send("READY=1", f"STATUS={text}"):
            self._last_status = text

    def stopping(self, text: str) -> None:
        self.send("STOPPING=1", f"STATUS={' '.join(text.split())}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def feed_watchdog(self) -> None:
        """``WATCHDOG=1`` every half period, for as long as the trio loop runs this task."""
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(interval)

    async def follow(
        self, describe: Callable[[], str], wait_changed: Callable[[], Awaitable[None]]
    ) -> None:
        """Send ``describe()`` as the status at each change (``wait_changed`` returns at
        the next one) and at least every ``STATUS_REFRESH`` seconds, so that the ages in
        ``systemctl status`` move too."""
        if not self.enabled:
            return
        while True:
            self.status(describe())
            with trio.move_on_after(STATUS_REFRESH):
                await wait_changed()
