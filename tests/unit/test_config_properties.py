"""Properties: any input gives a config or a ConfigError; valid configs load to what was meant."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rancherd.config import (
    Config,
    ConfigError,
    DiscoveryConfig,
    Instruction,
    LoadedConfig,
    Secret,
    config_to_dict,
    load_config,
)
from rancherd.discovery.params import DiscoveryParams, HostPort
from rancherd.kinds import USER_PRESETS, JoinRole

# Function-scoped tmp_path does not mix with @given; one directory per example instead.


def load_bytes(data: bytes) -> LoadedConfig | ConfigError:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yaml"
        path.write_bytes(data)
        try:
            return load_config(path, implicit_paths=(), default_path=None)
        except ConfigError as exc:
            error = exc
    assert error.issues
    assert all("internal error" not in issue.message for issue in error.issues), error
    return error


class QuotingDumper(yaml.SafeDumper):
    """Writes every string in double quotes, as a careful operator would."""


QuotingDumper.add_representer(
    str, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"')
)


def dump(value: object) -> bytes:
    return yaml.dump(value, Dumper=QuotingDumper, allow_unicode=True, sort_keys=False).encode()


# --- Anything at all -----------------------------------------------------------------

_YAML_BITS = st.sampled_from(
    [
        "role", "token", "discovery", "params", "provider", "mdns", "expectedServers",
        "serverCacheDuration", "rancherd", "extraConfig", ": ", ":", " ", "  ", "\n", "- ",
        "[", "]", "{", "}", ",", "&a ", "*a", "!!str ", "!!binary ", "!x ", "<<: ", "? ",
        "'", '"', "#cloud-config\n", "0123", "on", "1e3", "12:30", "2024-13-45", ".inf",
        "~", "|\n", ">\n", "\t", "\\", "%YAML 1.1\n", "---\n", "...\n", "\x00", "\ufeff",
        "server", "agent", "1m", "provider=mdns service=x", "\x85", "é",
    ]
)  # fmt: skip


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_YAML_BITS, max_size=40).map("".join))
def test_yaml_like_text_gives_a_config_or_a_config_error(text: str) -> None:
    load_bytes(text.encode())


@given(st.text())
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    load_bytes(text.encode())


@given(st.binary())
def test_any_bytes_give_a_config_or_a_config_error(data: bytes) -> None:
    load_bytes(data)


_KEYS = st.sampled_from(
    [
        "role", "token", "server", "discovery", "params", "provider", "service", "addrs",
        "path", "expectedServers", "serverCacheDuration", "port", "listenAddress",
        "advertiseAddresses", "preset", "tlsSans", "nodeName", "extraConfig", "rancherValues",
        "preInstructions", "image", "command", "env", "saveOutput", "resources", "apiVersion",
        "kind", "registries", "mirrors", "configs", "auth", "tls", "endpoint", "dataDir",
        "rancherd", "address",
    ]
) | st.text(max_size=8)  # fmt: skip
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["mdns", "static", "file", "server", "agent", "cluster-init", "1m", "60"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=30,
)


@given(st.dictionaries(_KEYS, _VALUES, max_size=8), st.booleans())
def test_any_nested_values_give_a_config_or_a_config_error(
    value: dict[str, Any], quote_strings: bool
) -> None:
    if quote_strings:
        load_bytes(dump(value))
    else:
        load_bytes(yaml.safe_dump(value, allow_unicode=True).encode())


@given(_VALUES)
def test_any_document_gives_a_config_or_a_config_error(value: object) -> None:
    load_bytes(yaml.safe_dump(value).encode())


# --- Valid configs -------------------------------------------------------------------

_TEXT = st.text(min_size=1, max_size=30)
_SECRET_TEXT = _TEXT.filter(lambda text: text.strip() != "")
_LINE = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30)
"""Names, versions, hosts: a control character there is refused (issue 15)."""
_NODE_NAME = st.from_regex(
    r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\.[a-z0-9]{1,5}){0,2}", fullmatch=True
)
_IP = st.ip_addresses().map(str)
_HOST = _IP | st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9](\.[a-z]{2,5}){0,2}", fullmatch=True)
_HOST_PORT = st.builds(HostPort, _HOST, st.none() | st.integers(1, 65535))
_PARAMS = st.one_of(
    st.builds(
        lambda service, v4: {"provider": "mdns", "service": service, "v4": v4},
        st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,6})?", fullmatch=True),
        st.sampled_from(["true", "false", "1", "0"]),
    ),
    st.builds(
        lambda addrs: {"provider": "static", "addrs": " ".join(map(str, addrs))},
        st.lists(_HOST_PORT, min_size=1, max_size=4),
    ),
    st.builds(lambda name: {"provider": "file", "path": f"/srv/{name}"}, _TEXT),
)
_JSON_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_JSON = st.recursive(
    _JSON_SCALAR,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=12,
)
_JSON_MAP = st.dictionaries(_TEXT, _JSON, max_size=4)


def frozen(value: Any) -> Any:
    """The read-only shape the loader gives back: lists become tuples."""
    if isinstance(value, dict):
        return {key: frozen(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(frozen(item) for item in value)
    return value


@st.composite
def discoveries(draw: st.DrawFn) -> tuple[dict[str, Any], DiscoveryConfig]:
    params = draw(_PARAMS)
    written: dict[str, Any] = {"params": params}
    expected: dict[str, Any] = {"params": DiscoveryParams.from_mapping(params)}
    if draw(st.booleans()):
        written["expectedServers"] = expected["expected_servers"] = draw(st.integers(1, 128))
    if draw(st.booleans()):
        milliseconds = draw(st.integers(1, 10**9))
        written["serverCacheDuration"] = f"{milliseconds}ms"
        expected["server_cache_duration"] = milliseconds * 10**6 / 1e9
    if draw(st.booleans()):
        written["listenAddress"] = expected["listen_address"] = draw(_IP)
    if draw(st.booleans()):
        written["port"] = expected["port"] = draw(st.integers(1, 65535))
    if draw(st.booleans()):
        addresses = draw(st.lists(_HOST_PORT, max_size=16))
        written["advertiseAddresses"] = [str(a) for a in addresses]
        expected["advertise_addresses"] = tuple(addresses)
    if draw(st.booleans()):
        preset = draw(st.sampled_from(USER_PRESETS))
        written["preset"], expected["preset"] = preset.value, preset
    return written, DiscoveryConfig(**expected)


@st.composite
def instructions(draw: st.DrawFn) -> tuple[dict[str, Any], Instruction]:
    written: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    runs = draw(st.sampled_from([("image",), ("command",), ("image", "command")]))
    for key in ("name", *runs):
        if key in runs or draw(st.booleans()):
            written[key] = expected[key] = draw(_TEXT)
    for key in ("env", "args"):
        if draw(st.booleans()):
            items = draw(st.lists(_TEXT, max_size=3))
            written[key], expected[key] = items, tuple(items)
    if draw(st.booleans()):
        written["saveOutput"] = expected["save_output"] = draw(st.booleans())
    return written, Instruction(**expected)


def _joining(draw: st.DrawFn, role: JoinRole) -> tuple[dict[str, Any], dict[str, Any]]:
    """Token, server and discovery, as the role allows them."""
    written: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    how = "alone"
    if role is JoinRole.AGENT:
        how = draw(st.sampled_from(["server", "discovery"]))
    elif role is JoinRole.SERVER:
        how = draw(st.sampled_from(["alone", "server", "discovery"]))
    if how != "alone" or draw(st.booleans()):
        token = draw(_SECRET_TEXT)
        written["token"], expected["token"] = token, Secret(token)
    if how == "server":
        host = draw(_HOST_PORT)
        written["server"] = expected["server"] = f"https://{host}"
    elif how == "discovery":
        written["discovery"], expected["discovery"] = draw(discoveries())
    return written, expected


def _scalars(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one-line strings, the node name and the addresses."""
    written: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    for key, name in (
        ("kubernetesVersion", "kubernetes_version"),
        ("rancherVersion", "rancher_version"),
        ("systemDefaultRegistry", "system_default_registry"),
        ("runtimeInstallerImage", "runtime_installer_image"),
        ("rancherInstallerImage", "rancher_installer_image"),
    ):
        if draw(st.booleans()):
            written[key] = expected[name] = draw(_LINE)
    if draw(st.booleans()):
        written["nodeName"] = expected["node_name"] = draw(_NODE_NAME)
    for key, name in (("address", "address"), ("internalAddress", "internal_address")):
        if draw(st.booleans()):
            written[key] = expected[name] = ",".join(draw(st.lists(_IP, min_size=1, max_size=2)))
    if draw(st.booleans()):
        directory = "/" + draw(st.text(st.characters(blacklist_characters="\0"), max_size=20))
        written["dataDir"], expected["data_dir"] = directory, Path(directory)
    return written, expected


