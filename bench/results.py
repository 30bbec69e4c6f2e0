"""Figures: per-run values, their summary, and the JSON file every command adds to.

A ``Series`` is one configuration measured over several runs, with up to two metrics per
run (``primary``: from the last process start, ``secondary``: from the last node ready).
Summaries are the median, the 90th percentile (nearest rank: with 10 runs the 9th value)
and the maximum; a run that failed (timed out, or decided wrongly) counts in ``failures``
and makes the worst case "> limit".
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RESULTS_PATH",
    "Series",
    "Summary",
    "load_results",
    "machine",
    "revision",
    "save_series",
    "summarize",
]

REPO = Path(__file__).resolve().parent.parent
RESULTS_PATH = REPO / "bench" / "results.json"


@dataclass(frozen=True, slots=True)
class Summary:
    runs: int
    median: float
    p90: float
    worst: float


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a measured run)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summarize(values: list[float]) -> Summary | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return Summary(len(ordered), median, percentile(ordered, 0.9), ordered[-1])


@dataclass(slots=True)
class Series:
    key: str
    """Stable id, e.g. ``decide/netns-mdns/n3/lan``: a rerun replaces the old figures."""
    label: str
    primary: list[float] = field(default_factory=list)
    secondary: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    limit: float = 0.0
    """Seconds after which a run counted as failed."""
    extra: dict[str, list[float]] = field(default_factory=dict)
    """More per-run figures (startup spread, in-node seconds, ...), for the notes."""
    notes: str = ""
    command: str = ""
    revision: str = ""
    date: str = ""
    machine: str = ""
    load_before: float = 0.0
    """1-minute load average just before the series (others' work on a shared machine)."""
    metrics: tuple[str, str] = ("from last start, s", "from ready, s")
    """Names of ``primary`` and ``secondary``."""

    def add_extra(self, name: str, value: float) -> None:
        self.extra.setdefault(name, []).append(value)

    def describe(self) -> str:
        parts = [f"{self.label}:"]
        for name, values in zip(self.metrics, (self.primary, self.secondary), strict=True):
            summary = summarize(values)
            if summary is not None:
                parts.append(
                    f"{name}: median {summary.median:.3f} p90 {summary.p90:.3f} "
                    f"max {summary.worst:.3f};"
                )
        parts.append(f"{len(self.primary)} ok, {len(self.failures)} failed")
        for name, values in sorted(self.extra.items()):
            summary = summarize(values)
            if summary is not None:
                parts.append(f"\n    {name}: median {summary.median:.3f} max {summary.worst:.3f}")
        for failure in self.failures[:5]:
            parts.append(f"\n    failed: {failure}")
        return " ".join(parts)


def revision() -> str:
    """``git rev-parse --short HEAD``, with ``+dirty`` when rancherd/ or bench/ differ."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "rancherd", "bench"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} vCPU ({model}), {memory:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def stamp(series: Series) -> Series:
    """Fill in how, where and when the series was made."""
    series.command = "python -m bench " + shlex.join(sys.argv[1:])
    series.revision = revision()
    series.date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    series.machine = machine()
    return series


def load_results(path: Path = RESULTS_PATH) -> dict[str, dict[str, Any]]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    if not isinstance(document, dict):
        raise TypeError(f"{path}: not a results file (a JSON object)")
    return document


def save_series(series: Series, path: Path = RESULTS_PATH) -> None:
    """Add (or replace, by key) ``series`` in the results file."""
    document = load_results(path)
    document[series.key] = asdict(series)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(document.items())), indent=1) + "\n")
    tmp.replace(path)


def series_from_dict(data: dict[str, Any]) -> Series:
    fields = dict(data)
    if "metrics" in fields:
        first, second = fields["metrics"]
        fields["metrics"] = (str(first), str(second))
    return Series(**fields)
