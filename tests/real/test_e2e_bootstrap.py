"""Tier 3, end to end: ``rancherd bootstrap --root`` in network namespaces, over mDNS.

Each node is a real ``python -m rancherd bootstrap`` process in its own namespace on a
bridge the test creates (``netns.py``), with its own root and data dir in ``tmp_path``
and the production config shape (mdns ``rancher-server``, ``expectedServers: 3``). The
runtime is the fake one (``fake_runtime/``), inside each node's root (under ``--root``
rancherd runs nothing of the host's): the fake ``install.sh`` takes a second, the
fake ``systemctl enable --now k3s.service`` starts ``fake_runtime.server`` in the node's
namespace (``/cacerts`` and ``/readyz`` on :6443, ``/healthz`` on :10248, one cluster CA
for the whole test), and both append to one event log so the test can order what
happened across nodes. The token is a K10 token carrying that CA's hash, so the joiners'
CA check compares for real. Needs root and ``ip``; skips with the reason elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from fake_runtime import (
    ROOT_INSTALL_SCRIPT,
    TESTS_DIR,
    Event,
    make_tls,
    populate_root,
    read_events,
    running,
)
from netns import Lab, Namespace, netns_lab, skip_unless_netns, stop_process

from rancherd.install.builders import PlanOptions
from rancherd.install.cacerts import format_k10

DROP_IN = Path("etc/rancher/k3s/config.yaml.d/40-rancherd.yaml")
POLL = 0.1
"""Seconds between looks at the files the nodes write (every wait is bounded)."""
STOP_GRACE = 30.0
"""Seconds a node may take to exit after SIGTERM (under load, interpreter exit is slow)."""
DECIDE_AND_INSTALL = 120.0
"""Seconds for the three servers to decide and install (12 s from the first node id to
the last done stamp, measured twice on an idle 2-core machine; the limits are generous
because other work may load the machine: no speed is asserted)."""
INSTALL_SECONDS = 1
"""How long the fake install takes: long enough that overlapping joins would show."""
READY_SECONDS = 1
"""How long a fake runtime's ``/readyz`` answers 503 after it started (it already serves
``/cacerts``, as k3s does): a joiner that did not wait for the init node's READY would
install inside that window (the probes retry every 2 s)."""


def test_plan_options_read_systemctl_from_env() -> None:
    assert PlanOptions.from_env({"RANCHERD_SYSTEMCTL": "/fake/systemctl"}).systemctl == (
        "/fake/systemctl"
    )
    assert PlanOptions.from_env({}).systemctl == "systemctl"
    assert PlanOptions.from_env({"RANCHERD_SYSTEMCTL": ""}).systemctl == "systemctl"


@pytest.fixture
def lab4() -> Iterator[Lab]:
    skip_unless_netns()
    with netns_lab(4) as lab:
        yield lab


@dataclass
class Boot:
    """One node: its namespace, its files, and its bootstrap process once started."""

    name: str
    namespace: Namespace
    root: Path
    data_dir: Path
    log: Path
    process: trio.Process | None = None

    @property
    def address(self) -> str:
        return self.namespace.address

    def done(self) -> dict[str, Any] | None:
        try:
            stamp = json.loads((self.data_dir / "done.json").read_text())
        except FileNotFoundError:
            return None
        assert isinstance(stamp, dict)
        return stamp

    def drop_in(self) -> dict[str, Any]:
        document = yaml.safe_load((self.root / DROP_IN).read_text())
        assert isinstance(document, dict)
        return document

    def finished_at(self) -> float:
        stamp = self.done()
        assert stamp is not None, f"{self.name} has no done stamp"
        return float(stamp["finished_at"])

    def node_id(self) -> str:
        return (self.data_dir / "node-id").read_text().strip()

    def install_runs(self) -> int:
        runs = self.root / "fake" / "install-runs"
        return len(runs.read_text().splitlines()) if runs.exists() else 0

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


def make_boots(lab: Lab, tmp_path: Path) -> list[Boot]:
    """One node per namespace, each with a root the fakes run in (``populate_root``)."""
    return [
        Boot(
            f"n{i}",
            ns,
            populate_root(tmp_path / f"root-{i}"),
            tmp_path / f"data-{i}",
            tmp_path / f"n{i}.log",
        )
        for i, ns in enumerate(lab.namespaces)
    ]


def describe(boots: list[Boot]) -> str:
    """The end of every node's output, for a failing assertion."""
    return "\n".join(f"--- {boot.name} ({boot.address}) ---\n{boot.tail()}" for boot in boots)


