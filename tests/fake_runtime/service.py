"""The fake runtime's unit: ``systemctl enable --now k3s.service`` as systemd does it.

``python -m fake_runtime.service --root R --tls-dir T [--ready-after S] [--etcd]`` starts
``python -m fake_runtime.server`` in its own session and returns once it serves (its pid
in ``R/fake/server.pid``), exit status 1 with the end of its output when it exits first.
Starts are serialised by a lock (``R/fake/service.lock``), as systemd queues jobs on a
unit, and a running server is left alone: a rancherd killed during this step and
restarted runs it again, and must not start a second runtime (nor a second etcd join).
"""

from __future__ import annotations

import argparse
import fcntl
import subprocess
import sys
import time
from pathlib import Path

from fake_runtime import running

START_LIMIT = 120.0
"""Seconds the server may take to serve (an etcd join included)."""
POLL = 0.05


def _served(pid_file: Path) -> bool:
    """The server whose pid ``pid_file`` holds still runs."""
    try:
        return running(int(pid_file.read_text()))
    except (OSError, ValueError):
        return False


def start(root: Path, tls_dir: Path, ready_after: str, etcd: bool) -> int:
    fake = root / "fake"
    fake.mkdir(parents=True, exist_ok=True)
    pid_file = fake / "server.pid"
    log = fake / "server.log"
    with (fake / "service.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _served(pid_file):
            return 0
        pid_file.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "fake_runtime.server",
            f"--tls-dir={tls_dir}",
            f"--pid-file={pid_file}",
            f"--ready-after={ready_after}",
            *(["--etcd"] if etcd else []),
        ]
        with log.open("ab") as output:
            server = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_LIMIT
        while not (pid_file.exists() and pid_file.read_text().strip()):
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").splitlines()[-20:]
                print("fake runtime did not start; its output:", *tail, sep="\n", file=sys.stderr)
                return 1
            time.sleep(POLL)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m fake_runtime.service")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--tls-dir", type=Path, required=True)
    parser.add_argument("--ready-after", default="0")
    parser.add_argument("--etcd", action="store_true")
    args = parser.parse_args()
    sys.exit(start(args.root, args.tls_dir, args.ready_after, args.etcd))


if __name__ == "__main__":
    main()
