"""Every validation rule, each error's file:line:key, and the token never shown."""

from __future__ import annotations

import dataclasses
import json
import pickle
import textwrap
from pathlib import Path, PurePosixPath

import click
import pytest

from rancherd.config import (
    DEFAULT_SERVER_CACHE_DURATION,
    Config,
    ConfigError,
    ConfigIssue,
    DiscoveryConfig,
    Instruction,
    LoadedConfig,
    Preset,
    Secret,
    config_to_dict,
    load_config,
)
from rancherd.discovery.params import DiscoveryParams, HostPort, MdnsParams, StaticParams
from rancherd.kinds import JoinRole

TOKEN = "s3cr3t-T0KEN-value"
DISCOVERY = """\
discovery:
  params:
    provider: mdns
    service: rancher-server
"""
VALID = f"role: server\ntoken: {TOKEN}\n" + DISCOVERY
SERVER = "role: server\ntoken: x\nserver: https://a:1\n"
"""A server that joins: the lines a test's bad line is added to (as line 4)."""


def load_text(tmp_path: Path, text: str, name: str = "config.yaml") -> LoadedConfig:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_config(path, implicit_paths=(), default_path=None)


def errors(tmp_path: Path, text: str) -> list[str]:
    """The issues of a config text, as ``LINE: key: message`` (the file name cut off)."""
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    prefix = f"{tmp_path / 'config.yaml'}:"
    lines = [str(issue) for issue in caught.value.issues]
    assert all(line.startswith(prefix) for line in lines), lines
    return [line.removeprefix(prefix) for line in lines]


def one_error(tmp_path: Path, text: str) -> str:
    found = errors(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


# --- Errors are plain data, formatted file:line: key: message ------------------------


def test_config_error_is_a_plain_exception_with_issues() -> None:
    error = ConfigError([ConfigIssue("a.yaml", 3, "role", "bad"), ConfigIssue("b", None, "", "x")])
    assert not isinstance(error, click.ClickException)
    assert str(error) == "a.yaml:3: role: bad\nb: x"
    assert str(ConfigIssue(None, None, "", "nothing")) == "nothing"


def test_every_error_is_collected(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """\
        role: sever
        token: 0123
        tokne: x
        discovery:
          params: provider=aws
          expectedServers: 0
          serverCacheDuration: 60
          port: 70000
          prot: 1
        nodeName: on
        kubernetesVersion: 1.30
        extraConfig:
          write-kubeconfig-mode: 0644
        preInstructions:
          - name: x
        """,
    )
    assert found == [
        "1: role: 'sever' is not a role; did you mean 'server'? (server, agent or cluster-init)",
        "2: token: expected a string, but YAML read a number; quote it",
        "3: tokne: unknown key; did you mean 'token'?",
        "5: discovery.params.provider: 'aws' is not supported yet; "
        "supported: mdns, static, file, srv",
        "6: discovery.expectedServers: must be from 1 to 128, not 0",
        "7: discovery.serverCacheDuration: 60 has no unit (a bare number); write 60s for seconds",
        "8: discovery.port: 70000 is not from 1 to 65535",
        "9: discovery.prot: unknown key; did you mean 'port'?",
        "10: nodeName: expected a string, but YAML 1.1 reads on as the bool true; quote it",
        "11: kubernetesVersion: expected a string, but YAML read the number 1.3; quote it",
        "13: extraConfig.write-kubeconfig-mode: YAML 1.1 reads 0644 as the octal number 420; "
        "quote it ('0644') for the string, or write 420",
        "15: preInstructions[0]: needs an image or a command to run",
    ]


# --- YAML itself ---------------------------------------------------------------------


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    assert one_error(tmp_path, "role: server\ntlsSans: [a, b\nnodeName: x\n") == (
        "3: YAML syntax error: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence at line 2)"
    )


def test_syntax_error_line_is_the_offending_one(tmp_path: Path) -> None:
    found = one_error(tmp_path, "role: server\n  nodeName: x\nlabels: [a]\n")
    assert found.startswith("2: YAML syntax error: mapping values are not allowed here")


def test_syntax_error_on_the_token_line_hides_the_details(tmp_path: Path) -> None:
    found = one_error(tmp_path, f'role: server\ntoken: "{TOKEN}\\q"\n')
    assert found == "2: YAML syntax error on the token's line (details hidden: it is a secret)"


def test_unprintable_character(tmp_path: Path) -> None:
    found = one_error(tmp_path, "role: server\nnodeName: a\x07b\n")
    assert found == "2: YAML cannot hold the character U+0007; remove it"


def test_several_documents_are_an_error(tmp_path: Path) -> None:
    assert one_error(tmp_path, VALID + "---\nrole: agent\n") == (
        "7: YAML syntax error: expected a single document in the stream at line 1, "
        "but found another document"
    )


def test_top_level_must_be_a_map(tmp_path: Path) -> None:
    assert one_error(tmp_path, "- role: server\n") == "1: expected a map of key: value"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("role: server\nrole: agent\n", "2: role: duplicate key (first at line 1)"),
        (
            VALID + "  expectedServers: 3\n  expectedServers: 5\n",
            "8: discovery.expectedServers: duplicate key (first at line 7)",
        ),
        (
            VALID + "extraConfig:\n  a: 1\n  b: 2\n  a: 3\n",
            "10: extraConfig.a: duplicate key (first at line 8)",
        ),
    ],
)
def test_duplicate_keys_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    assert one_error(tmp_path, text).startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "nodeName: !!binary aGVsbG8=\n",
            "2: nodeName: binary values (!!binary) are not supported",
        ),
        ("nodeName: !custom x\n", "2: nodeName: unsupported YAML tag !custom"),
        ("tlsSans: !!set {a, b}\n", "2: tlsSans: unsupported YAML tag !!set"),
        ("tlsSans: !!omap [a: 1]\n", "2: tlsSans: unsupported YAML tag !!omap"),
        (f"token: !{TOKEN} x\n", "2: token: unsupported YAML tag"),
        ("nodeName: 2024-13-45\n", "2: nodeName: YAML 1.1 reads '2024-13-45' as a timestamp"),
    ],
)
def test_unsupported_yaml(tmp_path: Path, text: str, expected: str) -> None:
    found = errors(tmp_path, "role: server\n" + text)
    assert found[0].startswith(expected), found
    assert all(TOKEN not in line for line in found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("extraConfig:\n  1: x\n", "8: extraConfig: the key '1' is read as the number 1"),
        ("extraConfig:\n  on: x\n", "8: extraConfig: the key 'on' is read as the bool true"),
        ("extraConfig:\n  ? [a]\n  : x\n", "8: extraConfig: keys must be strings"),
    ],
)
def test_keys_must_be_strings(tmp_path: Path, text: str, expected: str) -> None:
    assert one_error(tmp_path, VALID + text).startswith(expected)