async def start(boot: Boot, config: Path, env: dict[str, str]) -> None:
    argv = [
        sys.executable,
        "-m",
        "rancherd",
        "bootstrap",
        "--config",
        str(config),
        "--data-dir",
        str(boot.data_dir),
        "--root",
        str(boot.root),
    ]
    with boot.log.open("ab") as log:  # the child keeps its own descriptor
        boot.process = await boot.namespace.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**env, "FAKE_NODE": boot.name, "FAKE_NODE_ADDRESS": boot.address},
        )


async def wait_until(what: str, check: Any, boots: list[Boot], limit: float) -> None:
    """Poll ``check()`` until true, at most ``limit`` seconds; fail at once, with every
    node's output, when a node's process exited or the time is up."""
    with trio.move_on_after(limit) as scope:
        while not check():
            for boot in boots:
                if boot.process is not None and boot.process.returncode is not None:
                    pytest.fail(
                        f"waiting for {what}: {boot.name} exited with "
                        f"{boot.process.returncode}\n{describe(boots)}"
                    )
            await trio.sleep(POLL)
    if scope.cancelled_caught:
        pytest.fail(f"waiting for {what}: not within {limit:g}s\n{describe(boots)}")


async def stop_all(boots: list[Boot]) -> dict[str, int]:
    """SIGTERM every node at once; their exit statuses."""
    statuses: dict[str, int] = {}

    async def stop(boot: Boot) -> None:
        assert boot.process is not None
        statuses[boot.name] = await stop_process(boot.process, grace=STOP_GRACE)

    async with trio.open_nursery() as nursery:
        for boot in boots:
            nursery.start_soon(stop, boot)
    return statuses


def kill_fake_runtimes(boots: list[Boot]) -> list[int]:
    """SIGTERM the fake runtimes the fake systemctl left running; their pids."""
    pids = []
    for boot in boots:
        pid_file = boot.root / "fake" / "server.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
    return pids


def events_of(events: list[Event], node: str, name: str) -> list[float]:
    return [event.time for event in events if event.node == node and event.name == name]


