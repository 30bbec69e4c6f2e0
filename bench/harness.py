"""The test suite's fleet builder, for benchmarks: ``tests/driver_harness.py``.

Benchmarks and integration tests build in-memory fleets the same way (real ``GossipCore``
+ ``Driver`` + ``Links`` + sealing over ``MemoryTransport``), so the figures measure what
the tests exercise. The harness stays in ``tests/`` (the tests import it as a top-level
module); this module puts ``tests/`` on the path once and re-exports what benchmarks use.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from driver_harness import (  # type: ignore[import-not-found,unused-ignore]  # noqa: E402
    Fleet,
    TestNode,
    fleet,
    frames_per_node_second_at_rest,
)

__all__ = ["Fleet", "TestNode", "fleet", "frames_per_node_second_at_rest"]
