"""The config's model: frozen dataclasses, the defaults, and one declaration per key.

Every field of ``Config``, ``DiscoveryConfig`` and ``Instruction`` is declared once, with
``spec(...)`` metadata naming how it is read (a method of ``rancherd.config.check.Checker``)
and how it is dumped (a function of ``rancherd.config.dump``). Its YAML key is the field
name in camelCase. The key lists, the reading and the dump all come from these fields, so
a new key is one field here (plus its reader or dumper when no existing one fits).
"""

from __future__ import annotations

import dataclasses
import hmac
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NoReturn, TypeAlias

from rancherd.discovery.params import DEFAULT_SERVER_CACHE_DURATION, DiscoveryParams, HostPort
from rancherd.kinds import JoinRole, Preset

__all__ = [
    "CLOUD_CONFIG_PATHS",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_DATA_DIR",
    "DEFAULT_EXPECTED_SERVERS",
    "DEFAULT_LISTEN_ADDRESS",
    "DEFAULT_PORT",
    "DEFAULT_SERVER_CACHE_DURATION",
    "IMPLICIT_PATHS",
    "MAX_ADVERTISE_ADDRESSES",
    "MAX_EXPECTED_SERVERS",
    "MAX_FILE_SIZE",
    "REDACTED",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DiscoveryConfig",
    "Instruction",
    "JsonValue",
    "KeySpec",
    "Secret",
    "is_secret_name",
    "key_specs",
    "spec",
    "yaml_keys",
]

# --- Where config comes from and the defaults -----------------------------------------

IMPLICIT_PATHS: tuple[Path, ...] = (
    Path("/usr/share/oem/rancher/rancherd/config.yaml"),
    Path("/usr/share/rancher/rancherd/config.yaml"),
    Path("/oem/userdata"),  # RancherOS user data (cloud-config)
    Path("/oem/99_custom.yaml"),  # RancherOS installation yip config (cloud-config)
    Path("/oem/rancher/rancherd/config.yaml"),
    Path("/var/lib/cloud/instance/user-data.txt"),  # cloud-init user data
)
"""Read in this order before the explicit file, as the original rancherd does."""

CLOUD_CONFIG_PATHS: frozenset[Path] = frozenset(
    {
        Path("/oem/userdata"),
        Path("/oem/99_custom.yaml"),
        Path("/var/lib/cloud/instance/user-data.txt"),
    }
)
"""Files that belong to other programs: only their ``rancherd:`` key is ours."""

DEFAULT_CONFIG_PATH = Path("/etc/rancher/rancherd/config.yaml")
"""The explicit file when none is named; unlike a named one, it may be missing."""

DEFAULT_DATA_DIR = Path("/var/lib/rancher/rancherd")
DEFAULT_EXPECTED_SERVERS = 3
DEFAULT_LISTEN_ADDRESS = "0.0.0.0"
DEFAULT_PORT = 8443
"""The original rancherd's bootstrap listener port; we gossip on it."""

MAX_EXPECTED_SERVERS = 128
"""A view holds at most this many servers (``rancherd.gossip.codec.MAX_VIEW``)."""
MAX_ADVERTISE_ADDRESSES = 16
"""A node record carries at most this many addresses (``codec.MAX_ADDRESSES``)."""

MAX_FILE_SIZE = 16 * 1024 * 1024
"""Larger files are refused unread: user data is kilobytes; this is a wrong path."""

_SECRET_KEY = re.compile(
    r"(token|password|passwd|passphrase|secret|secret.?(access.?)?key|private.?key|credentials?)$"
    r"|^(auth|datastore-endpoint)$",
    re.IGNORECASE,
)
"""Keys whose values are never shown, in messages or in ``rancherd config``."""

REDACTED = "<redacted>"


def is_secret_name(name: str) -> bool:
    """Whether a key or variable name (``K3S_TOKEN``, ``password``) holds a secret."""
    return bool(_SECRET_KEY.search(name))


# --- One declaration per key ----------------------------------------------------------

Omit: TypeAlias = Literal["empty", "none", "never"]


@dataclass(frozen=True, slots=True)
class KeySpec:
    """How one field is read from YAML and written back (``field(metadata=spec(...))``)."""

    read: str
    """The ``Checker`` method that reads and checks the value: ``(entry, path) -> value``."""
    dump: str = "plain"
    """The ``rancherd.config.dump`` function that writes it back: ``(value, redact)``."""
    omit: Omit = "empty"
    """When the dump leaves it out: unset or empty, only unset (None), or never."""
    aliases: tuple[str, ...] = ()
    """Other spellings read into the same field (their lists are concatenated)."""
    required: str | None = None
    """The message when the key is missing, for a field without a default."""


_SPEC = "rancherd.config:spec"  # the dataclass field metadata key


def spec(
    read: str,
    dump: str = "plain",
    *,
    omit: Omit = "empty",
    aliases: tuple[str, ...] = (),
    required: str | None = None,
) -> dict[str, KeySpec]:
    """Field metadata declaring a config key: ``field(default=..., metadata=spec(...))``."""
    return {_SPEC: KeySpec(read, dump, omit, aliases, required)}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def key_specs(cls: type) -> Iterator[tuple[str, str, KeySpec]]:
    """``(field name, YAML key, spec)`` of each field of a config dataclass, in order."""
    for item in dataclasses.fields(cls):
        yield item.name, _camel(item.name), item.metadata[_SPEC]