def test_merge_keys_work(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        VALID
        + textwrap.dedent(
            """\
            rancherValues:
              defaults: &defaults {replicas: 1, hostname: a}
              real:
                <<: *defaults
                hostname: b
            """
        ),
    )
    assert loaded.config.rancher_values["real"] == {"replicas": 1, "hostname": "b"}


def test_merge_key_needs_a_map(tmp_path: Path) -> None:
    found = one_error(tmp_path, VALID + "extraConfig:\n  <<: [1]\n")
    assert found == "8: extraConfig: << merges only maps"


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = VALID + "extraConfig:\n" + "".join(f"  {line}\n" for line in lines)
    found = errors(tmp_path, text)
    assert any("too many values" in line for line in found)


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    found = errors(tmp_path, VALID + "extraConfig: " + "[" * 100 + "]" * 100 + "\n")
    assert any("nested deeper than 64 levels" in line for line in found)


@pytest.mark.parametrize("depth", [5000, 100_000])
def test_very_deep_nesting_is_refused_with_its_line(tmp_path: Path, depth: int) -> None:
    # Deeper than PyYAML's recursive composer can go: refused while composing (issue 15).
    path = tmp_path / "config.yaml"
    path.write_text(VALID + "extraConfig: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, implicit_paths=(), default_path=None)
    line = VALID.count("\n") + 1
    assert [str(i) for i in caught.value.issues] == [
        f"{path}:{line}: nested too deeply to read (more than 200 levels)"
    ]


# --- Keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nodename: x", "7: nodename: unknown key; did you mean 'nodeName'?"),
        ("node_name: x", "7: node_name: unknown key; did you mean 'nodeName'?"),
        ("kubernetes-version: x", "7: kubernetes-version: unknown key; did you mean "),
        ("rancherValue: {}", "7: rancherValue: unknown key; did you mean 'rancherValues'?"),
        ("  expected_servers: 3", "7: discovery.expected_servers: unknown key; did you mean "),
        ("  Port: 1", "7: discovery.Port: unknown key; did you mean 'port'?"),
        ("  expectedServers: 3\n  Port: 1", "8: discovery.Port: unknown key; did you mean 'port'?"),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, expected: str) -> None:
    assert one_error(tmp_path, VALID + text + "\n").startswith(expected)


def test_unknown_key_without_a_close_one_gets_no_guess(tmp_path: Path) -> None:
    assert one_error(tmp_path, VALID + "colour: blue\n") == "7: colour: unknown key"