def fleet(tmp_path: Path, lab: Lab, label: str) -> tuple[str, Path, dict[str, str]]:
    """What every node of a fleet shares: a K10 token of the fake runtime's CA (made for
    the lab's addresses), a config (mDNS, 3 expected servers) and the environment that runs
    the fake runtime from each node's own root."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    tls = make_tls(tmp_path / "tls", addresses=[ns.address for ns in lab.namespaces])
    token = format_k10(tls.ca_pem, label)
    config = tmp_path / "config.yaml"
    config.write_text(
        "role: server\n"
        f"token: {json.dumps(token)}\n"
        "kubernetesVersion: v1.31.4+k3s1\n"
        "discovery:\n"
        "  params:\n"
        "    provider: mdns\n"
        "    service: rancher-server\n"
        "  expectedServers: 3\n"
    )
    env = {
        **os.environ,
        "RANCHERD_IMPLICIT_PATHS": "",
        "RANCHERD_INSTALL_SCRIPT": ROOT_INSTALL_SCRIPT,  # in each root, as is systemctl
        "FAKE_RUNTIME_TESTS": str(TESTS_DIR),
        "FAKE_RUNTIME_TLS": str(tls.directory),
        "FAKE_RUNTIME_SERVE": "1",
        "FAKE_RUNTIME_PYTHON": sys.executable,
    }
    return token, config, env


@pytest.mark.real
async def test_three_servers_boot_one_cluster_and_a_late_fourth_joins(
    lab4: Lab, tmp_path: Path
) -> None:
    token, config, env = fleet(tmp_path, lab4, "e2e test token")
    event_log = tmp_path / "events.log"
    env |= {
        "FAKE_EVENT_LOG": str(event_log),
        "FAKE_INSTALL_SECONDS": str(INSTALL_SECONDS),
        "FAKE_RUNTIME_READY_SECONDS": str(READY_SECONDS),
    }
    boots = make_boots(lab4, tmp_path)
    servers, late = boots[:3], boots[3]
    try:
        with trio.fail_after(DECIDE_AND_INSTALL + 4 * STOP_GRACE + 240):  # a backstop
            for boot in servers:
                await start(boot, config, env)
            await wait_until(
                "the done stamps", lambda: all(b.done() for b in servers), boots, DECIDE_AND_INSTALL
            )
            init, joiners = check_first_three(servers, read_events(event_log), token, boots)

            # A rerun after the done stamp goes straight to the beacon: no install again.
            restarted = joiners[-1]
            assert await stop_all([restarted]) == {restarted.name: 0}, describe(boots)
            await start(restarted, config, env)
            await wait_until(
                "the restarted node's beacon",
                lambda: "done stamp found" in restarted.output(),
                boots,
                60,
            )
            assert restarted.install_runs() == 1

            # A node booted after the beacons are up learns the decision and joins.
            await start(late, config, env)
            await wait_until("the late node's done stamp", late.done, boots, 120)
            late_config = late.drop_in()
            assert late_config["server"] == f"https://{init.address}:6443", describe(boots)
            assert late_config["token"] == token
            late_stamp = late.done()
            assert late_stamp is not None
            assert late_stamp["role"] == "server"
            init_stamp = init.done()
            assert init_stamp is not None
            assert late_stamp["cluster_id"] == init_stamp["cluster_id"]
            assert all(boot.install_runs() == 1 for boot in boots)
            assert restarted.process is not None
            assert restarted.process.returncode is None, "a beacon stays up"

            statuses = await stop_all(boots)
            assert statuses == {boot.name: 0 for boot in boots}, describe(boots)
    finally:
        for boot in boots:
            if boot.process is not None:
                await stop_process(boot.process)
        pids = kill_fake_runtimes(boots)
        with contextlib.suppress(pytest.fail.Exception):
            await wait_until("the fake runtimes' exit", lambda: not any(map(running, pids)), [], 10)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def check_first_three(
    servers: list[Boot], events: list[Event], token: str, boots: list[Boot]
) -> tuple[Boot, list[Boot]]:
    """One init node, two joiners of it, the joins in order; the init node and the
    joiners in node-id order."""
    context = describe(boots)
    stamps = {boot.name: boot.done() or {} for boot in servers}
    configs = {boot.name: boot.drop_in() for boot in servers}
    for boot in servers:
        assert (boot.root / DROP_IN).stat().st_mode & 0o777 == 0o600
        assert configs[boot.name]["token"] == token
    inits = [boot for boot in servers if configs[boot.name].get("cluster-init") is True]
    assert len(inits) == 1, context
    (init,) = inits
    assert "server" not in configs[init.name]
    joiners = [boot for boot in servers if boot is not init]
    for boot in joiners:
        assert "cluster-init" not in configs[boot.name]
        assert configs[boot.name]["server"] == f"https://{init.address}:6443", context
    (cluster_id,) = {stamp["cluster_id"] for stamp in stamps.values()}
    assert cluster_id is not None
    assert {name: stamp["role"] for name, stamp in stamps.items()} == {
        boot.name: "cluster-init" if boot is init else "server" for boot in servers
    }

    # The init node installs and starts its runtime first; it is ready (done stamp, then
    # READY in gossip) before any joiner installs; the joiners install one at a time, in
    # node-id order.
    log = "\n".join(f"{e.time:.3f} {e.node} {e.name}" for e in events)
    for boot in servers:
        for name in ("install-start", "install-end", "service-start"):
            assert len(events_of(events, boot.name, name)) == 1, log
    (init_started,) = events_of(events, init.name, "service-start")
    first, second = sorted(joiners, key=Boot.node_id)
    (first_begin,) = events_of(events, first.name, "install-start")
    (first_end,) = events_of(events, first.name, "service-start")
    (second_begin,) = events_of(events, second.name, "install-start")
    assert init_started < init.finished_at() < first_begin, log
    assert first_end < first.finished_at() < second_begin, f"the joins overlap:\n{log}"
    return init, [first, second]
