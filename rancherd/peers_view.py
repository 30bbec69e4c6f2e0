"""``rancherd peers``: a running node's status line and its table of peers, as text."""

from __future__ import annotations

from typing import Any

__all__ = ["render"]

_COLUMNS = ("NODE", "ROLE", "STATE", "ADDRESSES", "HEARD", "LEARNED", "AGREES", "PROGRESS")


def _short(node_id: str) -> str:
    return node_id[:12]


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
    node_id = str(node.get("node_id") or "?")
    lines = [
        f"node {_short(node_id)} ({node.get('role', '?')}), up {node.get('uptime', 0):.1f}s",
        f"status: {status.get('text', 'starting')}",
    ]
    if not peers:
        lines.append("no peers known yet")
        return "\n".join(lines) + "\n"
    decided = status.get("decision") is not None
    rows = [_COLUMNS]
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
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines.append("")
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