def yaml_keys(cls: type) -> tuple[str, ...]:
    """Every YAML key a config dataclass reads, aliases included."""
    return tuple(k for _, key, s in key_specs(cls) for k in (key, *s.aliases))


# --- The config -----------------------------------------------------------------------


class Secret:
    """A string that is never printed: ``repr`` and ``str`` give ``<redacted>``.

    Use ``reveal()`` where the value itself is needed (key derivation, the k3s config).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret is not pickled: it would leave the process in clear")


JsonValue: TypeAlias = (
    bool | int | float | str | tuple["JsonValue", ...] | Mapping[str, "JsonValue"] | None
)
"""Free-form values (``rancherValues``, ``extraConfig``...), read-only: maps are
``MappingProxyType`` and lists are tuples; ``config_to_dict`` gives plain ones back."""

EMPTY: Mapping[str, JsonValue] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Instruction:
    """A step run before or after the install (system-agent's ``Instruction``)."""

    name: str | None = field(default=None, metadata=spec("string"))
    image: str | None = field(default=None, metadata=spec("string"))
    """A container image to run; without it ``command`` runs on the host."""
    env: tuple[str, ...] = field(default=(), metadata=spec("strings", "env"))
    """``NAME=value`` entries."""
    args: tuple[str, ...] = field(default=(), metadata=spec("strings"))
    command: str | None = field(default=None, metadata=spec("string"))
    save_output: bool = field(default=False, metadata=spec("boolean", "flag"))


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """How servers find each other and agree on who creates the cluster."""

    params: DiscoveryParams = field(
        metadata=spec(
            "params",
            "params",
            omit="never",
            required="required: the provider to find servers with, e.g. provider: mdns",
        )
    )
    expected_servers: int = field(
        default=DEFAULT_EXPECTED_SERVERS, metadata=spec("expected_servers", omit="never")
    )
    """Servers that must agree on one view before the cluster is created."""
    server_cache_duration: float = field(
        default=DEFAULT_SERVER_CACHE_DURATION, metadata=spec("duration", "duration", omit="never")
    )
    """Seconds a peer is remembered after it was last heard of."""
    listen_address: str = field(
        default=DEFAULT_LISTEN_ADDRESS, metadata=spec("listen_address", omit="never")
    )
    port: int = field(default=DEFAULT_PORT, metadata=spec("port", omit="never"))
    advertise_addresses: tuple[HostPort, ...] = field(
        default=(), metadata=spec("advertise", "strs", omit="never")
    )
    """Addresses peers reach this node at; empty means derived at runtime."""
    preset: Preset = field(default=Preset.LAN, metadata=spec("preset", "enum", omit="never"))


@dataclass(frozen=True, slots=True)
class Config:
    """The effective config: every field of the original rancherd plus ours."""

    role: JoinRole = field(metadata=spec("role", "enum", omit="never"))
    token: Secret | None = field(default=None, metadata=spec("token", "secret"))
    server: str | None = field(default=None, metadata=spec("server"))
    """URL of an existing server to join (``https://host:port``)."""
    discovery: DiscoveryConfig | None = field(default=None, metadata=spec("discovery", "section"))
    kubernetes_version: str | None = field(default=None, metadata=spec("line"))
    rancher_version: str | None = field(default=None, metadata=spec("line"))
    rancher_values: Mapping[str, JsonValue] = field(
        default_factory=lambda: EMPTY, metadata=spec("free_map")
    )
    tls_sans: tuple[str, ...] = field(default=(), metadata=spec("lines"))
    node_name: str | None = field(default=None, metadata=spec("node_name"))
    address: str | None = field(default=None, metadata=spec("ip_list"))
    internal_address: str | None = field(default=None, metadata=spec("ip_list"))
    taints: tuple[str, ...] = field(default=(), metadata=spec("lines"))
    labels: tuple[str, ...] = field(default=(), metadata=spec("lines"))
    extra_config: Mapping[str, JsonValue] = field(
        default_factory=lambda: EMPTY, metadata=spec("free_map")
    )
    pre_instructions: tuple[Instruction, ...] = field(
        default=(), metadata=spec("instructions", "sections")
    )
    post_instructions: tuple[Instruction, ...] = field(
        default=(), metadata=spec("instructions", "sections")
    )
    resources: tuple[Mapping[str, JsonValue], ...] = field(
        default=(),
        # "bootstrapResources" is the original's deprecated spelling of "resources".
        metadata=spec("resources", "resources", aliases=("bootstrapResources",)),
    )
    """Kubernetes objects applied once the cluster runs (``bootstrapResources`` appended)."""
    registries: Mapping[str, JsonValue] | None = field(
        default=None, metadata=spec("registries", omit="none")
    )
    """k3s/rke2 ``registries.yaml``: ``mirrors`` and ``configs``."""
    system_default_registry: str | None = field(default=None, metadata=spec("line"))
    runtime_installer_image: str | None = field(default=None, metadata=spec("line"))
    rancher_installer_image: str | None = field(default=None, metadata=spec("line"))
    data_dir: Path = field(
        default=DEFAULT_DATA_DIR, metadata=spec("data_dir", "path", omit="never")
    )


# --- Problems -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem, printed as ``file:line: key.path: message``."""

    file: str | None
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
            where += ": "
        return f"{where}{self.key}: {self.message}" if self.key else f"{where}{self.message}"


class ConfigError(Exception):
    """The config cannot be used; ``issues`` holds every problem found, in file order."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))
