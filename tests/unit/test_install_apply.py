"""Plans applied into a temporary root with the fake install script, systemctl and server.

Golden comparisons of every file each plan writes, for k3s and rke2 as cluster-init,
joining server and agent; then failures, resume, skips and the done stamp.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from fake_runtime import INSTALL_SCRIPT, FakeServer, Tls, populate_root, running
from install_harness import options

from rancherd.config import Config, load_config
from rancherd.gossip.election import JoinRole
from rancherd.install import (
    NoPeers,
    Plan,
    RunCommand,
    StepFailed,
    StepState,
    WaitForPeers,
    apply_plan,
    build_plan,
    hash_ca,
    under_root,
)
from rancherd.install.apply import PROGRESS_FILE
from rancherd.install.plan import PeerWait, Step, WriteFile

SECRET = "tok-7f3a9c1e5b"
VERSIONS = {"k3s": "v1.31.4+k3s1", "rke2": "v1.31.4+rke2r1"}
REGISTRIES = {
    "mirrors": {"docker.io": {"endpoint": ["https://mirror.example.com"]}},
    "configs": {"mirror.example.com": {"auth": {"username": "u", "password": "regpass"}}},
}
RESOURCE = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hello"}}
PRE = 'echo pre >> "$RANCHERD_ROOT/fake/pre-count"'
POST = 'echo "$KUBECONFIG" >> "$RANCHERD_ROOT/fake/post-count"'


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with sh, the tools and the fakes: under it rancherd runs nothing else.
    ``fake/`` is where the fakes and the instructions record."""
    return populate_root(tmp_path / "root")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def load(tmp_path: Path, data: dict[str, Any]) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, implicit_paths=(), default_path=None).config


def full_config(runtime: str, role: JoinRole, token: str, server_url: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "role": "agent" if role is JoinRole.AGENT else "server",
        "token": token,
        "kubernetesVersion": VERSIONS[runtime],
        "rancherVersion": "v2.9.3",
        "rancherValues": {"bootstrapPassword": "admin-pw", "ingress": {"tls": {"source": "x"}}},
        "tlsSans": ["k8s.example.com"],
        "nodeName": "node-a",
        "address": "203.0.113.5",
        "internalAddress": "10.0.0.5,fd00::5",
        "taints": ["dedicated=infra:NoSchedule"],
        "labels": ["pool=a"],
        "extraConfig": {"write-kubeconfig-mode": "0644"},
        "registries": REGISTRIES,
        "preInstructions": [{"name": "count pre", "command": "sh", "args": ["-c", PRE]}],
        "postInstructions": [{"command": "sh", "args": ["-c", POST]}],
        "resources": [RESOURCE],
    }
    if role is not JoinRole.CLUSTER_INIT:
        data["server"] = server_url
    return data


class RecordingHooks:
    def __init__(self) -> None:
        self.waits: list[str] = []
        self.events: list[tuple[str, str]] = []

    async def wait_for_peers(self, step: WaitForPeers) -> None:
        self.waits.append(step.kind.value)

    def on_step(self, step_id: str, step: Step, state: StepState, detail: str) -> None:
        self.events.append((step_id, state.value))


def read_yaml(root: Path, path: str) -> Any:
    return yaml.safe_load(under_root(root, path).read_text())


def mode(root: Path, path: str) -> int:
    return stat.S_IMODE(under_root(root, path).stat().st_mode)


def temp_files(root: Path) -> list[Path]:
    """Temp files of the atomic writes left behind (none should be)."""
    return [path for path in root.rglob("*") if path.name.endswith(".tmp")]


def lines(root: Path, name: str) -> list[str]:
    path = root / "fake" / name
    return path.read_text().splitlines() if path.exists() else []


# --- Every plan, golden ---------------------------------------------------------------

