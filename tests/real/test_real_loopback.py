"""Tier 3: real ``rancherd discover`` processes on loopback (127.0.0.x), static discovery.

No root needed: every address is on ``lo``. Each process is bounded by ``--timeout`` and
each test by ``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytest
import trio
import wsproto
import wsproto.events
from cli_harness import ENV, captured, discover_argv, rancherd_argv

from rancherd.demo import free_port

pytestmark = pytest.mark.real

TOKEN = "loopback test token"


def write_config(
    path: Path,
    host: str,
    port: int,
    peers: Sequence[str],
    *,
    expected: int,
    token: str = TOKEN,
    role: str = "server",
) -> Path:
    addrs = " ".join(f"{peer}:{port}" for peer in peers)
    path.write_text(
        f"role: {role}\n"
        f"token: {json.dumps(token)}\n"
        f"address: {host}\n"
        "discovery:\n"
        f"  params: {json.dumps(f'provider=static addrs={json.dumps(addrs)}')}\n"
        f"  expectedServers: {expected}\n"
        f"  listenAddress: {host}\n"
        f"  port: {port}\n"
        "  preset: local\n"
    )
    return path


class Fleet:
    def __init__(self, tmp_path: Path, count: int, *, expected: int | None = None) -> None:
        self.tmp_path = tmp_path
        self.hosts = [f"127.0.0.{i + 1}" for i in range(count)]
        self.port = free_port(self.hosts, first=20000 + os.getpid() % 20000)
        self.expected = expected or count

    def config(self, index: int, *, token: str = TOKEN, role: str = "server") -> Path:
        return write_config(
            self.tmp_path / f"n{index}.yaml",
            self.hosts[index],
            self.port,
            self.hosts,
            expected=self.expected,
            token=token,
            role=role,
        )

    def data_dir(self, index: int) -> Path:
        return self.tmp_path / f"d{index}"


async def run_all(argvs: list[list[str]]) -> list[subprocess.CompletedProcess[bytes]]:
    results: list[subprocess.CompletedProcess[bytes] | None] = [None] * len(argvs)

    async def one(index: int) -> None:
        results[index] = await captured(argvs[index])

    async with trio.open_nursery() as nursery:
        for index in range(len(argvs)):
            nursery.start_soon(one, index)
    return [r for r in results if r is not None]


def outcomes(results: list[subprocess.CompletedProcess[bytes]]) -> list[dict[str, object]]:
    for result in results:
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        # One line per state change, and never the token.
        assert TOKEN.encode() not in result.stderr + result.stdout
        assert b"decided: " in result.stderr
    return [json.loads(r.stdout) for r in results]


@pytest.mark.parametrize("count", [3, 5])
async def test_discover_processes_elect_exactly_one_init(tmp_path: Path, count: int) -> None:
    fleet = Fleet(tmp_path, count)
    argvs = [discover_argv(fleet.config(i), fleet.data_dir(i)) for i in range(count)]
    with trio.fail_after(60):
        decided = outcomes(await run_all(argvs))
    assert len({d["cluster_id"] for d in decided}) == 1
    inits = [d for d in decided if d["role"] == "cluster-init"]
    assert len(inits) == 1
    init_index = [d["node_id"] for d in decided].index(inits[0]["node_id"])
    url = f"https://{fleet.hosts[init_index]}:6443"
    assert [d["server_url"] for d in decided if d is not inits[0]] == [url] * (count - 1)
    assert all(d["informed"] for d in decided)
    # The decision is in each data dir, for bootstrap to carry out.
    for i in range(count):
        state = json.loads((fleet.data_dir(i) / "gossip.json").read_text())
        assert state["decision"]["cluster_id"] == decided[0]["cluster_id"]


async def test_wrong_token_node_with_lowest_id_is_never_counted(tmp_path: Path) -> None:
    """It would propose if it were counted: its node id sorts first."""
    fleet = Fleet(tmp_path, 4, expected=3)
    intruder = fleet.data_dir(3)
    intruder.mkdir(mode=0o700)
    (intruder / "node-id").write_text("0" * 32 + "\n")
    argvs = [discover_argv(fleet.config(i), fleet.data_dir(i)) for i in range(3)]
    argvs.append(discover_argv(fleet.config(3, token="a wrong guess"), intruder, wait=8))
    with trio.fail_after(60):
        results = await run_all(argvs)
    decided = outcomes(results[:3])
    assert len({d["cluster_id"] for d in decided}) == 1
    assert all(d["init_node"] != "0" * 32 for d in decided)
    assert results[3].returncode == 1
    assert b"have 1 of 3 servers" in results[3].stderr


async def test_peers_shows_what_a_waiting_node_waits_for(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, 2)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(_process, discover_argv(fleet.config(0), fleet.data_dir(0)))
            snapshot = await _peers_json(fleet.data_dir(0))
            status = snapshot["status"]
            assert isinstance(status, dict)
            assert "waiting for 1 more server" in status["text"]
            second = await nursery.start(
                _process, discover_argv(fleet.config(1), fleet.data_dir(1))
            )
            assert await first.wait() == 0
            assert await second.wait() == 0
    table = await captured(rancherd_argv("peers", "--data-dir", str(fleet.data_dir(0))))
    assert table.returncode == 1
    assert b"is rancherd running" in table.stderr


async def _process(
    argv: list[str], *, task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run ``argv`` in the background (killed if the test ends first)."""
    await trio.run_process(
        argv,
        check=False,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        task_status=task_status,
    )


