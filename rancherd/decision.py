"""This node's part in the cluster, and the original rancherd's rules that give it when
there is no discovery. Kept apart from ``bootstrap`` (which runs nodes, with trio and the
whole engine) so that ``rancherd plan`` applies the very same rules without loading them."""

from __future__ import annotations

from dataclasses import dataclass

from rancherd.config import Config
from rancherd.kinds import JoinRole

__all__ = ["BootstrapError", "Decision", "decide_statically"]


class BootstrapError(Exception):
    """The bootstrap cannot go on; the message says why."""


@dataclass(frozen=True, slots=True)
class Decision:
    """This node's part: create the cluster, or join ``server_url`` as server or agent."""

    role: JoinRole
    server_url: str | None
    cluster_id: str | None = None
    how: str = "config"


def decide_statically(config: Config) -> Decision:
    """The original rancherd's rules, for a config without discovery."""
    if config.role is JoinRole.CLUSTER_INIT or (
        config.role is JoinRole.SERVER and not config.server
    ):
        return Decision(JoinRole.CLUSTER_INIT, None)
    if not config.server:
        raise BootstrapError(
            f"role {config.role} without discovery needs server: the URL of a node to join"
        )
    role = JoinRole.SERVER if config.role is JoinRole.SERVER else JoinRole.AGENT
    return Decision(role, config.server)
