"""Error types of the gossip engine, split as h11 does: whose fault was it?"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of the engine's errors."""


class RemoteProtocolError(ProtocolError):
    """A peer sent something we reject. Drop the frame or the connection and go on serving."""


class LocalProtocolError(ProtocolError):
    """We misused the API (a bug in the caller, not in a peer)."""
