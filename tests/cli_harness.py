"""Running ``rancherd`` as a process in tests: the command lines and the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

ENV = {**os.environ, "RANCHERD_IMPLICIT_PATHS": ""}
"""The test's environment with no implicit config paths: only ``--config`` counts."""


def rancherd_argv(*args: str) -> list[str]:
    """``rancherd ARGS`` with this interpreter (the package under test)."""
    return [sys.executable, "-m", "rancherd", *args]


def discover_argv(
    config: Path, data_dir: Path, *, wait: float = 30, linger: float = 0
) -> list[str]:
    """``rancherd discover --json``; ``wait`` is its ``--timeout`` for a decision."""
    return rancherd_argv(
        "discover",
        "--config",
        str(config),
        "--data-dir",
        str(data_dir),
        "--json",
        "--timeout",
        str(wait),
        "--linger",
        str(linger),
    )


async def captured(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` in ``ENV`` to its end, its stdout and stderr kept, its exit code not
    checked."""
    return await trio.run_process(
        argv, capture_stdout=True, capture_stderr=True, check=False, env=ENV
    )
