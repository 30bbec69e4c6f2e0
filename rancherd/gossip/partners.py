"""Sans-IO choice of gossip partners: the few peers a node gossips with.

Every periodic Gossip and every push of a node goes to peers of a small random set, its
partners, instead of any peer of the table. Each message still goes to random peers, so
changes spread as an epidemic, but a node keeps about ``size`` connections whatever the
fleet: with a random target per tick from the whole table, every pair of a fleet of a
hundred ends up connected within a second, and the handshakes alone cost more frames than
the gossip. HyParView's active view is the model, simplified: the set is refilled at random
when a partner is forgotten and one partner is swapped for a random peer at every full-state
exchange, so the overlay keeps changing and never splits the fleet for long.

A server keeps ``server_share`` servers among its partners (when it knows that many), so
servers hear each other first even when agents outnumber them a hundred to one.
"""

from __future__ import annotations

import random

from rancherd.gossip.membership import PeerTable
from rancherd.gossip.messages import NodeId, Role

__all__ = ["Partners"]

_ATTEMPTS_PER_SLOT = 4
"""Random draws spent per free slot before giving up until the next refill (a draw may hit
a peer that is already a partner)."""


class Partners:
    def __init__(self, size: int, server_share: int, self_is_server: bool) -> None:
        self._size = size
        self._server_share = server_share if self_is_server else 0
        self._ids: list[NodeId] = []
        """The partners this node chose."""
        self._turn = 0
        self._callers: dict[NodeId, None] = {}
        """Peers that gossiped to us lately, oldest first (at most twice ``size``): gossip
        goes back to them too, so partnership is symmetric. Push gossip along choices alone
        never reaches a node that nobody happened to choose (with four random choices each,
        about one node in fifty), until the next full-state exchange."""

    @property
    def ids(self) -> tuple[NodeId, ...]:
        """Every current partner: those chosen, then the callers."""
        return tuple(dict.fromkeys([*self._ids, *self._callers]))

    def targets(
        self, table: PeerTable, count: int, servers: int, rng: random.Random
    ) -> list[NodeId]:
        """``count`` partners, ``servers`` of them servers (at random) where there are
        enough, the rest in turn: successive ticks go round every partner, so news reaches
        each of them within a few ticks instead of whenever chance picks it."""
        self._refill(table, rng)
        partners = [i for i in self.ids if i in table]
        chosen: list[NodeId] = []
        if servers:
            server_ids = [i for i in partners if _is_server(table, i)]
            chosen = rng.sample(server_ids, min(servers, len(server_ids)))
        rest = [i for i in partners if i not in chosen]
        wanted = min(count - len(chosen), len(rest))
        if wanted > 0:
            start = self._turn % len(rest)
            chosen += [rest[(start + k) % len(rest)] for k in range(wanted)]
            self._turn = start + wanted
        return chosen

    def called(self, node_id: NodeId, table: PeerTable) -> None:
        """``node_id`` just gossiped to us itself. It becomes a caller, and, while this node
        has room, a chosen partner: the connection exists, so it is the cheapest one."""
        if node_id not in table:
            return
        callers = self._callers
        callers.pop(node_id, None)
        callers[node_id] = None
        if len(callers) > 2 * self._size:
            del callers[next(iter(callers))]
        if len(self._ids) < self._size and node_id not in self._ids:
            self._ids.append(node_id)

    def rotate(self, table: PeerTable, rng: random.Random) -> None:
        """Swap one random partner for a random peer (the overlay keeps changing)."""
        self._refill(table, rng)
        if self._ids and len(table) > len(self._ids):
            del self._ids[rng.randrange(len(self._ids))]
            self._refill(table, rng)

    def _refill(self, table: PeerTable, rng: random.Random) -> None:
        for gone in [i for i in self._callers if i not in table]:
            del self._callers[gone]
        ids = [i for i in self._ids if i in table]
        want = min(self._size, len(table))
        if len(ids) < want:
            held = set(ids)
            servers_wanted = min(self._server_share, table.server_count)
            servers_held = sum(1 for i in ids if _is_server(table, i))
            attempts = _ATTEMPTS_PER_SLOT * (want - len(ids))
            while len(ids) < want and attempts > 0:
                attempts -= 1
                if servers_held < servers_wanted:
                    picked = table.sample_servers(1, rng)
                else:
                    picked = table.sample(1, rng)
                if not picked or picked[0] in held:
                    continue
                ids.append(picked[0])
                held.add(picked[0])
                servers_held += _is_server(table, picked[0])
        self._ids = ids


def _is_server(table: PeerTable, node_id: NodeId) -> bool:
    entry = table.get(node_id)
    return entry is not None and entry.record.role is Role.SERVER
