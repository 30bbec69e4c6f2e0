"""Host and ``host:port`` text, written one way everywhere (memberlist's ``util.go``
``joinHostPort`` is the model): an IPv6 literal goes in brackets wherever a port or a URL
follows it."""

from __future__ import annotations

__all__ = ["bracketed"]


def bracketed(host: str) -> str:
    """``host`` as a URL or ``Host:`` header writes it: an IPv6 literal in brackets."""
    return f"[{host}]" if ":" in host else host
