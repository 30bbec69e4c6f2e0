"""``python -m bench traffic`` still runs and prints its figures (benchmarks are not in CI:
this keeps the command from rotting). Three servers on MockClock take well under a second."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from click.testing import CliRunner

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:  # bench/ is not installed; ``python -m pytest`` has it anyway
    sys.path.insert(0, REPO)

from bench.cli import cli  # noqa: E402

KEYS = {
    "frames_per_node_per_s",
    "bytes_per_node_per_s",
    "decided_s",
    "nodes",
    "servers",
    "agents",
    "expected",
    "frames",
    "bytes",
}


def test_traffic_prints_one_json_object() -> None:
    result = CliRunner().invoke(cli, ["traffic", "--servers", "3", "--agents", "0", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document.keys() >= KEYS
    assert isinstance(document["decided_s"], float)
    assert 0 < document["decided_s"] <= 60
    assert document["nodes"] == 3
    assert document["frames"] > 0
    assert document["bytes"] > document["frames"]
