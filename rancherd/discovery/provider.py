"""The discovery provider interface: advertise this node, report where its peers are.

A provider knows nothing of gossip. It is handed an ``Advertisement`` (what to publish, if
it can publish) and a channel, and sends the full current answer, a frozenset of gossip
endpoints ``"host:port"`` (``"[v6]:port"``), whenever the answer changes and again every
``refresh`` seconds, so that the consumer retries addresses that stayed silent. Answers
may include this node's own endpoints; the consumer filters them.
"""

from __future__ import annotations

import abc
import ipaddress
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Self

import trio

from rancherd.addresses import is_node_id
from rancherd.discovery.params import DEFAULT_SERVER_CACHE_DURATION, DiscoveryParams

__all__ = [
    "DEFAULT_REFRESH",
    "Advertisement",
    "AnswerSender",
    "OnceLogger",
    "Provider",
    "ProviderSettings",
    "emit_while_changing",
    "send_answer",
]

DEFAULT_REFRESH = 5.0
"""Seconds between two answers when nothing changes."""

AnswerSender = trio.MemorySendChannel[frozenset[str]]

_TXT_KEY = re.compile(r"[\x20-\x3c\x3e-\x7e]{1,63}", re.ASCII)
_TXT_MAX = 400
"""Bytes of TXT data an advertisement may carry: small, so one mDNS packet holds it all."""


@dataclass(frozen=True, slots=True)
class Advertisement:
    """What a provider publishes about this node. Nothing in it is secret."""

    node_id: str
    """32 lowercase hex characters; the mDNS instance name derives from it."""
    port: int
    """The gossip port peers dial."""
    addresses: tuple[str, ...] = ()
    """IP addresses to advertise; empty means every address of the chosen interfaces."""
    txt: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Small public facts, e.g. ``{"v": "1", "role": "server"}``."""

    def __post_init__(self) -> None:
        if not is_node_id(self.node_id):
            raise ValueError(f"node_id {self.node_id!r} is not 32 lowercase hex characters")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not 1 to 65535")
        for address in self.addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"{address!r} is not an IP address") from None
        size = 0
        for key, value in self.txt.items():
            if not _TXT_KEY.fullmatch(key):
                raise ValueError(f"TXT key {key!r}: 1 to 63 printable ASCII characters, no '='")
            size += len(key) + 2 + len(value.encode())
        if size > _TXT_MAX:
            raise ValueError(f"TXT data is {size} bytes; at most {_TXT_MAX}")
        object.__setattr__(self, "txt", MappingProxyType(dict(self.txt)))


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """What a node tells every provider besides its parameters."""

    default_port: int
    """The port of addresses written without one (static, file)."""
    refresh: float = DEFAULT_REFRESH
    """Seconds between two answers when nothing changes."""
    server_cache_duration: float = DEFAULT_SERVER_CACHE_DURATION
    """How long the gossip layer keeps a peer that discovery stopped naming; a provider that
    polls (mDNS) asks again a few times per such period."""


class Provider(abc.ABC):
    """A discovery mechanism. Start with ``await nursery.start(provider.run, ad, send)``.

    A provider is registered in ``rancherd.discovery.params.REGISTRY`` under its ``name``.
    """

    name: str
    """The provider's name in ``discovery.params``: mdns, static, file, srv."""

    @classmethod
    def create(cls, params: DiscoveryParams, settings: ProviderSettings) -> Self:
        """The provider for checked ``params`` (``params.typed_as`` gives its typed view).

        Every registered provider defines it; ``make_provider`` calls it. Providers made
        by hand (tests, the demo) need not."""
        raise TypeError(f"{cls.__name__} is not a registered provider: it has no create()")

    def __init__(self, *, refresh: float = DEFAULT_REFRESH) -> None:
        if not refresh > 0 or math.isinf(refresh):
            raise ValueError(f"refresh must be a positive number of seconds, not {refresh}")
        self.refresh = refresh

    @abc.abstractmethod
    async def run(
        self,
        advertisement: Advertisement | None,
        answers: AnswerSender,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Advertise (if the provider can and ``advertisement`` is given: agents browse
        only) and send the full current answer, a frozenset of
        gossip endpoints, whenever it changes and again at least every ``refresh`` seconds.

        ``task_status.started()`` once advertising is up (the first answer may come later).
        Runs until cancelled; on cancel it withdraws the advertisement and leaves no
        threads or tasks behind. Errors the operator must fix are logged and retried, never
        raised. Returns when the consumer closes ``answers``.
        """


async def send_answer(answers: AnswerSender, answer: frozenset[str]) -> bool:
    """Send one answer; False when the consumer has closed the channel."""
    try:
        await answers.send(answer)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


async def emit_while_changing(
    answers: AnswerSender,
    refresh: float,
    wait_change: Callable[[float], Awaitable[frozenset[str]]],
) -> None:
    """Send ``await wait_change(deadline)``'s answers: each one that differs from the last
    sent at once, an unchanged one when ``refresh`` seconds passed since the last send.

    ``wait_change(deadline)`` returns the current answer by the trio deadline or earlier.
    Returns when the consumer closes the channel.
    """
    last: frozenset[str] | None = None
    sent_at = -math.inf
    while True:
        answer = await wait_change(sent_at + refresh)
        now = trio.current_time()
        if answer != last or now >= sent_at + refresh:
            if not await send_answer(answers, answer):
                return
            last, sent_at = answer, trio.current_time()


class OnceLogger:
    """Logs a condition once until it changes, so a problem polled every second is one
    line in the journal, not one line per second."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._last: str | None = None

    def report(self, level: int, message: str) -> None:
        """Log ``message`` unless it is the condition last reported."""
        if message != self._last:
            self._logger.log(level, "%s", message)
            self._last = message

    def clear(self, message: str | None = None) -> None:
        """The condition is over; log ``message`` (at INFO) if one was reported."""
        if self._last is not None and message is not None:
            self._logger.info("%s", message)
        self._last = None
