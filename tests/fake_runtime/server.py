"""The fake runtime as a process: what a started k3s server answers that rancherd relies on.

``python -m fake_runtime.server --tls-dir D --pid-file F`` (with the tests directory on
``PYTHONPATH``) serves, until killed:

- HTTPS on ``0.0.0.0:6443`` with the certificate in ``D``: ``/cacerts`` (the CA bundle, as
  the joiners' CA check fetches it), ``/readyz`` (the API server probe: 503 for the first
  ``--ready-after`` seconds, as an API server that is still starting answers);
- HTTP on ``127.0.0.1:10248``: ``/healthz`` (the kubelet probe).

Once both listen it writes its pid to ``F`` (atomically), so whoever started it knows it is
ready and how to stop it. The fake ``systemctl`` starts it inside the node's namespace.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import trio

from fake_runtime import FakeServer, Tls

OK = (200, b"ok")
STARTING = (503, b"starting")


async def serve(
    tls_dir: Path,
    pid_file: Path,
    host: str,
    https_port: int,
    http_port: int,
    ready_after: float,
) -> None:
    tls = Tls.load(tls_dir)
    routes = {"/cacerts": (200, tls.ca_pem), "/readyz": STARTING, "/healthz": OK}
    server = FakeServer(tls, routes, https_port=https_port, http_port=http_port, https_host=host)
    async with trio.open_nursery() as nursery:
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m fake_runtime.server")
    parser.add_argument("--tls-dir", type=Path, required=True)
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--https-port", type=int, default=6443)
    parser.add_argument("--http-port", type=int, default=10248)
    parser.add_argument("--ready-after", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args()
    trio.run(
        serve,
        args.tls_dir,
        args.pid_file,
        args.host,
        args.https_port,
        args.http_port,
        args.ready_after,
    )


if __name__ == "__main__":
    main()