# --- Types and YAML's guesses ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nodeName: yes", "YAML 1.1 reads yes as the bool true; quote it"),
        ("nodeName: no", "YAML 1.1 reads no as the bool false; quote it"),
        ("nodeName: off", "YAML 1.1 reads off as the bool false; quote it"),
        ("nodeName: true", "YAML read the bool true; quote it"),
        ("nodeName: 0123", "YAML 1.1 reads 0123 as the octal number 83; quote it"),
        ("nodeName: 12:30", "YAML 1.1 reads 12:30 as the sexagesimal (base 60) number 750"),
        ("nodeName: 123", "YAML read the number 123; quote it"),
        ("nodeName: 2024-01-01", "YAML 1.1 reads 2024-01-01 as a date; quote it"),
        ("nodeName: [a]", "expected a string, found a list"),
        ("nodeName: {a: b}", "expected a string, found a map"),
        ("kubernetesVersion: 1e3", "YAML 1.2 (Go, k3s, Helm) reads 1e3 as a number; quote it"),
        ("kubernetesVersion: 1.30", "YAML read the number 1.3; quote it"),
        ("kubernetesVersion: .inf", "YAML reads .inf as inf, which JSON and Go cannot carry"),
    ],
)
def test_yaml_surprises_in_string_fields(tmp_path: Path, text: str, expected: str) -> None:
    found = one_error(tmp_path, VALID + text + "\n")
    assert found.startswith("7: ")
    assert expected in found


def test_quoted_and_tagged_strings_are_fine(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        VALID + "nodeName: 'yes'\nkubernetesVersion: !!str 1e3\nrancherVersion: \"0123\"\n",
    )
    assert loaded.config.node_name == "yes"
    assert loaded.config.kubernetes_version == "1e3"
    assert loaded.config.rancher_version == "0123"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("role: [server]", "3: role: expected a string, found a list"),
        ("tlsSans: a", "4: tlsSans: expected a list of strings, but YAML read the string 'a'"),
        ("tlsSans: [a, 1]", "4: tlsSans[1]: expected a string, but YAML read the number 1"),
        ("tlsSans: [a, ~]", "4: tlsSans[1]: empty item in a list of strings"),
        ("taints: {a: b}", "4: taints: expected a list of strings, found a map"),
        ("extraConfig: [a]", "4: extraConfig: expected a map, found a list"),
        ("rancherValues: x", "4: rancherValues: expected a map, but YAML read the string 'x'"),
        ("dataDir: 5", "4: dataDir: expected a string, but YAML read the number 5; quote it"),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, expected: str) -> None:
    base = "token: x\nserver: https://a:1\n" if text.startswith("role:") else SERVER
    assert one_error(tmp_path, base + text + "\n").startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("expectedServers: '3'", "expected a whole number, but YAML read the string '3'"),
        ("expectedServers: 3.0", "expected a whole number, but YAML read the number 3.0"),
        ("expectedServers: true", "expected a whole number, but YAML read the bool true"),
        ("expectedServers: 010", "YAML 1.1 reads 010 as the octal number 8; write the number"),
        ("expectedServers: 0", "must be from 1 to 128, not 0"),
        ("expectedServers: -1", "must be from 1 to 128, not -1"),
        ("expectedServers: 129", "must be from 1 to 128, not 129"),
        ("port: 0", "0 is not from 1 to 65535"),
        ("port: 65536", "65536 is not from 1 to 65535"),
        ("port: '8443'", "expected a whole number, but YAML read the string '8443'"),
        ("port: 1:00", "YAML 1.1 reads 1:00 as the sexagesimal (base 60) number 60"),
    ],
)
def test_discovery_numbers(tmp_path: Path, text: str, expected: str) -> None:
    found = one_error(tmp_path, VALID + "  " + text + "\n")
    key = text.partition(":")[0]
    assert found.startswith(f"7: discovery.{key}: ")
    assert expected in found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("60", "60 has no unit (a bare number); write 60s for seconds"),
        ("1.5", "1.5 has no unit (a bare number); write 1.5s for seconds"),
        ("1:30", "1:30 has no unit (YAML 1.1 reads 1:30 as the sexagesimal (base 60) number 90)"),
        ("1e3", "'1e3' has no unit; write 1000s"),
        ("'60'", "'60' has no unit; write 60s"),
        ("1d", "'1d' is not a duration"),
        ("0s", "must be longer than 0s"),
        ("-1m", "must be longer than 0s"),
        ("[1m]", "expected a string, found a list"),
    ],
)
def test_bad_durations(tmp_path: Path, text: str, expected: str) -> None:
    found = one_error(tmp_path, VALID + f"  serverCacheDuration: {text}\n")
    assert found.startswith("7: discovery.serverCacheDuration: ")
    assert expected in found


