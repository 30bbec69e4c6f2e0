"""The transmit-limited relay queue: records waiting to be relayed, each a limited number
of times (memberlist's ``queue.go``), ranked so that what elections wait for goes first.
"""

from __future__ import annotations

from dataclasses import dataclass

from rancherd.gossip.codec import estimate_record_size
from rancherd.gossip.messages import NodeId, NodeRecord, Role

__all__ = [
    "CHANGED_AGENT",
    "CHANGED_SERVER",
    "REFRESHED",
    "BroadcastQueue",
    "record_priority",
]

CHANGED_SERVER = 0
"""A server's record that says something new (view, vote, decision, ...): what elections
wait for, relayed first."""
CHANGED_AGENT = 1
REFRESHED = 2
"""A copy that only grew the heartbeat: it keeps the node alive in tables but changes
nothing else, so it goes last. Every node refreshes its record every tick; relayed at the
same rank as changes, refreshes of a hundred servers crowd out the one change an
agreement waits for."""


def record_priority(record: NodeRecord, old: NodeRecord | None) -> int:
    """The rank of ``record`` in the relay queue, given the copy it replaces."""
    if (
        old is not None
        and record.incarnation == old.incarnation
        and record.view_digest == old.view_digest
        and record.vote == old.vote
        and record.decision == old.decision
        and record.progress is old.progress
        and record.role is old.role
        and record.released == old.released
        and record.addresses == old.addresses
    ):
        return REFRESHED
    return CHANGED_SERVER if record.role is Role.SERVER else CHANGED_AGENT


@dataclass(slots=True)
class _Pending:
    record: NodeRecord
    priority: int
    """``CHANGED_SERVER``, ``CHANGED_AGENT`` or ``REFRESHED`` (see ``record_priority``)."""
    transmits: int
    seq: int
    size: int = -1
    """``estimate_record_size(record)``, computed when first needed."""


class BroadcastQueue:
    """Records waiting to be relayed, each a limited number of times (memberlist's queue).

    One pending version per node id: a fresher record replaces the older one and starts
    again at zero transmissions. ``take`` picks by (priority, transmits) ascending and newest
    first among equals. Each (priority, transmits) bucket is a stack with lazy deletion, so
    push and take are O(1) amortised instead of a sorted structure's O(log n); stale stack
    items are dropped when they surface and by an occasional compaction.
    """

    __slots__ = ("_changes", "_entries", "_levels", "_seq", "_stacked")

    def __init__(self) -> None:
        self._entries: dict[NodeId, _Pending] = {}
        # _levels[priority][transmits] is a stack of (seq, node_id), newest on top.
        self._levels: tuple[list[list[tuple[int, NodeId]]], ...] = ([], [], [])
        self._seq = 0
        self._stacked = 0
        self._changes = 0  # entries ranked above REFRESHED

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._entries

    @property
    def has_changes(self) -> bool:
        """Whether a record that says something new (not only a refresh) waits."""
        return self._changes > 0

    def push(self, record: NodeRecord, priority: int) -> None:
        """Queue ``record`` (replacing a pending older version of its node).

        A change starts again at zero transmissions. A refresh that replaces a pending
        change keeps the change's rank and the transmissions it has had: the newer copy
        carries that change too and must spread as fast, but only as long as the change
        would have (nodes refresh every tick, so restarting the count would keep every
        record ranked as news forever)."""
        self._seq = seq = self._seq + 1
        node_id = record.node_id
        pending = self._entries.get(node_id)
        if pending is None:
            self._entries[node_id] = _Pending(record, priority, 0, seq)
            self._changes += priority < REFRESHED
            transmits = 0
        else:
            if priority >= REFRESHED and pending.priority < REFRESHED:
                priority, transmits = pending.priority, pending.transmits
            else:
                self._changes += priority < REFRESHED <= pending.priority
                transmits = 0
            pending.record = record
            pending.priority = priority
            pending.transmits = transmits
            pending.seq = seq
            pending.size = -1
        self._stack_push(priority, transmits, seq, node_id)
        if self._stacked > 4 * len(self._entries) + 64:
            self._compact()

    def discard(self, node_id: NodeId) -> None:
        pending = self._entries.pop(node_id, None)
        if pending is not None:
            self._changes -= pending.priority < REFRESHED

    def take(
        self,
        count: int,
        byte_budget: int,
        limit: int,
        skip: NodeId | None = None,
        copies: int = 1,
    ) -> list[NodeRecord]:
        """Up to ``count`` records within ``byte_budget``, each counted as sent ``copies``
        times (one gossip tick sends the same records to every target)."""
        if count <= 0 or not self._entries:
            return []
        chosen: list[_Pending] = []
        used = 0
        full = False
        for levels in self._levels:
            self._trim_levels(levels, limit)
            for transmits, stack in enumerate(levels):
                full, taken = self._take_stack(
                    stack, transmits, skip, chosen, count, byte_budget - used
                )
                used += taken
                if full:
                    break
            if full:
                break
        for pending in reversed(chosen):  # oldest first, so the newest ends on top
            pending.transmits += copies
            node_id = pending.record.node_id
            if pending.transmits >= limit:
                self.discard(node_id)
            else:
                self._stack_push(pending.priority, pending.transmits, pending.seq, node_id)
        return [pending.record for pending in chosen]

    def _trim_levels(self, levels: list[list[tuple[int, NodeId]]], limit: int) -> None:
        """The limit shrank below these levels: what they hold is done."""
        if len(levels) <= limit:
            return
        entries = self._entries
        for stack in levels[limit:]:
            for _, node_id in stack:
                pending = entries.get(node_id)
                if pending is not None and pending.transmits >= limit:
                    self.discard(node_id)
            self._stacked -= len(stack)
        del levels[limit:]

    def _take_stack(
        self,
        stack: list[tuple[int, NodeId]],
        transmits: int,
        skip: NodeId | None,
        chosen: list[_Pending],
        count: int,
        room: int,
    ) -> tuple[bool, int]:
        """Move records of one stack (newest first) to ``chosen`` within ``room`` bytes;
        (whether ``count`` or the room was reached, the bytes taken)."""
        entries = self._entries
        used = 0
        full = False
        skipped: tuple[int, NodeId] | None = None
        while stack:
            seq, node_id = stack.pop()
            self._stacked -= 1
            pending = entries.get(node_id)
            if pending is None or pending.seq != seq or pending.transmits != transmits:
                continue  # superseded, removed or already moved on
            if node_id == skip:
                skipped = (seq, node_id)
                continue
            if pending.size < 0:
                pending.size = estimate_record_size(pending.record)
            if used + pending.size > room:
                stack.append((seq, node_id))
                self._stacked += 1
                full = True
                break
            chosen.append(pending)
            used += pending.size
            if len(chosen) >= count:
                full = True
                break
        if skipped is not None:
            stack.append(skipped)
            self._stacked += 1
        return full, used

    def _stack_push(self, priority: int, transmits: int, seq: int, node_id: NodeId) -> None:
        levels = self._levels[priority]
        while len(levels) <= transmits:
            levels.append([])
        levels[transmits].append((seq, node_id))
        self._stacked += 1

    def _compact(self) -> None:
        self._levels = ([], [], [])
        self._stacked = 0
        for node_id, pending in sorted(self._entries.items(), key=lambda item: item[1].seq):
            self._stack_push(pending.priority, pending.transmits, pending.seq, node_id)
