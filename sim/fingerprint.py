"""Content fingerprints of messages for the trace hash, computed fast.

A message's fingerprint is SHA-256 over a canonical text: ``repr`` of its primitive fields
(ints, strings, bools, bytes, ``None``; enums by value) and, for every nested dataclass
(the ``NodeRecord``s a Gossip relays, votes, decisions), that object's own fingerprint.
Nested objects are shared between many messages (a node relays the same record object to
many peers), so their fingerprints are memoized by identity for the life of one run; the
memo keeps each object alive, so an id is never reused while it is in the memo.
"""

from __future__ import annotations

import dataclasses
import hashlib
from enum import Enum
from typing import Any

_PRIMITIVES = frozenset({int, str, bool, bytes, float, type(None)})


class Fingerprinter:
    def __init__(self) -> None:
        self._memo: dict[int, tuple[object, str]] = {}
        self._fields: dict[type, tuple[str, ...]] = {}

    def of(self, payload: object) -> str:
        """Fingerprint of one payload (not memoized: top-level payloads are fresh)."""
        return hashlib.sha256(self._text(payload).encode()).hexdigest()[:16]

    def _nested(self, obj: object) -> str:
        hit = self._memo.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        digest = hashlib.sha256(self._text(obj).encode()).hexdigest()[:16]
        self._memo[id(obj)] = (obj, digest)
        return digest

    def _text(self, obj: object) -> str:
        kind = type(obj)
        if kind is tuple:
            return "(" + ",".join(self._part(item) for item in obj) + ")"  # type: ignore[attr-defined]
        names = self._fields.get(kind)
        if names is None:
            if not dataclasses.is_dataclass(obj):
                return repr(obj)
            names = self._fields[kind] = tuple(f.name for f in dataclasses.fields(obj))
        return kind.__name__ + "(" + ",".join(self._part(getattr(obj, n)) for n in names) + ")"

    def _part(self, value: Any) -> str:
        kind = type(value)
        if kind in _PRIMITIVES:
            return repr(value)
        if kind is tuple:
            return "(" + ",".join([self._part(item) for item in value]) + ")"
        hit = self._memo.get(id(value))
        if hit is not None and hit[0] is value:
            return "#" + hit[1]
        if isinstance(value, Enum):
            return repr(value.value)
        if dataclasses.is_dataclass(value):
            return "#" + self._nested(value)
        return repr(value)