def test_empty_server_cache_duration_is_the_default_as_in_the_original(tmp_path: Path) -> None:
    # The original: if cacheDuration == "" { cacheDuration = "1m" }.
    loaded = load_text(tmp_path, VALID + '  serverCacheDuration: ""\n')
    assert loaded.config.discovery is not None
    assert loaded.config.discovery.server_cache_duration == DEFAULT_SERVER_CACHE_DURATION == 60.0
    for blank in ("' '", "'0'"):
        found = one_error(tmp_path, VALID + f"  serverCacheDuration: {blank}\n")
        assert found.startswith("7: discovery.serverCacheDuration: ")


@pytest.mark.parametrize(("text", "seconds"), [("1m", 60.0), ("90s", 90.0), ("1h30m", 5400.0)])
def test_good_durations(tmp_path: Path, text: str, seconds: float) -> None:
    loaded = load_text(tmp_path, VALID + f"  serverCacheDuration: {text}\n")
    assert loaded.config.discovery is not None
    assert loaded.config.discovery.server_cache_duration == seconds


# --- Discovery -----------------------------------------------------------------------


def _params(text: str) -> str:
    return f"role: server\ntoken: x\ndiscovery:\n  params:\n{textwrap.indent(text, '    ')}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "provider: aws\n",
            "5: discovery.params.provider: 'aws' is not supported yet; "
            "supported: mdns, static, file, srv",
        ),
        ("provider: k8s\n", "5: discovery.params.provider: 'k8s' is not supported yet"),
        (
            "provider: mnds\n",
            "5: discovery.params.provider: unknown provider 'mnds'; did you mean 'mdns'?",
        ),
        ("service: x\n", "4: discovery.params.provider: required: one of mdns, static, file"),
        ("provider: mdns\n", "4: discovery.params.service: required by provider mdns"),
        ("provider: static\n", "4: discovery.params.addrs: required by provider static"),
        ("provider: file\n", "4: discovery.params.path: required by provider file"),
        (
            "provider: mdns\nservice: x\nservce: y\n",
            "7: discovery.params.servce: unknown parameter of mdns; did you mean 'service'?",
        ),
        (
            "provider: mdns\nservice: x\nv4: false\n",
            "7: discovery.params.v4: expected a string, but YAML read the bool false; quote it",
        ),
        (
            "provider: mdns\nservice: x\ntimeout: 5\n",
            "7: discovery.params.timeout: expected a string, but YAML read the number 5",
        ),
        (
            "provider: mdns\nservice: x\ntimeout: '5'\n",
            "7: discovery.params.timeout: '5' has no unit; write 5s",
        ),
        (
            "provider: static\naddrs: 10.0.0.1,10.0.0.2\n",
            "6: discovery.params.addrs: '10.0.0.1,10.0.0.2' is not host",
        ),
        (
            "[provider]\n",
            "4: discovery.params: expected a map or a string like 'provider=mdns service=x'",
        ),
    ],
)
def test_bad_params(tmp_path: Path, text: str, expected: str) -> None:
    assert one_error(tmp_path, _params(text)).startswith(expected)


def test_a_param_written_wrong_is_reported_once(tmp_path: Path) -> None:
    found = one_error(tmp_path, _params("provider: yes\n"))
    assert found.startswith("5: discovery.params.provider: expected a string, but YAML 1.1")


def test_empty_param_value_means_unset(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, _params("provider: mdns\nservice: x\nv4:\n"))
    assert loaded.config.discovery is not None
    assert loaded.config.discovery.params.typed_as(MdnsParams).v4 is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("params: provider=aws", "4: discovery.params.provider: 'aws' is not supported yet"),
        ("params: provider=mdns service", "4: discovery.params.service: missing '='"),
        ('params: provider=mdns service="x', "4: discovery.params: unbalanced quotes"),
        ("params: provider=mdns sevice=x", "4: discovery.params.sevice: unknown parameter"),
    ],
)
def test_bad_params_string(tmp_path: Path, text: str, expected: str) -> None:
    found = errors(tmp_path, f"role: server\ntoken: x\ndiscovery:\n  {text}\n")
    assert found[0].startswith(expected), found


def test_params_string_form(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        "role: server\ntoken: x\ndiscovery:\n  params: provider=mdns service=rancher-server\n",
    )
    assert loaded.config.discovery is not None
    assert loaded.config.discovery.params == DiscoveryParams.parse(
        "provider=mdns service=rancher-server"
    )


def test_discovery_needs_params(tmp_path: Path) -> None:
    found = one_error(tmp_path, "role: server\ntoken: x\ndiscovery:\n  expectedServers: 3\n")
    assert found.startswith("3: discovery.params: required")


