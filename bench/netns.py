"""The network namespaces of the mDNS benchmark: the test kit ``tests/netns.py``, reused.

``tests/`` is not a package, so the kit is loaded from its file. It builds a bridge
without multicast snooping or netfilter and, per namespace, a veth pair whose inner end is
``eth0`` with an address of a random free ``10.x.y.0/24``, ``lo`` up and a route for
``224.0.0.0/4``; everything is removed on exit, killing what still runs inside. Labs left
by dead processes (tests' or benchmarks') are cleaned up by the next one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["BenchNamespace", "bench_lab", "netns_unavailable_reason"]

_KIT = Path(__file__).resolve().parent.parent / "tests" / "netns.py"


def _load_kit() -> Any:
    name = "rancherd_netns_kit"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _KIT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the namespace kit from {_KIT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_kit = _load_kit()
BenchNamespace = _kit.Namespace
"""A namespace: ``name``, ``address``, ``command(args)``, ``pids()``."""


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be built here, or None."""
    reason: str | None = _kit.netns_unavailable_reason()
    return reason


@contextlib.contextmanager
def bench_lab(count: int) -> Iterator[list[Any]]:
    """``count`` namespaces on one bridge, removed (with their processes) on exit."""
    with _kit.netns_lab(count) as lab:
        yield list(lab.namespaces)