async def _peers_json(data_dir: Path) -> dict[str, object]:
    """``rancherd peers --json`` once the node answers (it needs a moment to start)."""
    while True:
        result = await captured(rancherd_argv("peers", "--json", "--data-dir", str(data_dir)))
        if result.returncode == 0:
            document = json.loads(result.stdout)
            assert isinstance(document, dict)
            if document.get("status"):
                return document
        await trio.sleep(0.2)


async def test_bad_input_against_a_live_node(tmp_path: Path) -> None:
    """Oversized frame, random bytes, a silent client and a flood from one address:
    each is closed, and the node still elects with a good peer afterwards."""
    fleet = Fleet(tmp_path, 2)
    host, port = fleet.hosts[0], fleet.port
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(_process, discover_argv(fleet.config(0), fleet.data_dir(0)))
            await _peers_json(fleet.data_dir(0))

            # 1 MiB in one binary message: closed with 1009 (message too big).
            assert await _close_code_after(host, port, secrets.token_bytes(1 << 20)) == 1009
            # A well-framed message that is not a sealed hello: closed with 1008.
            assert await _close_code_after(host, port, secrets.token_bytes(200)) == 1008

            # Random bytes instead of an HTTP upgrade: the connection is dropped.
            stream = await trio.open_tcp_stream(host, port)
            await stream.send_all(secrets.token_bytes(4096))
            with trio.fail_after(10):
                while await _receive_or_reset(stream):
                    pass
            await stream.aclose()

            # A flood of silent connections from one address: beyond the per-address
            # limit they are closed at once; the silent ones within it at the deadline.
            flood = [await trio.open_tcp_stream(host, port) for _ in range(20)]
            with trio.fail_after(15):
                for stream in flood:
                    while await _receive_or_reset(stream):
                        pass
            for stream in flood:
                await stream.aclose()

            second = await nursery.start(
                _process, discover_argv(fleet.config(1), fleet.data_dir(1))
            )
            assert await second.wait() == 0
            assert await first.wait() == 0


async def _close_code_after(host: str, port: int, message: bytes) -> int | None:
    """Upgrade a raw TCP connection (wsproto), send ``message``, return the close code the
    node answers with (None if it just drops the connection)."""
    connection = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    async with await trio.open_tcp_stream(host, port) as stream:
        await stream.send_all(
            connection.send(wsproto.events.Request(host=host, target="/rancherd/v1/gossip"))
        )
        with trio.fail_after(10):
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return None
                connection.receive_data(data or None)
                for event in connection.events():
                    if isinstance(event, wsproto.events.AcceptConnection):
                        with contextlib.suppress(trio.BrokenResourceError):
                            await stream.send_all(
                                connection.send(wsproto.events.BytesMessage(data=message))
                            )
                    elif isinstance(event, wsproto.events.CloseConnection):
                        return event.code
                    elif isinstance(event, wsproto.events.RejectConnection):
                        return None
                if not data:
                    return None


async def _receive_or_reset(stream: trio.SocketStream) -> bool:
    """True while the peer keeps the connection open and sends data."""
    try:
        return bool(await stream.receive_some(65536))
    except trio.BrokenResourceError:
        return False


def bootstrap_argv(fleet: Fleet, index: int, root: Path) -> list[str]:
    return rancherd_argv(
        "bootstrap",
        "--config",
        str(fleet.config(index)),
        "--data-dir",
        str(fleet.data_dir(index)),
        "--root",
        str(root),
    )