def test_discovery_additions(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        VALID
        + textwrap.indent(
            textwrap.dedent(
                """\
                listenAddress: '::'
                port: 9443
                advertiseAddresses: [10.0.0.5, 'node-1:9000', '[fd00::5]:9443']
                preset: local
                """
            ),
            "  ",
        ),
    )
    discovery = loaded.config.discovery
    assert discovery == DiscoveryConfig(
        params=DiscoveryParams.parse("provider=mdns service=rancher-server"),
        listen_address="::",
        port=9443,
        advertise_addresses=(
            HostPort("10.0.0.5"),
            HostPort("node-1", 9000),
            HostPort("fd00::5", 9443),
        ),
        preset=Preset.LOCAL,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listenAddress: eth0", "7: discovery.listenAddress: 'eth0' is not an IP address"),
        ("advertiseAddresses: [a, 'b:0']", "7: discovery.advertiseAddresses[1]: 'b:0': the port"),
        ("advertiseAddresses: a", "7: discovery.advertiseAddresses: expected a list of strings"),
        (
            "advertiseAddresses: [" + ", ".join(f"10.0.0.{i}" for i in range(17)) + "]",
            "7: discovery.advertiseAddresses: at most 16 addresses, not 17",
        ),
        ("preset: wan", "7: discovery.preset: 'wan' is not a preset (lan or local)"),
    ],
)
def test_bad_discovery_additions(tmp_path: Path, text: str, expected: str) -> None:
    assert one_error(tmp_path, VALID + "  " + text + "\n").startswith(expected)


# --- Rules between keys --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DISCOVERY, "1: token: required with discovery"),
        ("role: server\nserver: https://10.0.0.5:8443\n", "2: token: required to join a server"),
        ("role: agent\ntoken: x\n", "1: role: an agent needs server or discovery"),
        ("role: agent\n", "1: role: an agent needs server or discovery"),
        ("token: x\n", "1: role: required: server, agent or cluster-init"),
        ("role:\ntoken: x\n", "1: role: required: server, agent or cluster-init"),
        ("role: master\n", "1: role: 'master' is not a role"),
        ("role: Server\n", "1: role: 'Server' is not a role; did you mean 'server'?"),
        (
            "role: server\ntoken: x\nserver: https://a:8443\n" + DISCOVERY,
            "4: discovery: set either server (join that server) or discovery",
        ),
        (
            "role: cluster-init\ntoken: x\nserver: https://a:8443\n",
            "3: server: role cluster-init creates a new cluster; use role: server to join one",
        ),
        (
            "role: cluster-init\ntoken: x\n" + DISCOVERY,
            "3: discovery: role cluster-init creates a new cluster; use role: server to discover",
        ),
        ("role: server\ntoken: x\nserver: 10.0.0.5\n", "3: server: '10.0.0.5' is not a URL like"),
        ("role: server\ntoken: x\nserver: http://a:1\n", "3: server: 'http://a:1' is not a URL"),
        ("role: server\ntoken: x\nserver: https://a:99999\n", "3: server: 'https://a:99999'"),
        ("role: server\ntoken: ''\n", "2: token: is empty"),
    ],
)
def test_relations(tmp_path: Path, text: str, expected: str) -> None:
    found = errors(tmp_path, text)
    assert any(line.startswith(expected) for line in found), found


def test_discovery_without_token_blames_the_discovery_line(tmp_path: Path) -> None:
    found = one_error(tmp_path, "role: server\nnodeName: n\n" + DISCOVERY)
    assert found.startswith("3: token: required with discovery")


def test_relations_are_skipped_when_a_file_is_unreadable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("role: server\ntoken: [\n")
    good = tmp_path / "config.yaml"
    good.write_text(DISCOVERY)
    with pytest.raises(ConfigError) as caught:
        load_config(good, implicit_paths=[broken], default_path=None)
    # Only the syntax error: "token required" would send the operator the wrong way.
    assert len(caught.value.issues) == 1
    assert "YAML syntax error" in caught.value.issues[0].message


def test_role_server_without_server_or_discovery_is_valid(tmp_path: Path) -> None:
    assert load_text(tmp_path, "role: server\n").config == Config(role=JoinRole.SERVER)


def test_join_a_server(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, "role: agent\ntoken: t\nserver: https://10.0.0.5:8443\n")
    assert loaded.config.server == "https://10.0.0.5:8443"


