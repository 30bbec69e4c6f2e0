"""Every random number of a run comes from one master seed, split by label.

``random.Random`` seeded with a ``str`` hashes it with SHA-512 (seed version 2), so the
streams below are the same in every process and on every platform, unlike ``hash()`` of a
string, which is salted per process. Each consumer gets its own labelled stream, so adding
a draw in one place (one node, the network, the scenario) does not shift any other stream.
"""

from __future__ import annotations

import hashlib
import random


def _label(seed: int, labels: tuple[object, ...]) -> str:
    return ":".join([str(seed), *(str(label) for label in labels)])


def derive_rng(seed: int, *labels: object) -> random.Random:
    """An independent generator for ``labels`` under the master ``seed``."""
    return random.Random(_label(seed, labels))


def derive_hex(seed: int, *labels: object, length: int = 32) -> str:
    """Stable hex characters for ``labels`` under ``seed`` (node ids, cluster ids)."""
    if not 0 < length <= 64:
        raise ValueError(f"length must be in 1..64, not {length}")
    return hashlib.sha256(_label(seed, labels).encode()).hexdigest()[:length]
