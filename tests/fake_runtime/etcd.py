"""A real etcd under the fake runtime, formed as k3s's embedded etcd forms its cluster.

The fake runtime (``server.py --etcd``) starts ``etcd`` (Debian package ``etcd-server``)
from the node's rancherd drop-in, as k3s does:

- ``cluster-init: true``: a new one-member cluster (``--initial-cluster-state new``);
- ``server: https://<init>:6443``: the node adds itself as a member through the init
  node's etcd (``<init>:2379``, the v3 JSON gateway), then starts with the member list
  that answer returned (``--initial-cluster-state existing``). A node already in the list
  (it was added, then stopped before it started) is not added twice, as in k3s;
- an existing data dir: a restart, etcd starts from it.

The join is retried as k3s retries it (``pkg/etcd``: every second while etcd answers
"unhealthy cluster", which it does for 5 s after a member connects; k3s also retries "too
many learner members", which cannot happen here: the fake adds voting members, k3s adds
learners and promotes them). Any other refusal is final: the fake runtime exits, as k3s
does ("etcd cluster join failed"), and its unit's start fails. That is what servers
joining at once run into: a second ``member add`` while the member added first has not
started yet is refused with "not enough started members" (etcd's strict reconfiguration
check, on by default in etcd and in k3s).

``python -m fake_runtime.etcd members`` (run inside a node's namespace) prints what that
node's etcd reports: its cluster id and member list, as JSON; the tests' oracle.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

CLIENT_PORT = 2379
PEER_PORT = 2380
DROP_IN = "etc/rancher/k3s/config.yaml.d/40-rancherd.yaml"
DATA_DIR = "var/lib/rancher/k3s/server/db/etcd"
LOCAL = f"http://127.0.0.1:{CLIENT_PORT}"
REQUEST_TIMEOUT = 5.0
JOIN_RETRY_LIMIT = 60.0


class JoinError(Exception):
    """The etcd cluster could not be joined; the message says what etcd answered."""


def etcd_unavailable_reason() -> str | None:
    """Why etcd cannot run here, or None. ``$FAKE_ETCD_BINARY`` names it for the fake
    runtime (whose ``PATH`` is a test root's)."""
    if shutil.which("etcd") is None:
        return "needs etcd (Debian package etcd-server)"
    return None


def call(endpoint: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST ``body`` to etcd's v3 JSON gateway (GET without a body); its answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{endpoint}{path}", data=data, method="POST" if data else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        answer = json.loads(exc.read() or b"{}")
    assert isinstance(answer, dict)
    if "error" in answer:
        raise JoinError(str(answer.get("message") or answer["error"]))
    return answer


def members(endpoint: str) -> dict[str, Any]:
    return call(endpoint, "/v3/cluster/member/list", {})


def healthy(endpoint: str = LOCAL) -> bool:
    try:
        return call(endpoint, "/health").get("health") == "true"
    except (OSError, ValueError, JoinError):
        return False


def peer_url(address: str) -> str:
    return f"http://{address}:{PEER_PORT}"


def etcd_argv(root: Path, name: str, address: str) -> list[str]:
    """The etcd command for this node: a new cluster, a join, or a restart."""
    data_dir = root / DATA_DIR
    argv = [
        os.environ.get("FAKE_ETCD_BINARY") or "etcd",
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-peer-urls={peer_url(address)}",
        f"--initial-advertise-peer-urls={peer_url(address)}",
        f"--listen-client-urls=http://{address}:{CLIENT_PORT},{LOCAL}",
        f"--advertise-client-urls=http://{address}:{CLIENT_PORT}",
        "--initial-cluster-token=rancherd-fake-runtime",
        "--heartbeat-interval=100",
        "--election-timeout=1000",
    ]
    if (data_dir / "member").exists():
        return argv  # a restart: the data dir knows the cluster
    config = yaml.safe_load((root / DROP_IN).read_text()) or {}
    if config.get("cluster-init") is True:
        return [
            *argv,
            f"--initial-cluster={name}={peer_url(address)}",
            "--initial-cluster-state=new",
        ]
    host = urlsplit(str(config["server"])).hostname
    endpoint = f"http://{host}:{CLIENT_PORT}"
    mine = peer_url(address)
    listed = members(endpoint).get("members", [])
    if not any(mine in member.get("peerURLs", []) for member in listed):
        listed = add_member(endpoint, mine)
    initial = []
    for member in listed:
        url = member["peerURLs"][0]
        member_name = name if url == mine else member.get("name") or f"unstarted-{member['ID']}"
        initial.append(f"{member_name}={url}")
    return [*argv, f"--initial-cluster={','.join(initial)}", "--initial-cluster-state=existing"]


def add_member(endpoint: str, url: str) -> list[dict[str, Any]]:
    """Add ``url`` as a member; the member list. Retried while etcd answers "unhealthy
    cluster" (a member connected less than 5 s ago), as k3s's join is; any other refusal
    is final, as in k3s (it exits)."""
    deadline = time.monotonic() + JOIN_RETRY_LIMIT
    while True:
        try:
            answer = call(endpoint, "/v3/cluster/member/add", {"peerURLs": [url]})
        except JoinError as exc:
            if "unhealthy cluster" not in str(exc) or time.monotonic() > deadline:
                raise
            print(f"waiting for other members to finish joining: {exc}", flush=True)
            time.sleep(1.0)
            continue
        members: list[dict[str, Any]] = answer.get("members", [])
        return members


def start_etcd(root: Path, name: str, address: str, log: Path) -> subprocess.Popen[bytes]:
    """Start this node's etcd (joining through the init node first, when it joins)."""
    argv = etcd_argv(root, name, address)
    with log.open("ab") as output:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output)


def report(endpoint: str = LOCAL) -> dict[str, Any]:
    """What this node's etcd says: cluster id and members (sorted), or the error."""
    try:
        answer = members(endpoint)
    except (OSError, ValueError, JoinError) as exc:
        return {"error": str(exc)}
    listed = sorted(
        (member.get("name", ""), ",".join(member.get("peerURLs", [])))
        for member in answer.get("members", [])
    )
    return {"cluster_id": answer["header"]["cluster_id"], "members": listed}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m fake_runtime.etcd")
    parser.add_argument("command", choices=["members"])
    parser.add_argument("--endpoint", default=LOCAL)
    args = parser.parse_args()
    json.dump(report(args.endpoint), sys.stdout)
    print()


if __name__ == "__main__":
    main()