@pytest.mark.parametrize(
    "server", [" https://10.0.0.5:8443", "https://10.0.0.5:8443 ", "\thttps://a"]
)
def test_server_with_surrounding_whitespace_is_refused_as_k3s_does(
    tmp_path: Path, server: str
) -> None:
    # Python's urlsplit strips a leading space; Go's url.Parse (k3s) refuses the URL.
    found = one_error(tmp_path, f"role: agent\ntoken: t\nserver: {json.dumps(server)}\n")
    assert found.startswith("3: server: ")
    assert "whitespace" in found


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("tpm://", "TPM tokens are not supported"),
        ("tpm://abc", "TPM tokens are not supported"),
        ("K10" + "X" * 64 + "::server:secretpart", "CA hash is not hexadecimal"),
        ("K10" + "ab" * 16 + "::server:secretpart", "has 32 characters, not 64"),
        ("K10" + "ab" * 32 + "::secretpart", "no username:password"),
    ],
)
def test_unusable_join_tokens_are_refused_at_their_line(
    tmp_path: Path, token: str, expected: str
) -> None:
    found = one_error(tmp_path, f"role: agent\nserver: https://a\ntoken: {token!r}\n")
    assert found.startswith("3: token: ")
    assert expected in found
    assert "secretpart" not in found
    assert "abc" not in found


@pytest.mark.parametrize(
    "token", ["K10" + "aB" * 32 + "::server:pw", "K10::server:pw", "abcdef.0123456789abcdef", "x"]
)
def test_k3s_join_tokens_are_accepted(tmp_path: Path, token: str) -> None:
    loaded = load_text(tmp_path, f"role: agent\nserver: https://a\ntoken: {token!r}\n")
    assert loaded.config.token is not None
    assert loaded.config.token.reveal() == token


# --- Other fields ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nodeName: Node_1", "4: nodeName: 'Node_1' is not a Kubernetes node name"),
        ("nodeName: -a", "4: nodeName: '-a' is not a Kubernetes node name"),
        ("address: node-1", "4: address: 'node-1' is not an IP address"),
        ("internalAddress: 10.0.0.5,x", "4: internalAddress: 'x' is not an IP address"),
        ("dataDir: var/lib/x", "4: dataDir: 'var/lib/x' must be an absolute path"),
    ],
)
def test_bad_fields(tmp_path: Path, text: str, expected: str) -> None:
    assert one_error(tmp_path, SERVER + text + "\n").startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("preInstructions: x", "4: preInstructions: expected a list of instructions"),
        ("preInstructions: [x]", "4: preInstructions[0]: expected a map, but YAML read the string"),
        ("preInstructions: [~]", "4: preInstructions[0]: empty instruction"),
        (
            "preInstructions: [{image: a, imgae: b}]",
            "4: preInstructions[0].imgae: unknown key; did you mean 'image'?",
        ),
        (
            "preInstructions: [{image: a, env: X=1}]",
            "4: preInstructions[0].env: expected a list of strings",
        ),
        (
            "preInstructions: [{image: a, saveOutput: 'yes'}]",
            "4: preInstructions[0].saveOutput: expected true or false",
        ),
        (
            "postInstructions: [{name: x}]",
            "4: postInstructions[0]: needs an image or a command to run",
        ),
        ("postInstructions: [{command: 5}]", "4: postInstructions[0].command: expected a string"),
    ],
)
def test_bad_instructions(tmp_path: Path, text: str, expected: str) -> None:
    assert one_error(tmp_path, SERVER + text + "\n").startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("resources: {a: b}", "4: resources: expected a list of Kubernetes objects"),
        ("resources: [x]", "4: resources[0]: expected a Kubernetes object (map)"),
        ("resources: [{kind: ConfigMap}]", "4: resources[0].apiVersion: required"),
        ("bootstrapResources: [{apiVersion: v1}]", "4: bootstrapResources[0].kind: required"),
    ],
)
def test_bad_resources(tmp_path: Path, text: str, expected: str) -> None:
    assert one_error(tmp_path, SERVER + text + "\n").startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("registries: [a]", "4: registries: expected a map, found a list"),
        ("registries: {mirror: {}}", "4: registries.mirror: unknown key; did you mean 'mirrors'?"),
        (
            "registries: {mirrors: {docker.io: {endpoints: [a]}}}",
            "4: registries.mirrors.docker.io.endpoints: unknown key; did you mean 'endpoint'?",
        ),
        (
            "registries: {mirrors: {docker.io: {endpoint: a}}}",
            "4: registries.mirrors.docker.io.endpoint: expected a list of strings",
        ),
        (
            "registries: {mirrors: {docker.io: {rewrite: {a: 1}}}}",
            "4: registries.mirrors.docker.io.rewrite.a: expected a string",
        ),
        (
            "registries: {configs: {r: {tls: {insecure_skip_verify: 'no'}}}}",
            "4: registries.configs.r.tls.insecure_skip_verify: expected true or false",
        ),
        (
            "registries: {configs: {r: {auth: {user: a}}}}",
            "4: registries.configs.r.auth.user: unknown key; did you mean",
        ),
        ("registries: {configs: {r: {auth: [a]}}}", "4: registries.configs.r.auth: expected a map"),
    ],
)
def test_bad_registries(tmp_path: Path, text: str, expected: str) -> None:
    assert one_error(tmp_path, SERVER + text + "\n").startswith(expected)


