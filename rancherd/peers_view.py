"""``rancherd peers``: a running node's snapshot (the JSON the control socket sends) and
its rendering as text: the status line and the table of peers."""

from __future__ import annotations

from typing import Any

from rancherd.gossip.core import PeerInfo, Status
from rancherd.gossip.messages import Decision
from rancherd.state import decision_json, vote_json

__all__ = ["UNANSWERED_NOTE", "WatchScreen", "peer_json", "render", "status_json"]

UNANSWERED_NOTE = "no answer: not a rancherd, another token, or a firewall"
"""Why a discovered address may stay silent, for the operator to go and look."""
_REDRAW = "\x1b[H\x1b[J"
"""Cursor home, clear to the end of the screen: the next frame replaces the last."""

_COLUMNS = ("NODE", "ROLE", "STATE", "ADDRESSES", "HEARD", "LEARNED", "AGREES", "PROGRESS")


def status_json(status: Status) -> dict[str, Any]:
    """A node's status in a snapshot."""
    return {
        "phase": str(status.phase),
        "text": status.text,
        "node_id": status.node_id,
        "role": status.role.name.lower(),
        "expected_servers": status.expected_servers,
        "view": list(status.view),
        "waiting_for": list(status.waiting_for),
        "vote": None if status.vote is None else vote_json(status.vote),
        "decision": None if status.decision is None else decision_json(status.decision),
        "split": status.split,
        "duplicate_id": status.duplicate_id,
    }


def peer_json(peer: PeerInfo, decision: Decision | None) -> dict[str, Any]:
    """One peer in a snapshot; ``decision`` is ours (for ``same_decision``)."""
    return {
        "node_id": peer.node_id,
        "role": peer.role.name.lower(),
        "addresses": list(peer.addresses),
        "state": "alive" if peer.alive else "expired",
        "last_heard": round(peer.last_heard, 3),
        "learned": peer.learned,
        "agrees": peer.agrees,
        "vote": None if peer.vote is None else vote_json(peer.vote),
        "decision": None if peer.decision is None else decision_json(peer.decision),
        "same_decision": decision is not None and peer.decision == decision,
        "progress": peer.progress.name.lower(),
    }


def _short(node_id: str) -> str:
    return node_id[:12]


def _ago(seconds: float) -> str:
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _heard(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms ago"
    if seconds < 120:
        return f"{seconds:.1f}s ago"
    return f"{seconds / 60:.0f}m ago"


def _agrees(peer: dict[str, Any], decided: bool) -> str:
    if decided:
        return "yes" if peer.get("same_decision") else "no"
    return "yes" if peer.get("agrees") else "no"


def render(snapshot: dict[str, Any]) -> str:
    """The status line, then one row per peer (``AGREES``: same view, or once decided,
    same decision)."""
    node = snapshot.get("node") or {}
    status = snapshot.get("status") or {}
    peers = snapshot.get("peers") or []
    unanswered = snapshot.get("unanswered") or []
    node_id = str(node.get("node_id") or "?")
    lines = [
        f"node {_short(node_id)} ({node.get('role', '?')}), up {node.get('uptime', 0):.1f}s",
        f"status: {status.get('text', 'starting')}",
    ]
    if not peers and not unanswered:
        lines.append("no peers known yet")
        return "\n".join(lines) + "\n"
    decided = status.get("decision") is not None
    rows = [_COLUMNS]
    notes: list[str] = []
    for peer in peers:
        rows.append(
            (
                _short(str(peer.get("node_id", "?"))),
                str(peer.get("role", "?")),
                str(peer.get("state", "?")),
                " ".join(peer.get("addresses") or []) or "-",
                _heard(float(peer.get("last_heard", 0))),
                str(peer.get("learned", "?")),
                _agrees(peer, decided),
                str(peer.get("progress", "?")),
            )
        )
    for row in unanswered:
        ago = _ago(float(row.get("discovered_ago", 0)))
        rows.append(
            ("?", "?", "no answer", str(row.get("address", "?")), "never", "discovery", "-", "-")
        )
        notes.append(f"{row.get('address', '?')}: discovered {ago}, {UNANSWERED_NOTE}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines.append("")
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines) + "\n"


class WatchScreen:
    """What ``peers --watch`` writes for each snapshot: on a terminal each frame replaces
    the last (cursor home, clear); piped, frames are appended, a blank line apart."""

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self._frames = 0

    def frame(self, snapshot: dict[str, Any], now: str) -> str:
        body = f"{now}  {render(snapshot)}"
        self._frames += 1
        if self.terminal:
            return _REDRAW + body
        return body if self._frames == 1 else "\n" + body

    def stopped(self, snapshot: dict[str, Any] | None, now: str) -> str:
        """The last words, after the node closed the socket: the status above is stale."""
        node_id = _short(str(((snapshot or {}).get("node") or {}).get("node_id") or "?"))
        return (
            f"{now}  node {node_id} stopped (its control socket closed): the status above "
            "is its last; see journalctl -u rancherd\n"
        )