def _collections(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """Lists of strings, free-form maps and instructions."""
    written: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    for key, name in (("tlsSans", "tls_sans"), ("taints", "taints"), ("labels", "labels")):
        if draw(st.booleans()):
            items = draw(st.lists(_LINE, max_size=3))
            written[key], expected[name] = items, tuple(items)
    for key, name in (("rancherValues", "rancher_values"), ("extraConfig", "extra_config")):
        if draw(st.booleans()):
            value = draw(_JSON_MAP)
            written[key], expected[name] = value, frozen(value)
    for key, name in (
        ("preInstructions", "pre_instructions"),
        ("postInstructions", "post_instructions"),
    ):
        if draw(st.booleans()):
            pairs = draw(st.lists(instructions(), max_size=3))
            written[key] = [w for w, _ in pairs]
            expected[name] = tuple(e for _, e in pairs)
    return written, expected


def _objects(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """Resources (under both spellings) and registries."""
    written: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    resources: list[Any] = []
    for key in ("resources", "bootstrapResources"):
        if draw(st.booleans()):
            objects = [
                {"apiVersion": draw(_TEXT), "kind": draw(_TEXT), **draw(_JSON_MAP)}
                for _ in range(draw(st.integers(0, 2)))
            ]
            written[key] = objects
            resources.extend(frozen(objects))
    expected["resources"] = tuple(resources)
    if draw(st.booleans()):
        registries = {
            "mirrors": {draw(_TEXT): {"endpoint": draw(st.lists(_LINE, max_size=2))}},
            "configs": {
                draw(_TEXT): {
                    "auth": {"username": draw(_TEXT), "password": draw(_TEXT)},
                    "tls": {"insecure_skip_verify": draw(st.booleans())},
                }
            },
        }
        written["registries"], expected["registries"] = registries, frozen(registries)
    return written, expected


@st.composite
def configs(draw: st.DrawFn) -> tuple[dict[str, Any], Config]:
    role = draw(st.sampled_from(JoinRole))
    written: dict[str, Any] = {"role": role.value}
    expected: dict[str, Any] = {"role": role}
    for part in (_joining(draw, role), _scalars(draw), _collections(draw), _objects(draw)):
        written.update(part[0])
        expected.update(part[1])
    return written, Config(**expected)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(configs())
def test_valid_configs_load_to_the_expected_dataclass(case: tuple[dict[str, Any], Config]) -> None:
    written, expected = case
    loaded = load_bytes(dump(written))
    assert isinstance(loaded, LoadedConfig), loaded
    assert loaded.config == expected
    assert set(loaded.sources) == set(written)
    # What config_to_dict gives back loads to the same config again.
    again = load_bytes(dump(config_to_dict(loaded.config, redact=False)))
    assert isinstance(again, LoadedConfig), again
    assert again.config == expected


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(configs())
def test_valid_configs_also_load_from_a_cloud_config(case: tuple[dict[str, Any], Config]) -> None:
    written, expected = case
    text = b"#cloud-config\n" + dump({"hostname": "node-1", "rancherd": written, "runcmd": []})
    loaded = load_bytes(text)
    assert isinstance(loaded, LoadedConfig), loaded
    assert loaded.config == expected


@given(configs())
def test_the_token_never_shows(case: tuple[dict[str, Any], Config]) -> None:
    written, _ = case
    if "token" not in written:
        return
    token = "zq-the-token-value-qz"  # drawn text could also be a path or a name elsewhere
    loaded = load_bytes(dump({**written, "token": token}))
    assert isinstance(loaded, LoadedConfig), loaded
    assert loaded.config.token == Secret(token)
    for shown in (repr(loaded), loaded.to_text(), json.dumps(loaded.to_json_dict())):
        assert token not in shown
