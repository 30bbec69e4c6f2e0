"""``provider=static``: a fixed list of addresses, sent as they were written.

Host names are passed on unresolved; whoever dials them resolves them, and does so again on
every retry, so a name whose address changes keeps working.
"""

from __future__ import annotations

import trio

from rancherd.addresses import HostPort
from rancherd.discovery.params import DiscoveryParams, StaticParams
from rancherd.discovery.provider import (
    DEFAULT_REFRESH,
    Advertisement,
    AnswerSender,
    Provider,
    ProviderSettings,
    emit_while_changing,
)

__all__ = ["StaticProvider", "endpoints_of"]


def endpoints_of(addrs: tuple[HostPort, ...], default_port: int) -> frozenset[str]:
    """``host:port`` endpoints of parsed addresses; a missing port is ``default_port``."""
    return frozenset(a.endpoint(default_port) for a in addrs)


class StaticProvider(Provider):
    """Answers the configured addresses; advertises nothing."""

    name = "static"

    def __init__(
        self, params: StaticParams, *, default_port: int, refresh: float = DEFAULT_REFRESH
    ) -> None:
        super().__init__(refresh=refresh)
        self.answer = endpoints_of(params.addrs, default_port)

    @classmethod
    def create(cls, params: DiscoveryParams, settings: ProviderSettings) -> StaticProvider:
        return cls(
            params.typed_as(StaticParams),
            default_port=settings.default_port,
            refresh=settings.refresh,
        )

    async def run(
        self,
        advertisement: Advertisement | None,
        answers: AnswerSender,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()

        async def wait_change(deadline: float) -> frozenset[str]:
            await trio.sleep_until(deadline)
            return self.answer

        await emit_while_changing(answers, self.refresh, wait_change)
