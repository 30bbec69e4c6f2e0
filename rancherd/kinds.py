"""The small vocabularies that config, gossip, install and the simulator share.

A leaf module (standard library only), so that ``rancherd.config`` and ``rancherd.gossip``
both import it without importing each other.

Two role types, because they answer two questions:

- ``Role``: what a node *is*, for its whole life: a server (votes, can be elected, runs the
  control plane) or an agent. Gossip records carry it; its values are wire values.
- ``JoinRole``: how a node *joins* the cluster: it creates it (``cluster-init``), or joins
  it as a server or as an agent. The config's ``role:`` key asks for one of these (a
  ``cluster-init`` node creates the cluster without discovery) and the join decision
  (election, ``server:`` or the config alone) settles one; both use the same three words,
  so one type serves both. ``JoinRole.node_role`` gives the ``Role`` it implies:
  a cluster-init node is a server.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = ["USER_PRESETS", "JoinRole", "Preset", "Role"]


class Role(IntEnum):
    """What a node is. Only servers vote and only servers can win. Wire values: append-only."""

    SERVER = 1
    AGENT = 2


class JoinRole(StrEnum):
    """How a node joins: what the config's ``role:`` asks for and what a decision settles."""

    CLUSTER_INIT = "cluster-init"
    """This node creates the cluster (asked for: without discovery)."""
    SERVER = "server"
    """A control-plane node: creates the cluster if elected (or alone), else joins it."""
    AGENT = "agent"
    """A worker: joins a server, never takes part in the election."""

    @property
    def node_role(self) -> Role:
        """The ``Role`` a node joining this way has: an agent or else a server."""
        return Role.AGENT if self is JoinRole.AGENT else Role.SERVER


class Preset(StrEnum):
    """Gossip timing presets (``rancherd.gossip.config.PRESETS`` builds each)."""

    LAN = "lan"
    """Production on one LAN."""
    LOCAL = "local"
    """Loopback demos and integration tests: shorter timers."""
    SIM = "sim"
    """Thousands of simulated nodes in one process: slower ticks."""


USER_PRESETS: tuple[Preset, ...] = (Preset.LAN, Preset.LOCAL)
"""The presets a config (``discovery.preset``) and the benchmarks may choose."""
