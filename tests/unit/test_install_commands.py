"""``rancherd plan`` and ``rancherd get-token``, invoked directly with click's CliRunner;
the examples and the systemd unit."""

from __future__ import annotations

import configparser
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from fake_runtime import Tls, make_tls

from rancherd.config import load_config
from rancherd.gossip.election import JoinRole
from rancherd.install import build_plan, hash_ca
from rancherd.install.command import get_token_command, plan_command

SECRET = "tok-cmd-c0ffee42"
REPO = Path(__file__).resolve().parents[2]
ENV = {"RANCHERD_IMPLICIT_PATHS": "", "RANCHERD_INSTALL_SCRIPT": ""}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


def write(tmp_path: Path, **data: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"token": SECRET, **data}))
    return path


def plan(*args: str) -> Result:
    return CliRunner().invoke(plan_command, list(args), env=ENV)


def get_token(*args: str) -> Result:
    return CliRunner().invoke(get_token_command, list(args), env=ENV)


# --- plan -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "args", "role", "server"),
    [
        ({"role": "server"}, [], "cluster-init", None),
        ({"role": "cluster-init"}, [], "cluster-init", None),
        (
            {"role": "server", "server": "https://10.0.0.5:8443"},
            [],
            "server",
            "https://10.0.0.5:6443",
        ),
        (
            {"role": "agent", "server": "https://10.0.0.5", "kubernetesVersion": "stable:rke2"},
            [],
            "agent",
            "https://10.0.0.5:9345",
        ),
        (
            {"role": "server"},
            ["--role", "server", "--server", "10.0.0.7"],
            "server",
            "https://10.0.0.7:6443",
        ),
        (
            {"role": "server", "discovery": {"params": "provider=mdns service=rancher-server"}},
            ["--role", "cluster-init"],
            "cluster-init",
            None,
        ),
    ],
)
def test_plan_text_and_json(
    tmp_path: Path, data: dict[str, Any], args: list[str], role: str, server: str | None
) -> None:
    path = write(tmp_path, **data)
    text = plan("--config", str(path), *args)
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith(f"Plan: {role} node")
    shown = json.loads(plan("--config", str(path), "--json", *args).stdout)
    assert shown["role"] == role
    assert shown["server"] == server
    for output in (text.stdout, json.dumps(shown)):
        assert SECRET not in output
        assert "token: <redacted>" in output


def test_plan_with_discovery_needs_a_role(tmp_path: Path) -> None:
    path = write(tmp_path, role="server", discovery={"params": "provider=mdns service=x"})
    result = plan("--config", str(path))
    assert result.exit_code == 2
    assert "the election decides" in result.stderr


def test_plan_errors_are_clear(tmp_path: Path) -> None:
    path = write(tmp_path, role="agent", server="https://10.0.0.5:6443")
    result = plan("--config", str(path), "--role", "server")
    assert result.exit_code == 1
    assert "cannot make a plan: this node is configured as an agent" in result.stderr
    bad = write(tmp_path, role="server", rancherVersion="newest")
    assert "rancherVersion 'newest'" in plan("--config", str(bad)).stderr


def test_plan_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("role: server\nbogus: 1\n")
    result = plan("--config", str(path))
    assert result.exit_code == 2
    assert "bogus" in result.stderr


def test_plan_install_script_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, role="server")
    result = CliRunner().invoke(
        plan_command,
        ["--config", str(path), "--json"],
        env={**ENV, "RANCHERD_INSTALL_SCRIPT": "/opt/k3s-install.sh"},
    )
    install = next(s for s in json.loads(result.stdout)["steps"] if s["name"] == "install-k3s")
    assert install["argv"] == ["sh", "/opt/k3s-install.sh"]


# --- get-token ------------------------------------------------------------------------


def put_ca(root: Path, tls: Tls, runtime: str = "k3s") -> None:
    path = root / "var" / "lib" / "rancher" / runtime / "server" / "tls" / "server-ca.crt"
    path.parent.mkdir(parents=True)
    path.write_bytes(tls.ca_pem)