async def test_bootstrap_stopped_during_the_election_exits_143_and_says_so(
    tmp_path: Path,
) -> None:
    fleet = Fleet(tmp_path, 1, expected=3)
    argv = bootstrap_argv(fleet, 0, tmp_path / "root")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(trio.run_process, argv, check=False, env=ENV, stderr=subprocess.PIPE)
            )
            snapshot = await _peers_json(fleet.data_dir(0))
            assert "waiting for 2 more servers" in str(snapshot["status"])
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 143
    assert not (tmp_path / "root").exists()


async def test_systemd_hears_the_election_as_it_goes_then_stopping(tmp_path: Path) -> None:
    """``bootstrap`` under a ``$NOTIFY_SOCKET`` (a real datagram socket standing in for
    systemd): STATUS= carries the node's status line as the second node arrives, and
    SIGTERM brings STOPPING=1 and exit status 143."""
    fleet = Fleet(tmp_path, 2, expected=3)
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify.bind(str(tmp_path / "notify.sock"))
    env = {**ENV, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    argv = bootstrap_argv(fleet, 0, tmp_path / "root")
    statuses: list[str] = []

    async def status_until(text: str) -> dict[str, str]:
        while True:
            data = (await notify.recv(65536)).decode()
            fields = dict(line.split("=", 1) for line in data.split("\n"))
            statuses.append(fields.get("STATUS", ""))
            if text in fields.get("STATUS", ""):
                return fields

    with notify, trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(trio.run_process, argv, check=False, env=env, stderr=subprocess.PIPE)
            )
            await status_until("have 1 of 3 servers")
            await nursery.start(_process, discover_argv(fleet.config(1), fleet.data_dir(1)))
            await status_until("have 2 of 3 servers")
            process.send_signal(signal.SIGTERM)
            stopping = await status_until("stopping; last status: have 2 of 3 servers")
            assert stopping["STOPPING"] == "1"
            assert await process.wait() == 143
            nursery.cancel_scope.cancel()
    assert not any("READY" in s for s in statuses)


async def test_a_node_that_cannot_listen_says_why_without_a_traceback(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml", "192.0.2.1", 8443, ["192.0.2.1"], expected=1
    )  # TEST-NET-1: never an address of this machine
    with trio.fail_after(30):
        result = await captured(discover_argv(config, tmp_path / "d"))
    assert result.returncode == 1
    assert b"cannot listen on 192.0.2.1:8443" in result.stderr
    assert b"Traceback" not in result.stderr


async def test_demo_the_readmes_first_command_decides_and_cleans_up() -> None:
    with trio.fail_after(60):
        result = await captured(rancherd_argv("demo", "--nodes", "3", "--seed", "7"))
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "all 3 nodes decided" in out
    assert out.count("): cluster-init") == 1  # the "== node-N (address): role" headers
    assert out.count(", joins https://127.0.0.") == 2
    root = out.split("data dirs in ", 1)[1].split()[0]
    assert not await trio.Path(root).exists()


@pytest.mark.slow
@pytest.mark.parametrize(("servers", "agents"), [(50, 0), (3, 47)])
async def test_fifty_processes_decide_on_one_cluster_init(
    tmp_path: Path, servers: int, agents: int
) -> None:
    """Issue 10's fleet on one machine: 50 processes (all servers with expectedServers 50,
    or 3 servers and 47 agents that discover only the servers) decide on one cluster."""
    fleet = Fleet(tmp_path, servers + agents, expected=servers)
    server_hosts = fleet.hosts[:servers]
    argvs = []
    for index, host in enumerate(fleet.hosts):
        role = "server" if index < servers else "agent"
        config = write_config(
            tmp_path / f"n{index}.yaml",
            host,
            fleet.port,
            fleet.hosts if role == "server" else server_hosts,
            expected=servers,
            role=role,
        )
        argvs.append(discover_argv(config, fleet.data_dir(index), wait=150))
    with trio.fail_after(200):
        decided = outcomes(await run_all(argvs))
    assert len({d["cluster_id"] for d in decided}) == 1
    inits = [i for i, d in enumerate(decided) if d["role"] == "cluster-init"]
    assert len(inits) == 1
    assert inits[0] < servers
    assert [d["role"] for d in decided[servers:]] == ["agent"] * agents
    # Every server saw every member report the decision before it left. (An agent may
    # learn the decision after the servers have gone: relayed, from other agents; nobody
    # waits on an agent, so its "informed" is best effort.)
    assert all(d["informed"] for d in decided[:servers])