EXPECTED_STEPS = {
    JoinRole.CLUSTER_INIT: [
        "pre-count-pre",
        "write-{rt}-registries",
        "write-{rt}-config",
        "write-rancher-manifest",
        "write-resources-manifest",
        "install-{rt}",
        "systemd-daemon-reload",
        "start-{rt}",
        "probe-apiserver",
        "probe-kubelet",
        "post-1",
    ],
    JoinRole.SERVER: [
        "wait-init-ready",
        "verify-server-ca",
        "wait-join-turn",
        "write-{rt}-registries",
        "write-{rt}-config",
        "install-{rt}",
        "systemd-daemon-reload",
        "start-{rt}",
        "probe-apiserver",
        "probe-kubelet",
    ],
    JoinRole.AGENT: [
        "wait-init-ready",
        "verify-server-ca",
        "write-{rt}-registries",
        "write-{rt}-config",
        "install-{rt}",
        "systemd-daemon-reload",
        "start-{rt}",
        "probe-kubelet",
    ],
}

UNITS = {
    ("k3s", True): "k3s.service",
    ("k3s", False): "k3s-agent.service",
    ("rke2", True): "rke2-server.service",
    ("rke2", False): "rke2-agent.service",
}


@pytest.mark.parametrize("runtime", ["k3s", "rke2"])
@pytest.mark.parametrize("role", list(JoinRole))
async def test_every_plan_writes_the_expected_files(
    runtime: str,
    role: JoinRole,
    server: FakeServer,
    tls: Tls,
    root: Path,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    token = f"K10{hash_ca(tls.ca_pem)}::server:{SECRET}"
    config = load(tmp_path, full_config(runtime, role, token, server.https_url))
    target = None if role is JoinRole.CLUSTER_INIT else server.https_url
    plan = build_plan(config, role, target, options=options(server))
    assert [step.name for step in plan.steps] == [
        name.format(rt=runtime) for name in EXPECTED_STEPS[role]
    ]
    hooks = RecordingHooks()
    stamp = state_dir / "done"
    with trio.fail_after(30):
        result = await apply_plan(
            plan, root=root, state_dir=state_dir, hooks=hooks, done_stamp=stamp
        )

    assert result.ran == plan.step_ids()
    assert result.skipped == result.already_done == ()
    server_node = role is not JoinRole.AGENT
    etc = f"/etc/rancher/{runtime}"
    manifests = f"/var/lib/rancher/{runtime}/server/manifests"

    # The runtime config drop-in: every key mapped, the token, 0600.
    expected: dict[str, Any] = {"write-kubeconfig-mode": "0644", "token": token}
    if role is JoinRole.CLUSTER_INIT:
        if runtime == "k3s":
            expected["cluster-init"] = True
    else:
        expected["server"] = server.https_url
    if server_node:
        expected["tls-san"] = ["k8s.example.com"]
    expected |= {
        "node-name": "node-a",
        "node-ip": ["10.0.0.5", "fd00::5"],
        "node-external-ip": ["203.0.113.5"],
        "node-taint": ["dedicated=infra:NoSchedule"],
        "node-label": ["pool=a"],
    }
    config_path = f"{etc}/config.yaml.d/40-rancherd.yaml"
    assert read_yaml(root, config_path) == expected
    assert mode(root, config_path) == 0o600
    assert under_root(root, config_path).stat().st_uid == 0

    # registries.yaml, as the original writes it (0400).
    assert read_yaml(root, f"{etc}/registries.yaml") == REGISTRIES
    assert mode(root, f"{etc}/registries.yaml") == 0o400

    # The Rancher HelmChart and the resources: on the init node only.
    if role is JoinRole.CLUSTER_INIT:
        namespace, chart = yaml.safe_load_all(
            under_root(root, f"{manifests}/rancherd-rancher.yaml").read_text()
        )
        assert namespace == {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "cattle-system"},
        }
        spec = chart["spec"]
        assert chart["kind"] == "HelmChart"
        assert chart["metadata"] == {"name": "rancher", "namespace": "kube-system"}
        assert spec["chart"] == "rancher"
        assert spec["repo"] == "https://releases.rancher.com/server-charts/latest"
        assert spec["version"] == "2.9.3"
        assert spec["targetNamespace"] == "cattle-system"
        assert yaml.safe_load(spec["valuesContent"]) == {
            "antiAffinity": "required",
            "bootstrapPassword": "admin-pw",
            "features": "multi-cluster-management=false",
            "hostPort": 8443,
            "ingress": {"enabled": False, "tls": {"source": "x"}},
            "noDefaultAdmin": True,
            "replicas": -3,
            "tls": "external",
        }
        assert mode(root, f"{manifests}/rancherd-rancher.yaml") == 0o600
        resources = list(
            yaml.safe_load_all(under_root(root, f"{manifests}/rancherd.yaml").read_text())
        )
        assert resources == [RESOURCE]
    else:
        assert not under_root(root, manifests).exists()

    # The install script ran with the runtime's variables; the service was started.
    kind = "server" if server_node else "agent"
    if runtime == "k3s":
        install_env = [
            f"INSTALL_K3S_EXEC={kind}",
            "INSTALL_K3S_SKIP_START=true",
            f"INSTALL_K3S_VERSION={VERSIONS[runtime]}",
        ]
    else:
        install_env = [f"INSTALL_RKE2_TYPE={kind}", f"INSTALL_RKE2_VERSION={VERSIONS[runtime]}"]
    assert lines(root, "install-env") == install_env
    assert lines(root, "systemctl.log") == [
        "daemon-reload",
        f"enable --now {UNITS[runtime, server_node]}",
    ]

    # Pre and post instructions ran once each, post with KUBECONFIG, on the init node only
    # (the original's toInitPlan).
    if role is JoinRole.CLUSTER_INIT:
        assert lines(root, "pre-count") == ["pre"]
        assert lines(root, "post-count") == [f"{etc}/{runtime}.yaml"]
    else:
        assert lines(root, "pre-count") == lines(root, "post-count") == []

    # The waits went to the hooks; the probes and the CA check to the fake server.
    expected_waits = {
        JoinRole.CLUSTER_INIT: [],
        JoinRole.SERVER: ["init-ready", "join-turn"],
        JoinRole.AGENT: ["init-ready"],
    }
    assert hooks.waits == expected_waits[role]
    assert ("/readyz" in server.requests) == server_node
    assert "/healthz" in server.requests
    assert ("/cacerts" in server.requests) == (role is not JoinRole.CLUSTER_INIT)

    # Progress: every step started then done; the done stamp is there.
    for step_id in plan.step_ids():
        assert (step_id, "started") in hooks.events
        assert (step_id, "done") in hooks.events
    progress = json.loads((state_dir / PROGRESS_FILE).read_text())
    assert progress["done"] == list(plan.step_ids())
    assert progress["failed"] is None
    assert json.loads(stamp.read_text())["role"] == role.value
    assert temp_files(root) == []


