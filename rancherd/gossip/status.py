"""The status line: what a node waits for, in one plain sentence, and the same in data.

Every wording is listed in docs/OPERATIONS.md ("every status line") and docs/PROTOCOL.md;
change them together. Peers are named by their first gossip address, which is what an
operator sees in ``ip addr`` and in discovery, never by node id when an address is known.
``with_ages=False`` leaves out the parts that change with time alone ("last heard 3s ago"),
so the core can tell a real change of status from the clock moving on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rancherd.gossip.config import GossipConfig
from rancherd.gossip.election import Abandoned, Election, JoinRole, Phase
from rancherd.gossip.events import Identity, Status
from rancherd.gossip.membership import PeerTable
from rancherd.gossip.messages import Address, Decision, NodeId, RefuseReason, Role

__all__ = ["StatusWords"]

_NAMES_SHOWN = 5


class StatusWords:
    """Reads the election and the table of one core (never changes them)."""

    def __init__(
        self,
        identity: Identity,
        config: GossipConfig,
        election: Election,
        table: PeerTable,
        duplicates: Mapping[int, tuple[Address, ...]],
    ) -> None:
        self._identity = identity
        self._id = identity.node_id
        self._is_server = identity.role is Role.SERVER
        self._config = config
        self._election = election
        self._table = table
        self._duplicates = duplicates

    def _name(self, node_id: NodeId) -> str:
        if node_id == self._id:
            addresses = self._identity.addresses
        else:
            addresses = self._table.addresses_of(node_id)
        return addresses[0] if addresses else node_id[:8]

    def _names(self, node_ids: Sequence[NodeId]) -> str:
        """The first few names, and how many more (only those shown are looked up: the
        status is recomputed on every change, views can hold a hundred servers)."""
        names = ", ".join(self._name(node_id) for node_id in node_ids[:_NAMES_SHOWN])
        if len(node_ids) > _NAMES_SHOWN:
            return f"{names} and {len(node_ids) - _NAMES_SHOWN} more"
        return names

    def status(self, now: float, with_ages: bool) -> Status:
        election = self._election
        table = self._table
        phase = election.phase
        waiting: tuple[NodeId, ...] = election.waiting_for()
        decision = election.decision
        if decision is not None:
            text = self._decided_text(decision)
        elif self._duplicates:
            text = self._duplicate_text()
        elif phase is Phase.PROPOSING:
            current = election.round
            assert current is not None
            if current.view is None:
                text = (
                    f"resuming round {current.vote.round} after a restart; "
                    f"{self._gathering_text(now)}"
                )
            else:
                text = (
                    f"proposing round {current.vote.round}; "
                    f"waiting for acks from {self._names(waiting)}"
                )
        elif phase is Phase.VOTED:
            vote = election.vote
            assert vote is not None
            proposer = self._name(vote.proposer)
            text = f"voted for {proposer} (round {vote.round}), waiting for its commit"
            if with_ages:
                entry = table.get(vote.proposer)
                if entry is None:
                    text += " (not heard from since this start)"
                else:
                    text += f" (last heard {now - entry.last_grew:.0f}s ago)"
        elif phase is Phase.BACKOFF:
            text = self._backoff_text()
            until = election.backoff_until
            if with_ages and until is not None:
                text += f"; retrying in {max(0.0, until - now):.1f}s"
        else:
            text = self._gathering_text(now)
            waiting = table.disagreeing() if self._is_server else ()
        return Status(
            phase=phase,
            text=text,
            node_id=self._id,
            role=self._identity.role,
            expected_servers=self._config.expected_servers,
            view=table.view,
            waiting_for=waiting,
            vote=election.vote,
            decision=decision,
            split=bool(election.splits),
            duplicate_id=bool(self._duplicates),
        )

    def _gathering_text(self, now: float) -> str:
        table = self._table
        expected = self._config.expected_servers
        if not self._is_server:
            servers = table.servers
            have = f"have {len(servers)} of {expected} servers"
            listed = f" ({self._names(servers)})" if servers else ""
            return f"agent; {have}{listed}; waiting for the servers to decide"
        view = table.view
        have = f"have {len(view)} of {expected} servers"
        if len(view) < expected:
            missing = expected - len(view)
            plural = "" if missing == 1 else "s"
            return f"{have} ({self._names(view)}); waiting for {missing} more server{plural}"
        disagreeing = table.disagreeing()
        if disagreeing:
            return f"{have}; waiting for agreement from {self._names(disagreeing)}"
        if view[0] != self._id:
            return f"{have}, all agree; waiting for {self._name(view[0])} to propose"
        if now < self._election.not_before:
            return f"{have}, all agree; starting up before proposing"
        return f"{have}, all agree; proposing"

    def _backoff_text(self) -> str:
        abandoned: Abandoned | None = self._election.last_abandoned
        if abandoned is None:
            return "backing off"
        what = f"round {abandoned.vote.round} given up"
        if abandoned.reason == "refused" and abandoned.peers:
            why = f"refused by {self._name(abandoned.peers[0])}"
            if abandoned.refusal is RefuseReason.VOTED_OTHER and abandoned.their_vote is not None:
                why += f", which voted for {self._name(abandoned.their_vote.proposer)}"
            elif abandoned.refusal is not None:
                why += f" ({abandoned.refusal.name.lower().replace('_', ' ')})"
        elif abandoned.reason == "member left":
            why = f"{self._names(abandoned.peers)} left"
        elif abandoned.reason == "timed out":
            why = f"no ack from {self._names(abandoned.peers)}" if abandoned.peers else "timed out"
        else:
            why = abandoned.reason
        return f"{what} ({why})"

    def _decided_text(self, decision: Decision) -> str:
        election = self._election
        role = election.role_in(decision)
        if role is JoinRole.CLUSTER_INIT:
            text = "decided: cluster-init"
        else:
            text = f"decided: joining the cluster of {decision.init_host} as {role.value}"
        if election.splits:
            theirs, source = next(iter(election.splits.values()))
            text = (
                f"SPLIT: this node is in cluster {decision.cluster_id[:8]} "
                f"(init {decision.init_host}) but {self._name(source)} is in cluster "
                f"{theirs.cluster_id[:8]} (init {theirs.init_host}); {text}"
            )
        if self._duplicates:
            text += "; " + self._duplicate_text()
        return text

    def _duplicate_text(self) -> str:
        for addresses in self._duplicates.values():
            if addresses:
                return f"node id shared with {addresses[0]} (cloned data dir?)"
        return "node id shared with another machine (cloned data dir?)"
