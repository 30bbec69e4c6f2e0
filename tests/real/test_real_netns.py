"""Tier 3: ``rancherd discover`` over mDNS, one process per network namespace.

Each node runs in its own namespace on a bridge the test creates (``netns.py``), with the
production config shape: ``provider=mdns service=rancher-server``, listening on
``0.0.0.0:8443`` and advertising its interface address. Needs root and ``ip``; skips with
the reason elsewhere.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
from cli_harness import ENV, discover_argv
from netns import Lab, Namespace, netns_lab, skip_unless_netns

pytestmark = pytest.mark.real

TOKEN = "netns test token"


@pytest.fixture
def lab5() -> Iterator[Lab]:
    skip_unless_netns()
    with netns_lab(5) as lab:
        yield lab


def mdns_config(path: Path, *, expected: int, token: str = TOKEN) -> Path:
    path.write_text(
        "role: server\n"
        f"token: {json.dumps(token)}\n"
        "discovery:\n"
        "  params:\n"
        "    provider: mdns\n"
        "    service: rancher-server\n"
        f"  expectedServers: {expected}\n"
    )
    return path


async def discover(
    namespace: Namespace,
    config: Path,
    data_dir: Path,
    *,
    wait: float = 30,
    linger: float = 0,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``discover`` to completion; ``wait`` is its ``--timeout`` for a decision."""
    argv = discover_argv(config, data_dir, wait=wait, linger=linger)
    return await namespace.run_process(
        argv, capture_stdout=True, capture_stderr=True, check=False, env=ENV
    )


def decided(result: subprocess.CompletedProcess[bytes]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


@pytest.mark.parametrize("count", [3, 5])
async def test_mdns_nodes_in_namespaces_elect_one_init(
    lab5: Lab, tmp_path: Path, count: int
) -> None:
    config = mdns_config(tmp_path / "config.yaml", expected=count)
    results: dict[int, subprocess.CompletedProcess[bytes]] = {}

    async def run(index: int) -> None:
        results[index] = await discover(
            lab5.namespaces[index], config, tmp_path / f"d{index}", wait=40
        )

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(run, index)
    outcomes = [decided(results[i]) for i in range(count)]
    assert len({o["cluster_id"] for o in outcomes}) == 1
    inits = [i for i, o in enumerate(outcomes) if o["role"] == "cluster-init"]
    assert len(inits) == 1
    init_address = lab5.namespaces[inits[0]].address
    joiners = [o for o in outcomes if o["role"] != "cluster-init"]
    assert {o["server_url"] for o in joiners} == {f"https://{init_address}:6443"}


async def test_late_node_joins_and_wrong_token_is_never_counted(lab5: Lab, tmp_path: Path) -> None:
    """Three servers decide while an intruder (wrong token, the smallest node id) runs
    beside them; a fourth server started 30 s later learns the decision and joins it."""
    config = mdns_config(tmp_path / "config.yaml", expected=3)
    wrong = mdns_config(tmp_path / "wrong.yaml", expected=3, token="a guess")
    intruder_dir = tmp_path / "intruder"
    intruder_dir.mkdir(mode=0o700)
    (intruder_dir / "node-id").write_text("0" * 32 + "\n")
    ns = lab5.namespaces
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def run(name: str, namespace: Namespace, path: Path, **kwargs: float) -> None:
        results[name] = await discover(namespace, path, tmp_path / name, **kwargs)

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for index in range(3):
                server = partial(run, f"s{index}", ns[index], config, wait=40, linger=45)
                nursery.start_soon(server)
            nursery.start_soon(partial(run, "intruder", ns[3], wrong, wait=15))
            await trio.sleep(30)  # the scenario: a node booted 30 s after the others
            nursery.start_soon(partial(run, "late", ns[4], config, wait=30))
    servers = [decided(results[f"s{i}"]) for i in range(3)]
    (cluster,) = {o["cluster_id"] for o in servers}
    assert all(o["init_node"] != "0" * 32 for o in servers)
    late = decided(results["late"])
    assert late["cluster_id"] == cluster
    assert late["role"] == "server"
    assert late["init_node"] == servers[0]["init_node"]
    intruder = results["intruder"]
    assert intruder.returncode == 1
    assert b"have 1 of 3 servers" in intruder.stderr