# --- Skips, failures, resume ----------------------------------------------------------


def init_plan(tmp_path: Path, server: FakeServer, **extra: Any) -> Plan:
    data = {
        "role": "server",
        "token": SECRET,
        "kubernetesVersion": VERSIONS["k3s"],
        "preInstructions": [{"name": "count", "command": "sh", "args": ["-c", PRE]}],
        **extra,
    }
    return build_plan(load(tmp_path, data), JoinRole.CLUSTER_INIT, options=options(server))


def join_plan(tmp_path: Path, server: FakeServer, runtime: str, role: JoinRole, ca: str) -> Plan:
    """The plan of a node joining ``server`` with a secure token of CA hash ``ca``."""
    data = full_config(runtime, role, f"K10{ca}::server:{SECRET}", server.https_url)
    return build_plan(load(tmp_path, data), role, server.https_url, options=options(server))


def fake_binary(root: Path, runtime: str, version: str) -> None:
    path = root / "usr" / "local" / "bin" / runtime
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{runtime} version {version} (abcdef)"\n')
    path.chmod(0o755)


async def test_install_is_skipped_when_the_binary_has_the_version(
    server: FakeServer, root: Path, state_dir: Path, tmp_path: Path
) -> None:
    fake_binary(root, "k3s", VERSIONS["k3s"])
    plan = init_plan(tmp_path, server)
    hooks = RecordingHooks()
    with trio.fail_after(30):
        result = await apply_plan(plan, root=root, state_dir=state_dir, hooks=hooks)
    install_id = next(sid for sid, step in plan.numbered() if step.name == "install-k3s")
    assert result.skipped == (install_id,)
    assert (install_id, "skipped") in hooks.events
    assert lines(root, "install-runs") == []
    assert lines(root, "systemctl.log") == ["daemon-reload", "enable --now k3s.service"]