def test_registries_report_each_problem_once(tmp_path: Path) -> None:
    found = one_error(tmp_path, SERVER + "registries: {mirrors: {r: {endpoint: [0123]}}}\n")
    assert "octal" in found


def test_registries_take_yes_in_a_yes_or_no_field(tmp_path: Path) -> None:
    text = "registries: {configs: {r: {tls: {insecure_skip_verify: yes}}}}\n"
    registries = load_text(tmp_path, SERVER + text).config.registries
    assert registries == {"configs": {"r": {"tls": {"insecure_skip_verify": True}}}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "extraConfig: {secrets-encryption: yes}",
            "YAML 1.1 reads yes as the bool true; quote it ('yes') for the string, or write true",
        ),
        (
            "rancherValues: {a: [1, 0777]}",
            "4: rancherValues.a[1]: YAML 1.1 reads 0777 as the octal number 511",
        ),
        (
            "rancherValues: {when: 2024-01-01}",
            "4: rancherValues.when: YAML 1.1 reads 2024-01-01 as a date; "
            "quote it ('2024-01-01') for the string",
        ),
        ("rancherValues: {n: 1e3}", "YAML 1.2 (Go, k3s, Helm) reads 1e3 as a number"),
        ("rancherValues: {n: .nan}", "YAML reads .nan as nan"),
        ("extraConfig: {time: 12:30}", "sexagesimal"),
    ],
)
def test_surprises_in_free_form_values(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in one_error(tmp_path, SERVER + text + "\n")


# --- The token -----------------------------------------------------------------------


def test_secret() -> None:
    secret = Secret(TOKEN)
    assert repr(secret) == str(secret) == f"{secret}" == "<redacted>"
    assert secret.reveal() == TOKEN
    assert secret == Secret(TOKEN)
    assert secret != Secret("other")
    assert secret != TOKEN
    assert hash(secret) == hash(Secret(TOKEN))
    assert TOKEN not in repr(Config(role=JoinRole.SERVER, token=secret))
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert dataclasses.replace(Config(role=JoinRole.SERVER, token=secret)).token is secret


@pytest.mark.parametrize(
    "text",
    [
        "token: 0123",
        "token: 0x1F",
        "token: on",
        "token: 12:30",
        "token: 1e3",
        "token: 2024-01-01",
        "token: [0123]",
        "token: {a: 0123}",
        "token: !!binary MDEyMw==",
        "token: !0123 x",
        'token: "0123',
        "token: 0123\ntoken: 0123",
        "extraConfig: {agent-token: 0123}",
        "rancherValues: {bootstrapPassword: yes}",
        "registries: {configs: {r: {auth: {password: 0123}}}}",
    ],
)
def test_the_token_is_never_echoed(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "role: server\n" + text + "\n" + DISCOVERY)
    output = str(caught.value) + repr(caught.value.issues)
    for secret in ("0123", "83", "750", "1000", "2024", "0x1F", "31", "MDEyMw"):
        assert secret not in output.replace(str(tmp_path), ""), output


def test_token_is_kept_as_a_secret(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, VALID)
    assert isinstance(loaded.config.token, Secret)
    assert TOKEN not in repr(loaded)
    assert config_to_dict(loaded.config)["token"] == "<redacted>"
    assert config_to_dict(loaded.config, redact=False)["token"] == TOKEN


# --- The full config -----------------------------------------------------------------

FULL = f"""\
role: server
token: {TOKEN}
discovery:
  params: {{provider: static, addrs: "10.0.0.1 10.0.0.2:9443"}}
  expectedServers: 5
  serverCacheDuration: 2m30s
kubernetesVersion: v1.31.4+rke2r1
rancherVersion: v2.9.3
rancherValues:
  hostname: rancher.example.com
  replicas: 3
  bootstrapPassword: admin
tlsSans: [rancher.example.com, 10.0.0.100]
nodeName: node-1
address: 203.0.113.5
internalAddress: 10.0.0.5,fd00::5
taints: ["node-role=control:NoSchedule"]
labels: [zone=a]
extraConfig:
  write-kubeconfig-mode: "0644"
  disable: [traefik]
  agent-token: another-secret
preInstructions:
  - name: hello
    image: busybox
    args: [echo, hi]
    env: [A=1, PASSWORD=hunter2]
    saveOutput: true
postInstructions:
  - command: /bin/true
resources:
  - apiVersion: v1
    kind: ConfigMap
    metadata: {{name: a}}
bootstrapResources:
  - apiVersion: v1
    kind: Secret
    metadata: {{name: b}}
    stringData: {{key: value}}
registries:
  mirrors:
    docker.io:
      endpoint: [https://mirror.example.com]
      rewrite: {{"^rancher/(.*)": "mirror/rancher/$1"}}
  configs:
    mirror.example.com:
      auth: {{username: u, password: p}}
      tls: {{ca_file: /etc/ca.pem, insecure_skip_verify: false}}
systemDefaultRegistry: registry.example.com
runtimeInstallerImage: example/installer:v1
rancherInstallerImage: example/rancher-installer:v1
dataDir: /srv/rancherd
"""


def test_every_field(tmp_path: Path) -> None:
    config = load_text(tmp_path, FULL).config
    assert config == Config(
        role=JoinRole.SERVER,
        token=Secret(TOKEN),
        discovery=DiscoveryConfig(
            params=DiscoveryParams.from_mapping(
                {"provider": "static", "addrs": "10.0.0.1 10.0.0.2:9443"}
            ),
            expected_servers=5,
            server_cache_duration=150.0,
        ),
        kubernetes_version="v1.31.4+rke2r1",
        rancher_version="v2.9.3",
        rancher_values={
            "hostname": "rancher.example.com",
            "replicas": 3,
            "bootstrapPassword": "admin",
        },
        tls_sans=("rancher.example.com", "10.0.0.100"),
        node_name="node-1",
        address="203.0.113.5",
        internal_address="10.0.0.5,fd00::5",
        taints=("node-role=control:NoSchedule",),
        labels=("zone=a",),
        extra_config={
            "write-kubeconfig-mode": "0644",
            "disable": ("traefik",),
            "agent-token": "another-secret",
        },
        pre_instructions=(
            Instruction(
                name="hello",
                image="busybox",
                args=("echo", "hi"),
                env=("A=1", "PASSWORD=hunter2"),
                save_output=True,
            ),
        ),
        post_instructions=(Instruction(command="/bin/true"),),
        resources=(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "b"},
                "stringData": {"key": "value"},
            },
        ),
        registries={
            "mirrors": {
                "docker.io": {
                    "endpoint": ("https://mirror.example.com",),
                    "rewrite": {"^rancher/(.*)": "mirror/rancher/$1"},
                }
            },
            "configs": {
                "mirror.example.com": {
                    "auth": {"username": "u", "password": "p"},
                    "tls": {"ca_file": "/etc/ca.pem", "insecure_skip_verify": False},
                }
            },
        },
        system_default_registry="registry.example.com",
        runtime_installer_image="example/installer:v1",
        rancher_installer_image="example/rancher-installer:v1",
        data_dir=Path("/srv/rancherd"),
    )
    assert config.discovery is not None
    assert config.discovery.params.typed_as(StaticParams).addrs == (
        HostPort("10.0.0.1"),
        HostPort("10.0.0.2", 9443),
    )
    assert PurePosixPath(str(config.data_dir)).is_absolute()


