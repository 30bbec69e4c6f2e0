"""Plans as data: runtime and version choice, server URLs, role rules, notes, redaction."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rancherd.config import Config, Instruction, Secret, load_config
from rancherd.gossip.election import JoinRole
from rancherd.install import (
    Plan,
    PlanError,
    PlanOptions,
    RunCommand,
    Runtime,
    RuntimeVersion,
    build_plan,
    resolve_kubernetes_version,
    runtime_server_url,
)
from rancherd.install.plan import REDACTED, VerifyServerCA, WriteFile
from rancherd.install.rancher import merge_values, rancher_chart_source
from rancherd.install.runtime import VersionError

SECRET = "tok-plan-5e8d2b"
K3S, RKE2 = Runtime.K3S, Runtime.RKE2


def load(tmp_path: Path, **data: Any) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"role": "server", "token": SECRET, **data}))
    return load_config(path, implicit_paths=(), default_path=None).config


# --- kubernetesVersion ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, RuntimeVersion(K3S, channel="stable")),
        ("", RuntimeVersion(K3S, channel="stable")),
        ("v1.31.4+k3s1", RuntimeVersion(K3S, version="v1.31.4+k3s1")),
        ("v1.31.4+rke2r1", RuntimeVersion(RKE2, version="v1.31.4+rke2r1")),
        ("stable", RuntimeVersion(K3S, channel="stable")),
        ("latest", RuntimeVersion(K3S, channel="latest")),
        ("testing", RuntimeVersion(K3S, channel="testing")),
        ("v1.31", RuntimeVersion(K3S, channel="v1.31")),
        ("stable:k3s", RuntimeVersion(K3S, channel="stable")),
        ("stable:rke2", RuntimeVersion(RKE2, channel="stable")),
        ("v1.31:rke2", RuntimeVersion(RKE2, channel="v1.31")),
        ("v1.31.4+rke2r1:k3s", RuntimeVersion(K3S, version="v1.31.4+rke2r1")),
        ("v1.21-head", RuntimeVersion(K3S, version="v1.21-head")),
        # The image tag spelling the original's installer images used is the release.
        ("v1.20.5-k3s1", RuntimeVersion(K3S, version="v1.20.5+k3s1")),
        ("v1.21.3-rke2r1", RuntimeVersion(RKE2, version="v1.21.3+rke2r1")),
        ("v1.20.5-rc1-k3s1", RuntimeVersion(K3S, version="v1.20.5-rc1+k3s1")),
        ("v1.20.5-k3s1-head", RuntimeVersion(K3S, version="v1.20.5-k3s1-head")),
        (
            "https://update.rke2.io/v1-release/channels/latest",
            RuntimeVersion(
                RKE2, channel="latest", channel_url="https://update.rke2.io/v1-release/channels"
            ),
        ),
        (
            "https://mirror.example/channels/stable:k3s",
            RuntimeVersion(K3S, channel="stable", channel_url="https://mirror.example/channels"),
        ),
    ],
)
def test_kubernetes_version(text: str | None, expected: RuntimeVersion) -> None:
    assert resolve_kubernetes_version(text) == expected


@pytest.mark.parametrize("text", ["sta ble", "https://update.k3s.io/", "v1.2.3;rm -rf", "@x"])
def test_bad_kubernetes_version(text: str) -> None:
    with pytest.raises(VersionError, match="kubernetesVersion"):
        resolve_kubernetes_version(text)


def test_install_env() -> None:
    assert resolve_kubernetes_version("v1.31.4+k3s1").install_env() == {
        "INSTALL_K3S_VERSION": "v1.31.4+k3s1"
    }
    assert resolve_kubernetes_version("latest:rke2").install_env() == {
        "INSTALL_RKE2_CHANNEL": "latest"
    }
    assert resolve_kubernetes_version("https://m.example/c/v1.30").install_env() == {
        "INSTALL_K3S_CHANNEL": "v1.30",
        "INSTALL_K3S_CHANNEL_URL": "https://m.example/c",
    }


# --- Server URLs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "runtime", "url", "noted"),
    [
        ("10.0.0.5", K3S, "https://10.0.0.5:6443", False),
        ("10.0.0.5", RKE2, "https://10.0.0.5:9345", False),
        ("fd00::5", K3S, "https://[fd00::5]:6443", False),
        ("[fd00::5]", RKE2, "https://[fd00::5]:9345", False),
        ("node1.example", K3S, "https://node1.example:6443", False),
        ("https://node1.example", RKE2, "https://node1.example:9345", False),
        ("https://node1.example:8443", K3S, "https://node1.example:6443", True),
        ("https://[fd00::5]:8443/", RKE2, "https://[fd00::5]:9345", True),
        # server: is a Rancher URL: whatever port it names, the runtime's supervisor joins.
        ("https://192.168.122.100:443", RKE2, "https://192.168.122.100:9345", True),
        ("https://lb.example:7443/x", K3S, "https://lb.example:6443", True),
        ("https://node1.example:9345", K3S, "https://node1.example:6443", True),
        # ... unless it names the supervisor's port already.
        ("https://node1.example:6443", K3S, "https://node1.example:6443", False),
        ("https://node1.example:9345", RKE2, "https://node1.example:9345", False),
    ],
)
def test_runtime_server_url(server: str, runtime: Runtime, url: str, noted: bool) -> None:
    got, note = runtime_server_url(server, runtime)
    assert got == url
    assert (note is not None) == noted


@pytest.mark.parametrize("server", ["http://10.0.0.5", "https://", "https://h:99999"])
def test_bad_server(server: str) -> None:
    with pytest.raises(PlanError, match="server"):
        runtime_server_url(server, K3S)


# --- Roles ----------------------------------------------------------------------------


def test_role_rules(tmp_path: Path) -> None:
    server = load(tmp_path)
    with pytest.raises(PlanError, match="never joins as an agent"):
        build_plan(server, JoinRole.AGENT, "10.0.0.5")
    with pytest.raises(PlanError, match="which one is missing"):
        build_plan(server, JoinRole.SERVER)
    with pytest.raises(PlanError, match="joins no server"):
        build_plan(server, JoinRole.CLUSTER_INIT, "10.0.0.5")
    agent = load(tmp_path, role="agent", server="https://10.0.0.5:6443")
    with pytest.raises(PlanError, match="configured as an agent"):
        build_plan(agent, JoinRole.SERVER, "10.0.0.5")
    init = load(tmp_path, role="cluster-init")
    with pytest.raises(PlanError, match="creates the cluster"):
        build_plan(init, JoinRole.SERVER, "10.0.0.5")


def test_join_needs_a_token(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("role: server\n")
    config = load_config(path, implicit_paths=(), default_path=None).config
    with pytest.raises(PlanError, match="needs the token"):
        build_plan(config, JoinRole.SERVER, "10.0.0.5")
    plan = build_plan(config, JoinRole.CLUSTER_INIT)  # k3s makes a token of its own
    written = next(s for s in plan.steps if isinstance(s, WriteFile))
    assert "token" not in yaml.safe_load(written.content)


def test_the_join_at_once_test_switch_drops_the_turn_and_says_so(tmp_path: Path) -> None:
    config = load(tmp_path)
    names = [s.name for s in build_plan(config, JoinRole.SERVER, "10.0.0.5").steps]
    assert "wait-join-turn" in names
    assert PlanOptions.from_env({"RANCHERD_TEST_JOIN_AT_ONCE": "0"}).stagger_joins
    options = PlanOptions.from_env({"RANCHERD_TEST_JOIN_AT_ONCE": "1"})
    plan = build_plan(config, JoinRole.SERVER, "10.0.0.5", options=options)
    assert "wait-join-turn" not in [s.name for s in plan.steps]
    assert "wait-init-ready" in [s.name for s in plan.steps]
    assert "TEST SWITCH $RANCHERD_TEST_JOIN_AT_ONCE" in plan.to_text()
    # Agents never waited for a turn; the switch changes nothing for them.
    agent = load(tmp_path, role="agent", server="https://10.0.0.5:8443")
    agent_plan = build_plan(agent, JoinRole.AGENT, "10.0.0.5", options=options)
    assert not any("TEST SWITCH" in note for note in agent_plan.notes)


def test_k10_hash_goes_to_the_ca_check(tmp_path: Path) -> None:
    digest = "ab" * 32
    config = load(tmp_path, token=f"K10{digest}::server:{SECRET}")
    plan = build_plan(config, JoinRole.SERVER, "10.0.0.5")
    check = next(s for s in plan.steps if isinstance(s, VerifyServerCA))
    assert check.ca_hash == digest
    assert check.server_url == "https://10.0.0.5:6443"


def test_bad_k10_token_is_a_plan_error(tmp_path: Path) -> None:
    # The config loader refuses it already; the builder does not rely on that.
    config = dataclasses.replace(load(tmp_path), token=Secret(f"K10abc::server:{SECRET}"))
    with pytest.raises(PlanError, match="CA hash") as caught:
        build_plan(config, JoinRole.SERVER, "10.0.0.5")
    assert SECRET not in str(caught.value)


# --- Instructions, notes --------------------------------------------------------------


def test_instructions(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        kubernetesVersion="v1.31.4+rke2r1",
        preInstructions=[{"name": "load images!", "command": "/bin/true", "env": ["A=1=2"]}],
        postInstructions=[{"command": "/bin/echo", "args": ["a b"], "saveOutput": True}],
    )
    plan = build_plan(config, JoinRole.CLUSTER_INIT)
    pre, post = plan.steps[0], plan.steps[-1]
    assert isinstance(pre, RunCommand)
    assert isinstance(post, RunCommand)
    assert pre.name == "pre-load-images"
    assert pre.env == (("KUBECONFIG", "/etc/rancher/rke2/rke2.yaml"), ("A", "1=2"))
    assert post.name == "post-1"
    assert post.argv == ("/bin/echo", "a b")
    assert post.save_output


@pytest.mark.parametrize(
    ("role", "server"), [(JoinRole.SERVER, "10.0.0.5"), (JoinRole.AGENT, "10.0.0.5")]
)
def test_joining_nodes_skip_instructions_as_in_the_original(
    tmp_path: Path, role: JoinRole, server: str
) -> None:
    # toInitPlan adds them, toJoinPlan does not: os2's agent config carries the server's
    # ros-operator-install, and an image (which we refuse) never stops a join.
    config = load(
        tmp_path,
        role="agent" if role is JoinRole.AGENT else "server",
        server="https://10.0.0.5:8443",
        preInstructions=[{"image": "custom/image:1", "command": "/x"}],
        postInstructions=[{"command": "/usr/sbin/ros-operator-install", "saveOutput": True}],
    )
    plan = build_plan(config, role, server)
    assert not [s for s in plan.steps if s.name.startswith(("pre-", "post-"))]
    assert any("cluster-init node only" in note for note in plan.notes)
    with pytest.raises(PlanError, match="image is not supported"):
        build_plan(dataclasses.replace(config, role=JoinRole.CLUSTER_INIT), JoinRole.CLUSTER_INIT)


@pytest.mark.parametrize(
    ("instruction", "message"),
    [
        ({"image": "custom/image:1", "command": "/x"}, "image is not supported"),
        ({"command": "/x", "env": ["NOEQUALS"]}, "is not NAME=value"),
    ],
)
def test_bad_instructions(tmp_path: Path, instruction: dict[str, Any], message: str) -> None:
    config = load(tmp_path, preInstructions=[instruction])
    with pytest.raises(PlanError, match=message):
        build_plan(config, JoinRole.CLUSTER_INIT)


def test_instruction_without_command(tmp_path: Path) -> None:
    # The config loader refuses it already; the builder does not rely on that.
    config = dataclasses.replace(load(tmp_path), post_instructions=(Instruction(name="x"),))
    with pytest.raises(PlanError, match=r"postInstructions\[0\]: command is required"):
        build_plan(config, JoinRole.CLUSTER_INIT)


def test_notes(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        discovery={"params": {"provider": "mdns", "service": "rancher-server"}},
        rancherVersion="stable",
        runtimeInstallerImage="rancher/system-agent-installer-k3s:v1",
        rancherInstallerImage="rancher/system-agent-installer-rancher:v2",
        systemDefaultRegistry="registry.example:5000",
        extraConfig={"node-name": "overridden", "cluster-init": False},
        nodeName="node-a",
    )
    plan = build_plan(config, JoinRole.CLUSTER_INIT)
    text = "\n".join(plan.notes)
    assert "runtimeInstallerImage is not used" in text
    assert "rancherInstallerImage is not used" in text
    assert "hostPort is 9443" in text
    assert "extraConfig.cluster-init is replaced" in text
    assert "extraConfig.node-name is replaced" in text
    manifest = next(s for s in plan.steps if s.name == "write-rancher-manifest")
    assert isinstance(manifest, WriteFile)
    _, chart = yaml.safe_load_all(manifest.content)
    values = yaml.safe_load(chart["spec"]["valuesContent"])
    assert values["hostPort"] == 9443
    assert values["systemDefaultRegistry"] == "registry.example:5000"
    assert "version" not in chart["spec"]
    assert chart["spec"]["repo"] == "https://releases.rancher.com/server-charts/stable"
    joined = build_plan(config, JoinRole.SERVER, "10.0.0.5")
    assert any("systemDefaultRegistry is passed to Rancher" in n for n in joined.notes)


def test_explicit_host_port_wins(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        discovery={"params": "provider=mdns service=rancher-server"},
        rancherVersion="v2.9.3",
        rancherValues={"hostPort": 8443},
    )
    plan = build_plan(config, JoinRole.CLUSTER_INIT)
    assert not any("hostPort" in note for note in plan.notes)


def test_rke2_init_has_no_cluster_init_key(tmp_path: Path) -> None:
    plan = build_plan(load(tmp_path, kubernetesVersion="stable:rke2"), JoinRole.CLUSTER_INIT)
    written = next(s for s in plan.steps if s.name == "write-rke2-config")
    assert isinstance(written, WriteFile)
    assert yaml.safe_load(written.content) == {"token": SECRET}
    assert written.path == "/etc/rancher/rke2/config.yaml.d/40-rancherd.yaml"


def test_install_script_url_and_env(tmp_path: Path) -> None:
    config = load(tmp_path, kubernetesVersion="v1.31:rke2")
    plan = build_plan(config, JoinRole.CLUSTER_INIT)
    install = next(s for s in plan.steps if s.name == "install-rke2")
    assert isinstance(install, RunCommand)
    assert install.argv[:2] == ("sh", "-c")
    assert install.argv[-1] == "https://get.rke2.io"
    assert dict(install.env) == {"INSTALL_RKE2_CHANNEL": "v1.31", "INSTALL_RKE2_TYPE": "server"}
    assert install.skip_if is not None
    assert install.skip_if.version is None
    local = build_plan(config, JoinRole.CLUSTER_INIT, options=PlanOptions(install_script="/x.sh"))
    assert next(s for s in local.steps if s.name == "install-rke2").argv == ("sh", "/x.sh")  # type: ignore[union-attr]
    assert PlanOptions.from_env({"RANCHERD_INSTALL_SCRIPT": "/y.sh"}).install_script == "/y.sh"


def test_rancher_chart_source() -> None:
    latest = "https://releases.rancher.com/server-charts/latest"
    assert rancher_chart_source("v2.9.3") == (latest, "2.9.3")
    assert rancher_chart_source("2.10.0-rc1") == (latest, "2.10.0-rc1")
    assert rancher_chart_source("alpha") == (
        "https://releases.rancher.com/server-charts/alpha",
        None,
    )
    assert rancher_chart_source("https://charts.example/rancher/index.yaml") == (
        "https://charts.example/rancher",
        None,
    )


def test_bad_rancher_version(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="rancherVersion"):
        build_plan(load(tmp_path, rancherVersion="newest"), JoinRole.CLUSTER_INIT)


def test_merge_values() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": [1], "e": 1}
    assert merge_values(base, {"a": {"c": 3}, "d": [2], "e": {"x": 1}}) == {
        "a": {"b": 1, "c": 3},
        "d": [2],
        "e": {"x": 1},
    }
    assert base["a"] == {"b": 1, "c": 2}


# --- Showing a plan -------------------------------------------------------------------


def secret_config(tmp_path: Path, runtime: str) -> Config:
    return load(
        tmp_path,
        kubernetesVersion="v1.31.4+k3s1" if runtime == "k3s" else "v1.31.4+rke2r1",
        rancherVersion="v2.9.3",
        rancherValues={"bootstrapPassword": "admin-pw-9"},
        extraConfig={"datastore-endpoint": "postgres://u:db-pw-7@db/k3s", "x": SECRET},
        registries={"configs": {"r.example": {"auth": {"password": "reg-pw-3"}}}},
        preInstructions=[{"command": "/bin/echo", "args": [SECRET], "env": ["API_TOKEN=env-pw-1"]}],
        resources=[
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "c2Vj"}}
        ],
    )


@pytest.mark.parametrize("runtime", ["k3s", "rke2"])
@pytest.mark.parametrize("role", list(JoinRole))
def test_shown_plans_hide_every_secret(tmp_path: Path, runtime: str, role: JoinRole) -> None:
    config = secret_config(tmp_path, runtime)
    if role is JoinRole.AGENT:
        config = load(tmp_path, role="agent", server="https://10.0.0.5:6443", token=SECRET)
    server = None if role is JoinRole.CLUSTER_INIT else "10.0.0.5"
    plan = build_plan(config, role, server)
    shown = plan.to_text() + json.dumps(plan.to_json_dict()) + repr(plan)
    for secret in (SECRET, "admin-pw-9", "db-pw-7", "reg-pw-3", "env-pw-1", "c2Vj"):
        assert secret not in shown
    assert "<redacted>" in shown
    # What is written is the real thing.
    written = b"".join(s.content for s in plan.steps if isinstance(s, WriteFile))
    assert SECRET.encode() in written


def test_json_shape_and_ids(tmp_path: Path) -> None:
    plan = build_plan(secret_config(tmp_path, "k3s"), JoinRole.SERVER, "10.0.0.5")
    data = plan.to_json_dict()
    assert data["runtime"] == "k3s"
    assert data["role"] == "server"
    assert data["server"] == "https://10.0.0.5:6443"
    ids = [step["id"] for step in data["steps"]]
    assert ids == list(plan.step_ids())
    assert len(set(ids)) == len(ids)
    assert ids[0] == "01-wait-init-ready"  # instructions: the init node only
    kinds = {step["kind"] for step in data["steps"]}
    assert kinds == {"run-command", "wait-for-peers", "verify-server-ca", "write-file", "probe-url"}


def test_digest_follows_content(tmp_path: Path) -> None:
    first = build_plan(load(tmp_path), JoinRole.CLUSTER_INIT)
    same = build_plan(load(tmp_path), JoinRole.CLUSTER_INIT)
    other = build_plan(load(tmp_path, token="another-token"), JoinRole.CLUSTER_INIT)
    assert first.digest() == same.digest()
    assert first.digest() != other.digest()
    assert first.to_text() == other.to_text().replace("another-token", SECRET)


@settings(max_examples=60, deadline=None)
@given(
    token=st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="<>"),
        min_size=6,
        max_size=120,
    ).filter(lambda t: t.strip() == t and t not in REDACTED),
    role=st.sampled_from(list(JoinRole)),
)
def test_no_token_survives_any_rendering(token: str, role: JoinRole) -> None:
    """Whatever the token holds (quotes, backslashes, spaces, non-ASCII), and wherever
    the user repeats it, no rendering of the plan shows it, escaped or not."""

    def plan_with(secret: str) -> Plan:
        config = Config(
            role=JoinRole.AGENT if role is JoinRole.AGENT else JoinRole.SERVER,
            token=Secret(secret),
            kubernetes_version="v1.31.4+k3s1",
            rancher_version="v2.9.3",
            rancher_values=MappingProxyType({"note": f"pw {secret} end"}),
            tls_sans=(secret,),
            extra_config=MappingProxyType({"x": secret, secret: "as a key"}),
            pre_instructions=(Instruction(command="/bin/echo", args=(secret, f"--t={secret}")),),
        )
        return build_plan(config, role, None if role is JoinRole.CLUSTER_INIT else "10.0.0.5")

    plan = plan_with(token)
    escaped = json.dumps(token)[1:-1]
    rendered = [
        plan.to_text(),
        json.dumps(plan.to_json_dict()),
        json.dumps(plan.to_json_dict(), ensure_ascii=False),
    ]
    for output in rendered:
        assert token not in output
        assert escaped not in output

    # repr is not redacted text but leaves secret-bearing fields out; a token that is
    # also plain plan text ("http:/") is there by coincidence, not by leak.
    def reprs(shown: Plan) -> str:
        return repr(shown) + "".join(repr(step) for step in shown.steps)

    if token not in reprs(plan_with("placeholder-token")):
        assert token not in reprs(plan)
