"""The election's own safety rules, checked on the wire and on the disks after every event.

The decision invariants (``sim/invariants.py``) see a bug only once it has made two
clusters, which needs the wrong interleaving. These checks see the step that breaks the
protocol's safety argument (docs/PROTOCOL.md section 5) the moment it happens, from what
the world observes (what leaves a machine, what reaches it, what its disk holds); they
never look inside a core:

- ``ack-not-durable``, ``propose-not-durable``, ``commit-not-durable``,
  ``release-not-durable``: an election message left a machine whose disk did not yet hold
  the state it announces (the vote acked or proposed, the decision, the released round);
- ``commit-without-ack``: a Commit left before an Ack of every member of its view had
  reached the proposer;
- ``small-view``: a decision whose view has fewer than ``expected_servers`` members;
- ``vote-dropped``: a durable vote was replaced or forgotten (no decision) although its
  proposer never durably released it: the vote was not sticky.

All are violations in every scenario, ``allow_split`` ones included (they are local).
"""

from __future__ import annotations

from collections.abc import Callable

from rancherd.gossip.core import PersistedState
from rancherd.gossip.messages import Ack, Commit, Decision, Propose, Release, Vote

Report = Callable[[str, float, str], None]


class ElectionAudit:
    def __init__(self, report: Report, expected_servers: int) -> None:
        self._report = report
        self._expected = expected_servers
        self._released: dict[str, set[Vote]] = {}
        """node id -> every vote it ever durably released (its disk lists only the last)."""
        self._acks: set[tuple[str, str, int]] = set()
        """(proposer id, voter id, round) of every Ack delivered to the proposer."""

    def sent(self, node_id: str, disk: object, payload: object, now: float) -> None:
        message = _message(payload)
        if isinstance(message, Ack):
            vote = Vote(message.proposer, message.round, message.nonce)
            if not (isinstance(disk, PersistedState) and disk.vote == vote):
                self._fail("ack-not-durable", now, f"{node_id[:8]} acked {vote}", disk)
        elif isinstance(message, Propose):
            vote = Vote(message.proposer, message.round, message.nonce)
            if not (isinstance(disk, PersistedState) and disk.vote == vote):
                self._fail("propose-not-durable", now, f"{node_id[:8]} proposed {vote}", disk)
        elif isinstance(message, Release):
            vote = Vote(message.proposer, message.round, message.nonce)
            if vote not in self._released.get(node_id, ()):
                self._fail("release-not-durable", now, f"{node_id[:8]} released {vote}", disk)
        elif isinstance(message, Commit):
            self._commit(node_id, disk, message.decision, now)

    def _commit(self, node_id: str, disk: object, decision: Decision, now: float) -> None:
        if not (isinstance(disk, PersistedState) and disk.decision == decision):
            self._fail("commit-not-durable", now, f"{node_id[:8]} committed", disk)
        if len(decision.members) < self._expected:
            self._report(
                "small-view",
                now,
                f"{node_id[:8]} committed a view of {len(decision.members)} "
                f"(expected_servers {self._expected})",
            )
        missing = [
            m[:8]
            for m in decision.members
            if m != decision.init_node and (decision.init_node, m, decision.round) not in self._acks
        ]
        if missing:
            self._report(
                "commit-without-ack",
                now,
                f"{node_id[:8]} committed round {decision.round} without an ack from "
                + ", ".join(missing),
            )

    def delivered(self, node_id: str, payload: object) -> None:
        message = _message(payload)
        if isinstance(message, Ack):
            self._acks.add((node_id, message.voter, message.round))

    def written(self, node_id: str, old: object, new: object, now: float) -> None:
        if not isinstance(new, PersistedState):
            return
        if new.released:
            self._released.setdefault(node_id, set()).update(new.released)
        if not isinstance(old, PersistedState) or old.vote is None or new.decision is not None:
            return
        held = old.vote
        if new.vote == held or held in self._released.get(held.proposer, ()):
            return
        self._report(
            "vote-dropped",
            now,
            f"{node_id[:8]} dropped its vote {held} for {new.vote}, never released by its proposer",
        )

    def _fail(self, kind: str, now: float, text: str, disk: object) -> None:
        held = disk.vote if isinstance(disk, PersistedState) else None
        self._report(kind, now, f"{text}; its disk holds vote {held}")


def _message(payload: object) -> object:
    """The message of a gossip payload (``(peer, message)``); ``None`` for anything else."""
    return payload[1] if isinstance(payload, tuple) and len(payload) == 2 else None