def test_config_is_frozen_all_the_way_down(tmp_path: Path) -> None:
    config = load_text(tmp_path, FULL).config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.role = JoinRole.AGENT  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.rancher_values["replicas"] = 1  # type: ignore[index]
    assert isinstance(config.extra_config["disable"], tuple)


def test_redacted_dict_hides_every_secret(tmp_path: Path) -> None:
    config = load_text(tmp_path, FULL).config
    shown = repr(config_to_dict(config))
    for secret in (TOKEN, "hunter2", "another-secret", "admin", "'p'", "'value'"):
        assert secret not in shown
    plain = config_to_dict(config, redact=False)
    assert plain["extraConfig"]["agent-token"] == "another-secret"
    assert plain["preInstructions"][0]["env"] == ["A=1", "PASSWORD=hunter2"]
    assert config_to_dict(config)["preInstructions"][0]["env"] == ["A=1", "PASSWORD=<redacted>"]


def test_unredacted_dict_loads_back_to_the_same_config(tmp_path: Path) -> None:
    import yaml

    config = load_text(tmp_path, FULL).config
    text = yaml.safe_dump(config_to_dict(config, redact=False), sort_keys=False)
    assert load_text(tmp_path, text, "again.yaml").config == config


def test_issue_in_a_drop_in_names_the_drop_in(tmp_path: Path) -> None:
    main = tmp_path / "config.yaml"
    main.write_text(VALID)
    (tmp_path / "config.yaml.d").mkdir()
    drop_in = tmp_path / "config.yaml.d/10-x.yaml"
    drop_in.write_text("# comment\ndiscovery:\n  expectedServers: many\n")
    with pytest.raises(ConfigError) as caught:
        load_config(main, implicit_paths=(), default_path=None)
    assert [str(i) for i in caught.value.issues] == [
        f"{drop_in}:3: discovery.expectedServers: expected a whole number, but YAML read the "
        "string 'many'"
    ]