async def test_install_runs_when_the_binary_has_another_version(
    server: FakeServer, root: Path, state_dir: Path, tmp_path: Path
) -> None:
    fake_binary(root, "k3s", "v1.30.0+k3s1")
    plan = init_plan(tmp_path, server)
    with trio.fail_after(30):
        result = await apply_plan(plan, root=root, state_dir=state_dir)
    assert result.skipped == ()
    assert lines(root, "install-runs") == ["run"]
    assert any("v1.30.0+k3s1, not v1.31.4+k3s1" in note for note in result.notes)


async def test_any_binary_will_do_for_a_channel(
    server: FakeServer, root: Path, state_dir: Path, tmp_path: Path
) -> None:
    fake_binary(root, "k3s", "v1.30.0+k3s1")
    plan = init_plan(tmp_path, server, kubernetesVersion="stable")
    with trio.fail_after(30):
        result = await apply_plan(plan, root=root, state_dir=state_dir)
    assert len(result.skipped) == 1
    assert lines(root, "install-runs") == []


async def test_failed_step_is_reported_then_resumed(
    server: FakeServer, root: Path, state_dir: Path, tmp_path: Path
) -> None:
    plan = init_plan(tmp_path, server)
    ids = dict(zip((step.name for step in plan.steps), plan.step_ids(), strict=True))
    (root / "fake" / "fail-install").touch()
    stamp = state_dir / "done"
    hooks = RecordingHooks()

    with trio.fail_after(30), pytest.raises(StepFailed) as caught:
        await apply_plan(plan, root=root, state_dir=state_dir, hooks=hooks, done_stamp=stamp)
    failed = caught.value
    assert failed.step_id == ids["install-k3s"]
    assert failed.returncode == 1
    message = str(failed)
    assert f"step {ids['install-k3s']} failed" in message
    assert "exited with status 1" in message
    tail = failed.output_tail.splitlines()
    assert len(tail) == 40
    assert tail[-1] == "[ERROR] fake k3s install failed, as asked"  # stderr is captured
    assert "line 60" in tail[-2]
    assert "line 1\n" not in failed.output_tail + "\n"
    assert (ids["install-k3s"], "failed") in hooks.events
    assert not stamp.exists()
    progress = json.loads((state_dir / PROGRESS_FILE).read_text())
    assert progress["failed"]["step"] == ids["install-k3s"]
    assert ids["install-k3s"] not in progress["done"]

    (root / "fake" / "fail-install").unlink()
    hooks = RecordingHooks()
    with trio.fail_after(30):
        result = await apply_plan(
            plan, root=root, state_dir=state_dir, hooks=hooks, done_stamp=stamp
        )
    assert result.already_done == (ids["pre-count"], ids["write-k3s-config"])
    assert result.ran[0] == ids["install-k3s"]
    assert f"resuming at step {ids['install-k3s']}" in result.notes
    assert lines(root, "pre-count") == ["pre"]  # not run again
    assert lines(root, "install-runs") == ["run", "run"]
    assert stamp.exists()

    # Once complete, a rerun does nothing.
    with trio.fail_after(30):
        again = await apply_plan(plan, root=root, state_dir=state_dir)
    assert again.ran == ()
    assert again.already_done == plan.step_ids()
    assert lines(root, "install-runs") == ["run", "run"]


