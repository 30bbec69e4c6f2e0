"""Scenario files: every built-in one loads, and mistakes are reported precisely."""

from __future__ import annotations

import pytest

from sim.dists import Exponential, Fixed, LogNormal, Uniform
from sim.faults import Crash, Partition
from sim.scenario import (
    ScenarioError,
    load,
    load_text,
    parse_override,
    scenario_names,
)


def _errors(text: str, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        load_text(text, "bad.yaml", overrides)
    return list(caught.value.errors)


@pytest.mark.parametrize("name", scenario_names())
def test_every_builtin_scenario_loads(name: str) -> None:
    scenario = load(name)
    assert scenario.name == name
    assert scenario.description
    assert scenario.source == f"sim/scenarios/{name}.yaml"


def test_defaults_and_node_names() -> None:
    scenario = load_text("nodes: {servers: 2, agents: 1, late: [{count: 1, at: 5}]}", "x.yaml")
    assert scenario.expected_servers == 3
    assert scenario.server_cache_duration == 60.0
    assert scenario.discovery_cache == 60.0
    assert [(s.name, s.role, s.late) for s in scenario.node_specs()] == [
        ("s0", "server", False),
        ("s1", "server", False),
        ("s2", "server", True),
        ("a0", "agent", False),
    ]


def test_distributions_and_faults_parse() -> None:
    scenario = load_text(
        """
nodes: {servers: 3, boot: {uniform: [0, 10]}}
network: {latency: {lognormal: [0.001, 0.5]}}
disk: {fsync: {exponential: 0.01}}
clock: {spread: {uniform: [-3600, 3600]}}
faults:
  - partition: {groups: [[s0], [s1, s2]], start: 1, end: {uniform: [5, 6]}}
  - crash: {node: random-server, at: 3, wipe: true}
""",
        "ok.yaml",
    )
    assert scenario.nodes.boot == Uniform(0.0, 10.0)
    assert scenario.network.latency == LogNormal(0.001, 0.5)
    assert scenario.fsync == Exponential(0.01)
    assert scenario.clock.spread == Uniform(-3600.0, 3600.0)
    partition, crash = scenario.faults
    assert partition == Partition((("s0",), ("s1", "s2")), Fixed(1.0), Uniform(5.0, 6.0))
    assert crash == Crash("random-server", Fixed(3.0), None, True)


def test_unknown_keys_are_reported_with_file_line_and_key() -> None:
    errors = _errors("nodes:\n  servers: 3\n  severs: 4\ndiscovry: {loss: 0.1}\n")
    assert "bad.yaml:3: nodes.severs: unknown key" in errors[0]
    assert "bad.yaml:4: discovry: unknown key" in errors[1]


def test_every_error_is_collected_at_once() -> None:
    errors = _errors(
        """
expected_servers: 0
duration: -1
nodes: {servers: three}
network: {loss: 1.5}
discovery: {window: 10, query_interval: 5}
"""
    )
    text = "\n".join(errors)
    assert "expected_servers: must be >= 1" in text
    assert "duration: must be > 0.0" in text
    assert "nodes.servers: expected an integer, got the string 'three'" in text
    assert "network.loss: must be <= 1.0" in text
    assert "discovery.window: must not exceed discovery.query_interval" in text
    assert len(errors) == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nodes: {servers: 3}\nallow_split: yes\n", "allow_split: write true or false"),
        ("nodes: {servers: 3}\nallow_split: on\n", "allow_split: write true or false"),
        ("nodes: {servers: 0123}\n", "nodes.servers: '0123' is not a plain decimal number"),
        ("nodes: {servers: 3}\nnodes: {servers: 4}\n", "bad.yaml:2: nodes: duplicate key"),
        ("nodes: {servers: 3}\nduration: 2024-01-01\n", "read as timestamp; quote it"),
        ("nodes: {servers: 3}\nduration: .inf\n", "duration: '.inf' is not a"),
        (
            "nodes: {servers: 3, boot: {normal: [1, 2]}}\n",
            "nodes.boot.normal: unknown distribution",
        ),
        ("nodes: {servers: 3, boot: {uniform: [5, 1]}}\n", "expected 0 <= low <= high"),
        ("nodes: {servers: 3, boot: {uniform: [-1, 1]}}\n", "expected 0 <= low <= high"),
        ("nodes: {servers: 3, boot: true}\n", "nodes.boot: expected a number or a distribution"),
        ("nodes: {agents: 3}\n", "nodes.servers: required"),
        ("nodes: {servers: 0, agents: 2}\n", "a fleet needs at least one server"),
        ("nodes: {servers: 3}\nfaults:\n  - flood: {}\n", "faults[0]: unknown fault 'flood'"),
        ("nodes: {servers: 3}\nfaults:\n  - crash: {node: s9, at: 1}\n", "unknown node 's9'"),
        ("nodes: {servers: 3}\nfaults:\n  - crash: {node: s0}\n", "faults[0].crash.at: required"),
        (
            "nodes: {servers: 3}\nfaults:\n  - partition: {groups: [[s0, s1], [s1, s2]]}\n",
            "nodes in two groups: s1",
        ),
        (
            "nodes: {servers: 3}\nfaults:\n  - partition: {groups: [[s0]]}\n",
            "at least two groups",
        ),
        ("nodes: {servers: 3}\nfaults:\n  - hold: {from: s0, to: s1}\n", "hold.end: required"),
        (
            "nodes: {servers: 3}\nfaults:\n  - crash: {node: random-agentt, at: 1}\n",
            "unknown node 'random-agentt'",
        ),
        ("nodes: {servers: 3}\nclassic: {answering: all}\n", "expected one of init, servers"),
        ("nodes: {servers: 3}\ngossip: {preset: wan}\n", "expected one of sim, lan, local"),
        ("nodes: {servers: 3}\ndiscovery: {burst: {enter: 0.1}}\n", "burst.leave: required"),
        ("nodes: {servers: 3}\nclock: {offsets: {s7: 10}}\n", "clock.offsets.s7: unknown key"),
        ("- just\n- a list\n", "the scenario must be a mapping"),
        ("nodes: [servers, 3\n", "bad.yaml"),
    ],
)
def test_invalid_scenarios_are_refused_clearly(text: str, message: str) -> None:
    joined = "\n".join(_errors(text))
    assert message in joined


def test_overrides_apply_before_validation_and_are_remembered() -> None:
    scenario = load("happy-n3", ["discovery.loss=0.5", "nodes.servers=4", "faults=[]"])
    assert scenario.discovery.loss == 0.5
    assert scenario.nodes.servers == 4
    assert scenario.overrides == ("discovery.loss=0.5", "nodes.servers=4", "faults=[]")
    failed = "\n".join(_errors("nodes: {servers: 3}\n", ("discovery.loss=2",)))
    assert "discovery.loss: must be <= 1.0" in failed
    assert parse_override("a.b=[1, 2]") == (("a", "b"), [1, 2])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("discovery.loss", "expected KEY.PATH=VALUE"),
        ("=3", "expected KEY.PATH=VALUE"),
        ("allow_split=yes", "write true or false"),
        ("faults.3.end=1", "no list item '3'"),
    ],
)
def test_bad_overrides(override: str, message: str) -> None:
    assert message in "\n".join(_errors("nodes: {servers: 3}\nfaults: []\n", (override,)))


def test_unknown_scenario_names_list_the_builtins() -> None:
    with pytest.raises(ScenarioError, match="built-in scenarios: agents-100"):
        load("no-such-scenario")
