"""The fake runtime as a process: what a started k3s server answers that rancherd relies on.

``python -m fake_runtime.server --tls-dir D --pid-file F`` (with the tests directory on
``PYTHONPATH``) serves, until killed:

- HTTPS on ``0.0.0.0:6443`` with the certificate in ``D``: ``/cacerts`` (the CA bundle, as
  the joiners' CA check fetches it), ``/readyz`` (the API server probe: 503 for the first
  ``--ready-after`` seconds, as an API server that is still starting answers);
- HTTP on ``127.0.0.1:10248``: ``/healthz`` (the kubelet probe).

Once both listen it writes its pid to ``F`` (atomically), so whoever started it knows it is
ready and how to stop it. The fake ``systemctl`` starts it inside the node's namespace
(through ``service.py``).

With ``--etcd`` it first starts a real etcd as k3s's embedded one (``etcd.py``: a new
cluster on the init node, a member added through the init node elsewhere; the node's
name and address from ``$FAKE_NODE`` and ``$FAKE_NODE_ADDRESS``, its root from
``$RANCHERD_ROOT``) and writes its pid only once that etcd is healthy (a joiner is then a
started member: k3s's unit is up only once its etcd runs); the fake runtime exits when its
etcd exits (k3s dies with its embedded etcd). SIGTERM stops both.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from fake_runtime import FakeServer, Tls
from fake_runtime.etcd import JoinError, healthy, start_etcd

ETCD_START_LIMIT = 60.0
"""Seconds a started etcd may take to become healthy."""

OK = (200, b"ok")
STARTING = (503, b"starting")


async def serve(
    tls_dir: Path,
    pid_file: Path,
    host: str,
    https_port: int,
    http_port: int,
    ready_after: float,
    etcd: subprocess.Popen[bytes] | None,
) -> None:
    tls = Tls.load(tls_dir)
    routes = {"/cacerts": (200, tls.ca_pem), "/readyz": STARTING, "/healthz": OK}
    server = FakeServer(tls, routes, https_port=https_port, http_port=http_port, https_host=host)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_sigterm, nursery.cancel_scope)
        if etcd is not None:
            await _wait_etcd_healthy(etcd)
            nursery.start_soon(_exit_with, etcd)
        await server.start(nursery)
        partial_file = pid_file.with_name(pid_file.name + ".tmp")
        partial_file.write_text(f"{os.getpid()}\n")
        partial_file.replace(pid_file)
        print(
            f"fake runtime: https {host}:{server.https_port}, http 127.0.0.1:{server.http_port}",
            flush=True,
        )
        await trio.sleep(ready_after)
        routes["/readyz"] = OK


async def _stop_on_sigterm(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def _wait_etcd_healthy(etcd: subprocess.Popen[bytes]) -> None:
    with trio.fail_after(ETCD_START_LIMIT):
        while not await trio.to_thread.run_sync(healthy):
            if etcd.poll() is not None:
                raise SystemExit(f"etcd exited with status {etcd.returncode} before it was healthy")
            await trio.sleep(0.1)
    print("etcd is healthy", flush=True)


async def _exit_with(etcd: subprocess.Popen[bytes]) -> None:
    """k3s dies with its embedded etcd."""
    code = await trio.to_thread.run_sync(etcd.wait, abandon_on_cancel=True)
    raise SystemExit(f"etcd exited with status {code}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m fake_runtime.server")
    parser.add_argument("--tls-dir", type=Path, required=True)
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--https-port", type=int, default=6443)
    parser.add_argument("--http-port", type=int, default=10248)
    parser.add_argument("--ready-after", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--etcd", action="store_true", help="Run a real etcd (see etcd.py).")
    args = parser.parse_args()
    etcd = None
    if args.etcd:
        root = Path(os.environ["RANCHERD_ROOT"])
        name, address = os.environ["FAKE_NODE"], os.environ["FAKE_NODE_ADDRESS"]
        try:
            etcd = start_etcd(root, name, address, root / "fake" / "etcd.log")
        except (JoinError, OSError, ValueError) as exc:
            sys.exit(f"cannot join the etcd cluster: {exc}")
        print(f"etcd started: {etcd.args!r}", flush=True)
    try:
        trio.run(
            serve,
            args.tls_dir,
            args.pid_file,
            args.host,
            args.https_port,
            args.http_port,
            args.ready_after,
            etcd,
        )
    finally:
        if etcd is not None and etcd.poll() is None:
            etcd.terminate()
            try:
                etcd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                etcd.kill()
                etcd.wait()


if __name__ == "__main__":
    main()
