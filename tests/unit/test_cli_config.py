"""``rancherd config``: exit status, output, errors on stderr, JSON, help."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from rancherd.cli import cli
from rancherd.config import DEFAULT_CONFIG_PATH

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_TOKEN = "change-me-to-a-long-random-string"


def run(*args: str, implicit: str = "") -> Result:
    """Run ``rancherd`` with the implicit paths replaced (none by default)."""
    return CliRunner().invoke(cli, list(args), env={"RANCHERD_IMPLICIT_PATHS": implicit})


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_three_node_example() -> None:
    path = EXAMPLES / "three-node-mdns.yaml"
    result = run("config", "--config", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert "provider: mdns" in result.stdout
    assert "service: rancher-server" in result.stdout
    assert "expectedServers: 3" in result.stdout
    assert "token: <redacted>" in result.stdout
    assert EXAMPLE_TOKEN not in result.stdout
    assert f"role: server                        # from {path}" in result.stdout
    assert "dataDir: /var/lib/rancher/rancherd  # default" in result.stdout


def test_agent_example() -> None:
    result = run("config", "--config", str(EXAMPLES / "agent-mdns.yaml"))
    assert result.exit_code == 0, result.stderr
    assert "role: agent" in result.stdout
    assert EXAMPLE_TOKEN not in result.stdout


def test_output_is_yaml() -> None:
    result = run("config", "--config", str(EXAMPLES / "three-node-mdns.yaml"))
    shown = yaml.safe_load(result.stdout)
    assert shown["discovery"]["params"] == {"provider": "mdns", "service": "rancher-server"}
    assert shown["token"] == "<redacted>"


def test_json() -> None:
    path = EXAMPLES / "three-node-mdns.yaml"
    result = run("config", "--config", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["config"]["discovery"]["params"]["provider"] == "mdns"
    assert document["config"]["discovery"]["serverCacheDuration"] == "1m"
    assert document["config"]["token"] == "<redacted>"
    assert document["sources"]["role"] == str(path)
    assert document["sources"]["dataDir"] == "default"
    assert document["files"] == [str(path)]
    assert EXAMPLE_TOKEN not in result.stdout


def test_broken_file_exits_2_with_every_error_on_stderr(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        """\
        role: sever
        token: 0123
        discovery:
          params: {provider: aws}
          expectedServers: 0
          serverCacheDuration: 60
        nodeName: on
        """,
    )
    result = run("config", "--config", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "Error: invalid config (6 problems):"
    assert lines[1:] == [
        f"{path}:1: role: 'sever' is not a role; did you mean 'server'? "
        "(server, agent or cluster-init)",
        f"{path}:2: token: expected a string, but YAML read a number; quote it",
        f"{path}:4: discovery.params.provider: 'aws' is not supported yet; "
        "supported: mdns, static, file, srv",
        f"{path}:5: discovery.expectedServers: must be from 1 to 128, not 0",
        f"{path}:6: discovery.serverCacheDuration: 60 has no unit (a bare number); "
        "write 60s for seconds",
        f"{path}:7: nodeName: expected a string, but YAML 1.1 reads on as the bool true; quote it",
    ]
    without_paths = result.stderr.replace(str(path), "")
    assert "0123" not in without_paths
    assert "83" not in without_paths


def test_syntax_error_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "role: server\ntoken: [\n")
    result = run("config", "--config", str(path))
    assert result.exit_code == 2
    assert f"{path}:3: YAML syntax error" in result.stderr


def test_missing_explicit_file_exits_2(tmp_path: Path) -> None:
    result = run("config", "--config", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[1] == f"{tmp_path / 'nope.yaml'}: does not exist"


@pytest.mark.skipif(DEFAULT_CONFIG_PATH.exists(), reason="this machine has a rancherd config")
def test_no_config_at_all_lists_where_it_looked(tmp_path: Path) -> None:
    result = run("config", implicit=f"{tmp_path / 'a.yaml'}:{tmp_path / 'b.yaml'}")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    # One problem, then where it looked: not "invalid config (4 problems)".
    assert lines[0].startswith("Error: no rancherd config found")
    assert "problem" not in result.stderr
    assert lines[1:] == [
        f"  {tmp_path / 'a.yaml'}: not found",
        f"  {tmp_path / 'b.yaml'}: not found",
        f"  {DEFAULT_CONFIG_PATH}: not found",
    ]


def test_implicit_paths_and_sources(tmp_path: Path) -> None:
    user_data = write(
        tmp_path,
        "user-data.txt",
        """\
        #cloud-config
        hostname: node-1
        rancherd:
          role: server
          token: from-user-data
          discovery:
            params: provider=mdns service=rancher-server
        """,
    )
    write(tmp_path, "conf/10-version.yaml", "kubernetesVersion: v1.31.4+k3s1\n")
    explicit = write(tmp_path, "config.yaml", "discovery:\n  expectedServers: 5\n")
    drop_in = write(tmp_path, "config.yaml.d/10-sans.yaml", "tlsSans: [10.0.0.100]\n")
    result = run(
        "config", "--config", str(explicit), "--json", implicit=f"{user_data}:{tmp_path / 'conf'}"
    )
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["sources"] == {
        "role": str(user_data),
        "token": str(user_data),
        "discovery": str(explicit),
        "kubernetesVersion": str(tmp_path / "conf/10-version.yaml"),
        "tlsSans": str(drop_in),
        "dataDir": "default",
    }
    assert document["config"]["discovery"]["expectedServers"] == 5
    assert document["config"]["discovery"]["params"]["service"] == "rancher-server"
    assert document["files"] == [
        str(user_data),
        str(tmp_path / "conf/10-version.yaml"),
        str(explicit),
        str(drop_in),
    ]
    assert "from-user-data" not in result.stdout


def test_help_explains_the_command() -> None:
    result = run("config", "--help")
    assert result.exit_code == 0
    text = result.stdout
    assert "Check the config and print it as rancherd will use it." in text
    assert "1. /usr/share/oem/rancher/rancherd/config.yaml" in text
    assert "3. /oem/userdata  (cloud-config: only its rancherd: key)" in text
    assert "7. --config PATH (default /etc/rancher/rancherd/config.yaml" in text
    assert "FILE.d/*.yaml" in text
    assert "Exit status 2" in text
    assert "rancherd config --config examples/three-node-mdns.yaml" in text
    assert "--json" in text


def test_config_is_listed_in_the_group_help() -> None:
    result = run("--help")
    assert "config" in result.stdout


def test_srv_example() -> None:
    result = run("config", "--config", str(EXAMPLES / "three-node-srv.yaml"))
    assert result.exit_code == 0, result.stderr
    assert "provider: srv" in result.stdout
    assert "domain: example.com" in result.stdout


def test_tpm_token_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    # rancher/os2's registration writes token: tpm://, the original's TPM attestation.
    path = write(tmp_path, "c.yaml", "role: server\nserver: https://r.example:443\ntoken: tpm://\n")
    result = run("config", "--config", str(path))
    assert result.exit_code == 2
    assert f"{path}:3: token: TPM tokens are not supported" in result.stderr