async def test_a_changed_plan_starts_over(
    server: FakeServer, root: Path, state_dir: Path, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        await apply_plan(init_plan(tmp_path, server), root=root, state_dir=state_dir)
        result = await apply_plan(
            init_plan(tmp_path, server, labels=["new=label"]), root=root, state_dir=state_dir
        )
    assert any("plan changed" in note for note in result.notes)
    assert result.already_done == ()
    assert lines(root, "pre-count") == ["pre", "pre"]


async def test_a_resumed_join_waits_and_checks_again(
    server: FakeServer, tls: Tls, root: Path, state_dir: Path, tmp_path: Path
) -> None:
    plan = join_plan(tmp_path, server, "k3s", JoinRole.SERVER, hash_ca(tls.ca_pem))
    (root / "fake" / "fail-install").touch()
    hooks = RecordingHooks()
    with trio.fail_after(30), pytest.raises(StepFailed):
        await apply_plan(plan, root=root, state_dir=state_dir, hooks=hooks)
    (root / "fake" / "fail-install").unlink()
    hooks = RecordingHooks()
    with trio.fail_after(30):
        result = await apply_plan(plan, root=root, state_dir=state_dir, hooks=hooks)
    assert hooks.waits == ["init-ready", "join-turn"]  # the turn is taken again
    names = [step.name for sid, step in plan.numbered() if sid in result.already_done]
    assert names == ["write-k3s-registries", "write-k3s-config"]


async def test_wrong_ca_hash_stops_the_join_before_anything_is_written(
    server: FakeServer, root: Path, state_dir: Path, tmp_path: Path
) -> None:
    wrong = "0" * 64
    plan = join_plan(tmp_path, server, "rke2", JoinRole.SERVER, wrong)
    stamp = state_dir / "done"
    hooks = RecordingHooks()
    with trio.fail_after(30), pytest.raises(StepFailed) as caught:
        await apply_plan(plan, root=root, state_dir=state_dir, hooks=hooks, done_stamp=stamp)
    message = str(caught.value)
    assert caught.value.name == "verify-server-ca"
    assert server.https_url in message
    assert wrong in message
    assert hash_ca(server.tls.ca_pem) in message
    assert SECRET not in message
    assert hooks.waits == ["init-ready"]  # never took a turn to join
    assert not stamp.exists()
    assert not (root / "etc").exists()
    assert lines(root, "install-runs") == []


async def test_a_failed_join_leaves_no_done_stamp(
    server: FakeServer, tls: Tls, root: Path, state_dir: Path, tmp_path: Path
) -> None:
    plan = join_plan(tmp_path, server, "k3s", JoinRole.AGENT, hash_ca(tls.ca_pem))
    server.routes["/healthz"] = (500, b"kubelet not ready")  # the join never completes
    plan = _with_probe_timeout(plan, 0.3)
    stamp = state_dir / "done"
    with trio.fail_after(30), pytest.raises(StepFailed) as caught:
        await apply_plan(plan, root=root, state_dir=state_dir, done_stamp=stamp)
    assert caught.value.name == "probe-kubelet"
    assert "HTTP status 500" in str(caught.value)
    assert not stamp.exists()


def _with_probe_timeout(plan: Plan, timeout: float) -> Plan:
    from dataclasses import replace

    from rancherd.install import ProbeUrl

    steps = tuple(
        replace(step, timeout=timeout) if isinstance(step, ProbeUrl) else step
        for step in plan.steps
    )
    return replace(plan, steps=steps)


def bare_plan(*steps: Step) -> Plan:
    from rancherd.install.runtime import resolve_kubernetes_version

    return Plan(JoinRole.CLUSTER_INIT, resolve_kubernetes_version(None), None, steps)


async def test_command_timeout_kills_it(root: Path, state_dir: Path) -> None:
    plan = bare_plan(
        RunCommand(
            "sleeper",
            ("sh", "-c", 'echo started; sleep 30 & echo $! > "$RANCHERD_ROOT/pid"; wait'),
            timeout=0.5,
        )
    )
    with trio.fail_after(10), pytest.raises(StepFailed) as caught:
        await apply_plan(plan, root=root, state_dir=state_dir)
    assert "did not finish within 0.5s" in str(caught.value)
    assert caught.value.output_tail == "started"
    pid = int((root / "pid").read_text())
    for _ in range(500):  # the whole process group was stopped, grandchildren too
        if not running(pid):
            break
        await trio.sleep(0.01)  # polling /proc: there is no event to wait for
    assert not running(pid)


async def test_missing_command_is_a_clear_failure(root: Path, state_dir: Path) -> None:
    plan = bare_plan(RunCommand("nothing", ("/no-such-command",)))
    refused = r"refused: /no-such-command is not an executable file in the root"
    with trio.fail_after(10), pytest.raises(StepFailed, match=refused):
        await apply_plan(plan, root=root, state_dir=state_dir)
    # On the host (root /) the command runs as written, and its absence is said too.
    with trio.fail_after(10), pytest.raises(StepFailed, match=r"cannot run /no-such-command"):
        await apply_plan(plan, root=Path("/"), state_dir=state_dir)


async def test_wait_for_peers_timeout(root: Path, state_dir: Path) -> None:
    class NeverReady(NoPeers):
        async def wait_for_peers(self, step: WaitForPeers) -> None:
            await trio.sleep_forever()

    plan = bare_plan(WaitForPeers("wait", PeerWait.JOIN_TURN, "https://10.0.0.5:6443", 0.2))
    with trio.fail_after(10), pytest.raises(StepFailed, match="did not allow join-turn"):
        await apply_plan(plan, root=root, state_dir=state_dir, hooks=NeverReady())


async def test_output_is_saved_and_the_token_redacted(root: Path, state_dir: Path) -> None:
    from rancherd.config import Secret

    plan = Plan(
        JoinRole.CLUSTER_INIT,
        bare_plan().version,
        None,
        (RunCommand("chatty", ("sh", "-c", f"echo token is {SECRET}; exit 3"), save_output=True),),
        secrets=(Secret(SECRET),),
    )
    with trio.fail_after(10), pytest.raises(StepFailed) as caught:
        await apply_plan(plan, root=root, state_dir=state_dir)
    assert SECRET not in str(caught.value)
    assert "token is <redacted>" in caught.value.output_tail
    saved = (state_dir / "output" / "01-chatty.log").read_text()
    assert saved == "token is <redacted>\n"


async def test_not_root_keeps_going_with_a_note(
    root: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    plan = bare_plan(WriteFile("file", "/etc/x.conf", b"x", "x", mode=0o640))
    with trio.fail_after(10):
        result = await apply_plan(plan, root=root, state_dir=state_dir)
    assert (root / "etc" / "x.conf").read_bytes() == b"x"
    assert stat.S_IMODE((root / "etc" / "x.conf").stat().st_mode) == 0o640
    assert any("not root" in note for note in result.notes)


def test_under_root() -> None:
    assert under_root(Path("/tmp/r"), "/etc/x") == Path("/tmp/r/etc/x")
    assert under_root(Path("/"), "/etc/x") == Path("/etc/x")
    for bad in ("etc/x", "/etc/../x"):
        with pytest.raises(ValueError, match="absolute"):
            under_root(Path("/tmp/r"), bad)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl, as the real install does")
async def test_install_script_from_a_url(
    server: FakeServer, root: Path, state_dir: Path, tmp_path: Path
) -> None:
    server.routes["/install.sh"] = (200, INSTALL_SCRIPT.read_bytes())
    url_options = dataclasses.replace(options(server), install_script=f"{server.http_url}/x")
    config = load(tmp_path, {"role": "server", "token": SECRET})
    plan = build_plan(config, JoinRole.CLUSTER_INIT, options=url_options)
    with trio.fail_after(30), pytest.raises(StepFailed) as caught:
        await apply_plan(plan, root=root, state_dir=state_dir)
    assert caught.value.name == "install-k3s"  # a failed download is a failed step
    assert caught.value.returncode == 22  # curl -f: HTTP 404
    assert lines(root, "install-runs") == []

    plan = build_plan(
        config,
        JoinRole.CLUSTER_INIT,
        options=dataclasses.replace(url_options, install_script=f"{server.http_url}/install.sh"),
    )
    with trio.fail_after(30):
        await apply_plan(plan, root=root, state_dir=state_dir)
    assert lines(root, "install-runs") == ["run"]
    assert lines(root, "install-env") == [
        "INSTALL_K3S_CHANNEL=stable",
        "INSTALL_K3S_EXEC=server",
        "INSTALL_K3S_SKIP_START=true",
    ]
