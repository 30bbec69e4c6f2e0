"""sd_notify: what ``rancherd bootstrap`` tells systemd, read from a real ``AF_UNIX``
datagram socket set up as ``$NOTIFY_SOCKET`` would be."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import yaml
from cli_harness import rancherd_argv
from fake_runtime import FakeServer, populate_root, root_with_install_script, running
from install_harness import options as fake_runtime_options

from rancherd.bootstrap import Reporter, run_bootstrap
from rancherd.config import load_config
from rancherd.notify import Notifier
from rancherd.state import DataDir


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[dict[str, str]]:
    """Every datagram waiting on ``sock``, each as its assignments."""
    messages: list[dict[str, str]] = []
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return messages
        messages.append(dict(line.split("=", 1) for line in data.decode().split("\n")))


def test_from_env_reads_the_socket_and_the_watchdog_and_clears_them() -> None:
    environ = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "OTHER": "1"}
    notifier = Notifier.from_env(environ)
    assert (notifier.address, notifier.watchdog_interval) == ("/run/x", 15.0)
    assert environ == {"OTHER": "1"}  # the plan's commands do not inherit them
    abstract = Notifier.from_env({"NOTIFY_SOCKET": "@sd"})
    assert (abstract.address, abstract.watchdog_interval) == (b"\0sd", None)
    other_pid = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    assert Notifier.from_env(other_pid).watchdog_interval is None
    assert not Notifier.from_env({}).enabled


def test_status_is_sent_once_per_change_on_one_line(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    notifier = Notifier(str(tmp_path / "notify.sock"), None)
    for text in ("have 1 of 3 servers", "have 1 of 3 servers", "two\nlines"):
        notifier.status(text)
    notifier.ready("bootstrapped")
    notifier.stopping("bye")
    notifier.close()
    assert received(notify_socket) == [
        {"STATUS": "have 1 of 3 servers"},
        {"STATUS": "two lines"},
        {"READY": "1", "STATUS": "bootstrapped"},
        {"STOPPING": "1", "STATUS": "bye"},
    ]


def test_a_missing_socket_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens"), None)
    assert not notifier.send("READY=1")
    assert not notifier.send("READY=1")
    notifier.close()
    assert [r.message for r in caplog.records].count(
        f"cannot notify systemd at {str(tmp_path / 'nobody-listens')!r}: No such file or directory"
    ) == 1


async def test_the_watchdog_is_fed_every_half_period_from_the_loop(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, notify_socket: socket.socket
) -> None:
    notifier = Notifier.from_env(
        {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"}
    )
    with trio.move_on_after(4.5):
        await notifier.feed_watchdog()
    notifier.close()
    # At 0, 1, 2, 3 and 4 s (half of the 2 s period).
    assert received(notify_socket) == [{"WATCHDOG": "1"}] * 5


# --- bootstrap without discovery, against the fake runtime ----------------------------


def write_config(tmp_path: Path, role: str = "cluster-init") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {"role": role, "token": "notify-test-token", "kubernetesVersion": "v1.31.4+k3s1"}
        )
    )
    return path


async def test_bootstrap_reports_steps_then_ready_then_stopping(
    tmp_path: Path, server: FakeServer, notify_socket: socket.socket
) -> None:
    config = load_config(write_config(tmp_path), implicit_paths=(), default_path=None).config
    root = populate_root(tmp_path / "root")  # under --root only the root's programs run
    data_dir = DataDir(tmp_path / "data")
    options = fake_runtime_options(server)

    async def bootstrap() -> list[dict[str, str]]:
        notifier = Notifier(str(tmp_path / "notify.sock"), None)
        with trio.fail_after(30):
            await run_bootstrap(config, data_dir, root=root, options=options, notifier=notifier)
        return received(notify_socket)

    first = await bootstrap()
    statuses = [m["STATUS"] for m in first if set(m) == {"STATUS"}]
    assert "the config decides: cluster-init" in statuses
    assert any(s.endswith(": running") and "install" in s for s in statuses)
    ready = [i for i, m in enumerate(first) if m.get("READY") == "1"]
    assert len(ready) == 1
    assert first[ready[0]]["STATUS"].startswith("bootstrapped: k3s runs as cluster-init")
    assert first[-1]["STOPPING"] == "1"
    assert all("plan step" not in m.get("STATUS", "") for m in first[ready[0] :])

    # Restarted after the done stamp: READY at once, no plan step.
    again = await bootstrap()
    assert again[0]["READY"] == "1"
    assert [set(m) for m in again] == [{"READY", "STATUS"}, {"STOPPING", "STATUS"}]


# --- SIGTERM during the install step, without discovery ---------------------------------


@pytest.mark.slow
async def test_sigterm_stops_a_static_bootstrap_and_its_install_step(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    # A long install that starts a child of its own, then says who they are.
    script = f'#!/bin/sh\nsleep 300 &\necho "$$ $!" > {fifo}\nwait\n'
    root = root_with_install_script(tmp_path / "root", script)
    env = {
        **os.environ,
        "RANCHERD_INSTALL_SCRIPT": "/install.sh",
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
    }
    env.pop("RANCHERD_IMPLICIT_PATHS", None)
    argv = rancherd_argv(
        "bootstrap",
        "--config",
        str(write_config(tmp_path)),
        "--data-dir",
        str(tmp_path / "data"),
        "--root",
        str(root),
    )
    with trio.fail_after(60):
        process = await trio.lowlevel.open_process(
            argv, env={**env, "RANCHERD_IMPLICIT_PATHS": ""}, stderr=subprocess.PIPE
        )
        pids = [int(p) for p in (await trio.to_thread.run_sync(fifo.read_text)).split()]
        process.send_signal(signal.SIGTERM)
        code = await process.wait()
        assert process.stderr is not None
        errors = b"".join([chunk async for chunk in process.stderr]).decode()
    assert code == 143, errors
    assert "SIGTERM received: shutting down" in errors
    assert "stopped by a signal while applying the plan" in errors
    assert not any(running(pid) for pid in pids)
    assert received(notify_socket)[-1]["STOPPING"] == "1"


async def test_the_status_task_wakes_when_the_node_starts() -> None:
    """The task that follows the status waits for a change; a node that starts is one
    (else its first lines would wait for the 5 s refresh and be missed)."""

    class Starting:
        status = None
        driver = None

    reporter = Reporter(Notifier(None, None))
    woke = trio.Event()

    async def follow() -> None:
        await reporter.wait_changed()
        woke.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.testing.wait_all_tasks_blocked()
            assert not woke.is_set()
            node: Any = Starting()
            reporter.attach(node)
            await woke.wait()
