"""``python -m bench.node_shim ARGS``: ``rancherd ARGS`` whose outbound TCP connections
leave from ``$RDBENCH_SOURCE_ADDRESS``, as a real machine's leave from its own address.

Why: on loopback the kernel picks 127.0.0.1 as the source of every connection, whatever
127.0.0.x the node listens on, so every node's connections arrive from one address and the
transport's ``max_connections_per_address`` (8) refuses all but the first few: a fleet of
more than about nine nodes on loopback never converges. Binding the source address is
exactly what separate machines (or network namespaces) have, so the measured code paths
are the production ones. Without the variable this is plain ``rancherd``.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import trio


def _bind_outbound(source: str) -> None:
    original = trio.open_tcp_stream

    @functools.wraps(original)
    async def open_tcp_stream(host: str | bytes, port: int, **kwargs: Any) -> trio.SocketStream:
        kwargs.setdefault("local_address", source)
        return await original(host, port, **kwargs)

    trio.open_tcp_stream = open_tcp_stream  # type: ignore[assignment,unused-ignore]


def main() -> None:
    source = os.environ.get("RDBENCH_SOURCE_ADDRESS")
    if source:
        _bind_outbound(source)
    from rancherd.cli import main as rancherd_main

    sys.argv[0] = "rancherd"
    rancherd_main()


if __name__ == "__main__":
    main()