def test_get_token_before_the_ca_exists(tmp_path: Path) -> None:
    path = write(tmp_path, role="server")
    result = get_token("--config", str(path), "--root", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{SECRET}\n"
    assert "not in the secure K10 form" in result.stderr


@pytest.mark.parametrize("runtime", ["k3s", "rke2"])
def test_get_token_in_k10_form(tmp_path: Path, tls: Tls, runtime: str) -> None:
    version = "v1.31.4+k3s1" if runtime == "k3s" else "v1.31.4+rke2r1"
    path = write(tmp_path, role="server", kubernetesVersion=version)
    put_ca(tmp_path, tls, runtime)
    result = get_token("--config", str(path), "--root", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"K10{hash_ca(tls.ca_pem)}::server:{SECRET}\n"
    assert result.stderr == ""


def test_get_token_refuses_a_ca_file_without_a_certificate(tmp_path: Path) -> None:
    path = write(tmp_path, role="server")
    ca = tmp_path / "var" / "lib" / "rancher" / "k3s" / "server" / "tls" / "server-ca.crt"
    ca.parent.mkdir(parents=True)
    ca.write_bytes(b"")  # a runtime that died while writing it
    result = get_token("--config", str(path), "--root", str(tmp_path))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"{ca} holds no PEM certificate" in result.stderr
    assert SECRET not in result.output


def test_get_token_warns_about_a_token_for_another_ca(tmp_path: Path, tls: Tls) -> None:
    other = "ab" * 32
    path = write(tmp_path, role="server", token=f"K10{other}::server:{SECRET}")
    put_ca(tmp_path, tls)
    result = get_token("--config", str(path), "--root", str(tmp_path))
    assert result.stdout == f"K10{hash_ca(tls.ca_pem)}::server:{SECRET}\n"
    assert other in result.stderr
    assert SECRET not in result.stderr


def test_get_token_refuses_other_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, role="server")
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    result = get_token("--config", str(path), "--root", str(tmp_path))
    assert result.exit_code == 1
    assert f"root or as the owner of {path}" in result.stderr
    assert "uid 4242" in result.stderr
    assert SECRET not in result.output


def test_get_token_for_the_owner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, role="server")
    owner = path.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner if owner else 4242)
    if owner == 0:
        os.chown(path, 4242, -1)
    result = get_token("--config", str(path), "--root", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{SECRET}\n"


def test_get_token_generated_by_the_runtime(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("role: cluster-init\n")
    missing = get_token("--config", str(path), "--root", str(tmp_path))
    assert missing.exit_code == 1
    assert "has k3s started on this node?" in missing.stderr
    token_file = tmp_path / "var" / "lib" / "rancher" / "k3s" / "server" / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(f"K10{'c' * 64}::server:generated\n")
    result = get_token("--config", str(path), "--root", str(tmp_path))
    assert result.stdout == f"K10{'c' * 64}::server:generated\n"


# --- Examples and packaging -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("cloud-config-three-servers.yaml", JoinRole.CLUSTER_INIT),
        ("cloud-config-three-servers.yaml", JoinRole.SERVER),
        ("cloud-config-agent.yaml", JoinRole.AGENT),
    ],
)
def test_cloud_config_examples(name: str, role: JoinRole) -> None:
    from rancherd.cli import cli

    path = REPO / "examples" / name
    assert path.read_text().startswith("#cloud-config\n")
    checked = CliRunner().invoke(cli, ["config", "--config", str(path)], env=ENV)
    assert checked.exit_code == 0, checked.output
    config = load_config(path, implicit_paths=(), default_path=None).config
    assert config.discovery is not None
    assert config.discovery.params.provider == "mdns"
    server = None if role is JoinRole.CLUSTER_INIT else "10.0.0.5"
    built = build_plan(config, role, server)
    assert built.role is role


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "packaging" / "rancherd.service")
    assert unit["Unit"]["After"] == "network-online.target"
    assert unit["Unit"]["Wants"] == "network-online.target"
    assert unit["Service"]["ExecStart"] == "/usr/local/bin/rancherd bootstrap"
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Service"]["Type"] == "notify"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
