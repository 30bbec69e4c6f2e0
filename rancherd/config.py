"""The rancherd config: frozen dataclasses and a strict loader that reports every mistake.

Loading follows the original rancherd (``pkg/config``): the implicit paths first, then the
explicit file; a file's ``rancherd:`` key if it has one; each file's ``<file>.d/*.yaml``
drop-ins right after it; maps merge recursively, later scalars win, lists concatenate.

Where the original silently ignored what it did not understand, this loader refuses it,
because a boot-time daemon that guesses creates a second cluster or none: unknown keys,
wrong types, duplicate keys, YAML 1.1 surprises (``token: 0123`` read as 83, ``on`` read as
true), bad durations and an unusable discovery provider are all errors. Every error is
collected (never only the first) into one ``ConfigError``, each naming the file, line and
dotted key; file and line travel with every value through the merge. The token is a
``Secret`` and never appears in output or messages.

``load_config`` raises nothing but ``ConfigError``, whatever the files hold.
"""

from __future__ import annotations

import dataclasses
import difflib
import hmac
import ipaddress
import os
import re
import stat
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn, TypeAlias, cast
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor
from yaml.error import MarkedYAMLError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError
from yaml.resolver import Resolver

from rancherd.discovery.params import (
    DiscoveryParams,
    HostPort,
    ParamsError,
    check_params,
    parse_host_port,
    parse_params_string,
)
from rancherd.durations import DurationError, format_duration, parse_duration
from rancherd.join_token import TokenError, parse_token

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
    "REDACTED",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DiscoveryConfig",
    "Instruction",
    "JsonValue",
    "LoadedConfig",
    "Preset",
    "Role",
    "Secret",
    "config_to_dict",
    "is_secret_name",
    "load_config",
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
DEFAULT_SERVER_CACHE_DURATION = 60.0
DEFAULT_LISTEN_ADDRESS = "0.0.0.0"
DEFAULT_PORT = 8443
"""The original rancherd's bootstrap listener port; we gossip on it."""

MAX_EXPECTED_SERVERS = 128
"""A view holds at most this many servers (``rancherd.gossip.codec.MAX_VIEW``)."""
MAX_ADVERTISE_ADDRESSES = 16
"""A node record carries at most this many addresses (``codec.MAX_ADDRESSES``)."""

MAX_FILE_SIZE = 16 * 1024 * 1024
"""Larger files are refused unread: user data is kilobytes; this is a wrong path."""
_MAX_DEPTH = 64
_MAX_VALUES = 200_000
"""Bounds on nesting and on values after alias expansion (a "billion laughs" file)."""

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


class Role(StrEnum):
    """What a node is asked to be."""

    SERVER = "server"
    """A control-plane node: creates the cluster if elected (or alone), else joins it."""
    AGENT = "agent"
    """A worker: joins a server, never takes part in the election."""
    CLUSTER_INIT = "cluster-init"
    """This node creates the cluster, without discovery."""


class Preset(StrEnum):
    """Gossip timing presets (``rancherd.gossip.config.PRESETS``)."""

    LAN = "lan"
    LOCAL = "local"


JsonValue: TypeAlias = (
    bool | int | float | str | tuple["JsonValue", ...] | Mapping[str, "JsonValue"] | None
)
"""Free-form values (``rancherValues``, ``extraConfig``...), read-only: maps are
``MappingProxyType`` and lists are tuples; ``config_to_dict`` gives plain ones back."""

_EMPTY: Mapping[str, JsonValue] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Instruction:
    """A step run before or after the install (system-agent's ``Instruction``)."""

    name: str | None = None
    image: str | None = None
    """A container image to run; without it ``command`` runs on the host."""
    env: tuple[str, ...] = ()
    """``NAME=value`` entries."""
    args: tuple[str, ...] = ()
    command: str | None = None
    save_output: bool = False


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """How servers find each other and agree on who creates the cluster."""

    params: DiscoveryParams
    expected_servers: int = DEFAULT_EXPECTED_SERVERS
    """Servers that must agree on one view before the cluster is created."""
    server_cache_duration: float = DEFAULT_SERVER_CACHE_DURATION
    """Seconds a peer is remembered after it was last heard of."""
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    port: int = DEFAULT_PORT
    advertise_addresses: tuple[HostPort, ...] = ()
    """Addresses peers reach this node at; empty means derived at runtime."""
    preset: Preset = Preset.LAN


@dataclass(frozen=True, slots=True)
class Config:
    """The effective config: every field of the original rancherd plus ours."""

    role: Role
    token: Secret | None = None
    server: str | None = None
    """URL of an existing server to join (``https://host:port``)."""
    discovery: DiscoveryConfig | None = None
    kubernetes_version: str | None = None
    rancher_version: str | None = None
    rancher_values: Mapping[str, JsonValue] = field(default_factory=lambda: _EMPTY)
    tls_sans: tuple[str, ...] = ()
    node_name: str | None = None
    address: str | None = None
    internal_address: str | None = None
    taints: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    extra_config: Mapping[str, JsonValue] = field(default_factory=lambda: _EMPTY)
    pre_instructions: tuple[Instruction, ...] = ()
    post_instructions: tuple[Instruction, ...] = ()
    resources: tuple[Mapping[str, JsonValue], ...] = ()
    """Kubernetes objects applied once the cluster runs (``bootstrapResources`` appended)."""
    registries: Mapping[str, JsonValue] | None = None
    """k3s/rke2 ``registries.yaml``: ``mirrors`` and ``configs``."""
    system_default_registry: str | None = None
    runtime_installer_image: str | None = None
    rancher_installer_image: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR


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


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """The config, and where each of its top-level keys came from."""

    config: Config
    sources: Mapping[str, Path]
    """Top-level YAML key (``role``, ``discovery``...) to the file that set it last."""
    files: tuple[Path, ...]
    """Files that contributed, in merge order."""

    def source_of(self, key: str) -> str:
        """The file that set a top-level key last, or ``default``."""
        if key == "resources" and key not in self.sources:
            key = "bootstrapResources"
        path = self.sources.get(key)
        return "default" if path is None else str(path)

    def to_json_dict(self) -> dict[str, Any]:
        """``{"config": ..., "sources": {key: file or "default"}, "files": [...]}``, redacted."""
        config = config_to_dict(self.config)
        return {
            "config": config,
            "sources": {key: self.source_of(key) for key in config},
            "files": [str(path) for path in self.files],
        }

    def to_text(self) -> str:
        """The effective config as commented YAML: each top-level key says its source."""
        lines = ["# rancherd: the effective config, merged from (in order):"]
        lines += [f"#   {path}" for path in self.files]
        lines.append("# Each top-level key says the file that set it last; the token is hidden.")
        blocks = []
        for key, value in config_to_dict(self.config).items():
            text = yaml.safe_dump(
                {key: value},
                sort_keys=False,
                default_flow_style=False,
                allow_unicode=True,
                width=2**16,
            )
            blocks.append((text.rstrip("\n").split("\n"), self.source_of(key)))
        column = min(48, max(len(block[0]) for block, _ in blocks) + 2)
        for block, source in blocks:
            comment = f"# {source}" if source == "default" else f"# from {source}"
            lines.append(f"{block[0].ljust(column)}{comment}")
            lines.extend(block[1:])
        return "\n".join(lines) + "\n"


# --- Values that remember where they were written -------------------------------------


@dataclass(frozen=True, slots=True)
class _Origin:
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class _Scalar:
    origin: _Origin
    value: object
    """What YAML made of it: str, int, float, bool, None or a date."""
    tag: str
    plain: bool
    """Written without quotes, so YAML guessed its type."""
    text: str
    """As written."""


@dataclass(frozen=True, slots=True)
class _Seq:
    origin: _Origin
    items: tuple[_Value, ...]


@dataclass(frozen=True, slots=True)
class _Entry:
    key_origin: _Origin
    value: _Value


@dataclass(frozen=True, slots=True)
class _Map:
    origin: _Origin
    entries: Mapping[str, _Entry]


_Value: TypeAlias = _Scalar | _Seq | _Map


def _merge(base: _Value | None, new: _Value) -> _Value:
    """Maps merge recursively, lists concatenate, anything else: the later one wins."""
    if isinstance(base, _Map) and isinstance(new, _Map):
        entries = dict(base.entries)
        for key, entry in new.entries.items():
            old = entries.get(key)
            value = entry.value if old is None else _merge(old.value, entry.value)
            entries[key] = _Entry(entry.key_origin, value)
        return _Map(new.origin, entries)
    if isinstance(base, _Seq) and isinstance(new, _Seq):
        return _Seq(new.origin, base.items + new.items)
    return new


# --- Issues ---------------------------------------------------------------------------


class _Issues:
    """Collects issues; never stops at the first."""

    def __init__(self) -> None:
        self.items: list[ConfigIssue] = []

    def add(self, origin: _Origin | None, key: str, message: str) -> None:
        if origin is None:
            self.items.append(ConfigIssue(None, None, key, message))
        else:
            self.items.append(ConfigIssue(origin.file, origin.line, key, message))

    def add_file(self, file: str, line: int | None, message: str) -> None:
        self.items.append(ConfigIssue(file, line, "", message))

    def __len__(self) -> int:
        return len(self.items)


def _is_secret(path: str) -> bool:
    last = path.rsplit(".", 1)[-1].split("[", 1)[0]
    return is_secret_name(last)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- YAML nodes to values -------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}


class _Converter:
    """Turns one file's composed YAML into ``_Value``s, reporting what YAML hides."""

    def __init__(self, file: str, issues: _Issues) -> None:
        self.file = file
        self.issues = issues
        self.budget = _MAX_VALUES
        self.constructor = SafeConstructor()
        self.resolver = Resolver()

    def origin(self, node: Node) -> _Origin:
        return _Origin(self.file, node.start_mark.line + 1)

    def convert(self, node: Node, path: str, depth: int = 0) -> _Value | None:
        self.budget -= 1
        if self.budget < 0:
            if self.budget == -1:
                self.issues.add(
                    self.origin(node), path, "too many values (aliases expanding?); refused"
                )
            return None
        if depth > _MAX_DEPTH:
            self.issues.add(self.origin(node), path, f"nested deeper than {_MAX_DEPTH} levels")
            return None
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != _TAG + "seq":
                self.unsupported_tag(node, path)
                return None
            items = []
            for index, child in enumerate(node.value):
                item = self.convert(child, f"{path}[{index}]", depth + 1)
                if item is not None:
                    items.append(item)
            return _Seq(self.origin(node), tuple(items))
        if isinstance(node, MappingNode):
            if node.tag != _TAG + "map":
                self.unsupported_tag(node, path)
                return None
            return self.mapping(node, path, depth)
        return None  # pragma: no cover - compose yields only these three

    def unsupported_tag(self, node: Node, path: str) -> None:
        tag = node.tag.replace(_TAG, "!!")
        shown = "" if _is_secret(path) else f" {tag}"
        self.issues.add(self.origin(node), path, f"unsupported YAML tag{shown}")

    def scalar(self, node: ScalarNode, path: str) -> _Scalar | None:
        origin = self.origin(node)
        if node.tag not in _PLAIN_TAGS:
            if node.tag == _TAG + "binary" and not _is_secret(path):
                self.issues.add(origin, path, "binary values (!!binary) are not supported")
                return None
            self.unsupported_tag(node, path)
            return None
        try:
            value = self.constructor.construct_object(node)
        except Exception:  # PyYAML raises ValueError for 2024-13-45 and similar
            what = "this value" if _is_secret(path) else repr(node.value)
            self.issues.add(
                origin,
                path,
                f"YAML 1.1 reads {what} as a {node.tag.removeprefix(_TAG)} but "
                "cannot make one of it; quote it",
            )
            return None
        # "Plain" means YAML guessed the type: no quotes and no explicit tag (!!str 0123).
        resolve = cast("Callable[..., str]", self.resolver.resolve)
        guessed = (
            node.style is None
            and not _explicitly_tagged(node)
            and node.tag == resolve(ScalarNode, node.value, (True, False))
        )
        return _Scalar(origin, value, node.tag, guessed, node.value)

    def key(self, node: Node, path: str) -> str | None:
        """A map key as a string, or None (and an issue) when YAML read something else."""
        if isinstance(node, ScalarNode) and node.tag == _TAG + "str":
            return str(node.value)
        origin = self.origin(node)
        if isinstance(node, ScalarNode) and node.tag in _PLAIN_TAGS:
            scalar = self.scalar(node, path)
            if scalar is not None:
                self.issues.add(
                    origin,
                    path,
                    f"the key {node.value!r} is read as {_describe(scalar)}; keys must be "
                    f"strings: quote it",
                )
            return None
        self.issues.add(origin, path, "keys must be strings")
        return None

    def mapping(self, node: MappingNode, path: str, depth: int) -> _Map:
        entries: dict[str, _Entry] = {}
        first_line: dict[str, int] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                merges.append(value_node)
                continue
            key = self.key(key_node, path)
            if key is None:
                continue
            key_origin = self.origin(key_node)
            if key in first_line:
                self.issues.add(
                    key_origin,
                    _join(path, key),
                    f"duplicate key (first at line {first_line[key]}); YAML would keep only "
                    "the last: remove one",
                )
                continue
            first_line[key] = key_origin.line
            value = self.convert(value_node, _join(path, key), depth + 1)
            if value is not None:
                entries[key] = _Entry(key_origin, value)
        # YAML merge keys ("<<: *defaults"): keys written in the map win; earlier merged
        # maps win over later ones, as PyYAML's flatten_mapping does.
        for merge_node in merges:
            sources = merge_node.value if isinstance(merge_node, SequenceNode) else [merge_node]
            for source in sources:
                merged = self.convert(source, path, depth + 1)
                if not isinstance(merged, _Map):
                    self.issues.add(self.origin(source), path, "<< merges only maps")
                    continue
                for key, entry in merged.entries.items():
                    entries.setdefault(key, entry)
        return _Map(self.origin(node), entries)


def _explicitly_tagged(node: Node) -> bool:
    """Whether the source shows a tag (``!!str 1e3``): then YAML did not guess."""
    mark = node.start_mark
    if mark.buffer is None:  # pragma: no cover - we always parse strings
        return False
    raw = mark.buffer[mark.pointer : node.end_mark.pointer]
    if raw.startswith("&"):  # an anchor may come first: &a !!str 1e3
        raw = raw.partition(" ")[2].lstrip()
    return raw.startswith("!")


def _describe(scalar: _Scalar) -> str:
    """What YAML made of a scalar, for messages: "the number 83", "the bool true"..."""
    value = scalar.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the bool {str(value).lower()}"
    if isinstance(value, int):
        return f"the number {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"the date {value}"


_OCTAL = re.compile(r"[-+]?0[0-7_]+")
_YAML12_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_YAML12_OCTAL = re.compile(r"0o[0-7]+")


def _surprise(scalar: _Scalar) -> str | None:
    """How an unquoted scalar reads differently from how it looks, or None.

    Covers YAML 1.1 readings (PyYAML's and the original's) and YAML 1.2 readings
    (Go's, thus k3s's and Helm's, when we hand values on).
    """
    if not scalar.plain:
        return None
    text, value = scalar.text, scalar.value
    if isinstance(value, bool):
        if text.lower() in ("true", "false"):
            return None
        return f"YAML 1.1 reads {text} as the bool {str(value).lower()}"
    if isinstance(value, int):
        if ":" in text:
            return f"YAML 1.1 reads {text} as the sexagesimal (base 60) number {value}"
        if _OCTAL.fullmatch(text):
            return f"YAML 1.1 reads {text} as the octal number {value}"
        return None
    if isinstance(value, float):
        if ":" in text:
            return f"YAML 1.1 reads {text} as the sexagesimal (base 60) number {value!r}"
        if value != value or value in (float("inf"), float("-inf")):
            return f"YAML reads {text} as {value!r}, which JSON and Go cannot carry"
        return None
    if isinstance(value, str):
        if _YAML12_FLOAT.fullmatch(text) or _YAML12_OCTAL.fullmatch(text):
            return f"YAML 1.2 (Go, k3s, Helm) reads {text} as a number"
        return None
    if value is None:
        return None
    return f"YAML 1.1 reads {text} as a date"


# --- Reading files --------------------------------------------------------------------

_YAML_SUFFIXES = (".yaml", ".yml")
_TOKEN_LINE = re.compile(r"""\s*(-\s*)?["']?token["']?\s*:""")


@dataclass(slots=True)
class _Looked:
    """One place searched, and what it gave: for "no config found" and for ``files``."""

    path: Path
    note: str
    contributed: bool = False


@dataclass(slots=True)
class _Loader:
    cloud_config_paths: Collection[Path]
    issues: _Issues = field(default_factory=_Issues)
    merged: _Value | None = None
    looked: list[_Looked] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    read_order: list[str] = field(default_factory=list)
    file_issue_count: int = 0

    def add_file(self, path: Path, *, required: bool, directory_ok: bool = False) -> None:
        """Read a file and then its drop-ins; an implicit path may be a directory."""
        info = self.stat(path, required=required)
        if info is None:
            if not required:  # as the original: FILE.d counts even without FILE
                self.add_drop_ins(path)
            return
        if directory_ok and stat.S_ISDIR(info.st_mode):
            names = self.list_yaml(path)
            if names == []:
                self.looked.append(_Looked(path, "a directory without *.yaml or *.yml files"))
            for name in names or []:
                self.add_file(path / name, required=False)
            return
        display = str(path)
        if stat.S_ISDIR(info.st_mode):
            self.file_issue(display, None, "is a directory; expected a YAML file")
            return
        if not stat.S_ISREG(info.st_mode):
            self.file_issue(display, None, "is not a regular file")
            return
        real = os.path.realpath(path)
        if real in self.seen:  # the same file twice (symlinks): its lists would double
            self.looked.append(_Looked(path, f"already read as {real}"))
            return
        self.seen.add(real)
        self.read_order.append(display)
        text = self.read(path, display)
        if text is not None:
            self.merge_text(path, display, text)
        self.add_drop_ins(path)

    def add_drop_ins(self, path: Path) -> None:
        directory = Path(f"{path}.d")
        info = self.stat(directory, quiet=True)
        if info is None or not stat.S_ISDIR(info.st_mode):
            return
        for name in self.list_yaml(directory) or []:
            self.add_file(directory / name, required=False)

    def stat(
        self, path: Path, *, required: bool = False, quiet: bool = False
    ) -> os.stat_result | None:
        """``os.stat``; None when missing (an issue if ``required``) or unreadable (issue)."""
        try:
            return path.stat()
        except (FileNotFoundError, NotADirectoryError):
            if required:
                self.file_issue(str(path), None, "does not exist")
            elif not quiet:
                self.looked.append(_Looked(path, "not found"))
        except OSError as exc:
            self.file_issue(str(path), None, f"cannot read: {exc.strerror or exc}")
        except ValueError:  # a NUL byte in the path
            self.file_issue(repr(str(path)), None, "is not a valid path")
        return None

    def list_yaml(self, directory: Path) -> list[str] | None:
        """YAML files of a directory in name order; hidden ones (editor leftovers) skipped."""
        try:
            with os.scandir(directory) as entries:
                names = []
                for entry in entries:
                    if entry.name.startswith(".") or not entry.name.lower().endswith(
                        _YAML_SUFFIXES
                    ):
                        continue
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    if not is_dir:
                        names.append(entry.name)
        except OSError as exc:
            self.file_issue(str(directory), None, f"cannot list: {exc.strerror or exc}")
            return None
        return sorted(names)

    def read(self, path: Path, display: str) -> str | None:
        try:
            with path.open("rb") as stream:
                data = stream.read(MAX_FILE_SIZE + 1)
        except OSError as exc:
            self.file_issue(display, None, f"cannot read: {exc.strerror or exc}")
            return None
        if len(data) > MAX_FILE_SIZE:
            self.file_issue(display, None, f"larger than {MAX_FILE_SIZE // 2**20} MiB; refused")
            return None
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            self.file_issue(
                display, line, f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); save it as UTF-8"
            )
            return None

    def file_issue(self, display: str, line: int | None, message: str) -> None:
        self.file_issue_count += 1
        self.issues.add_file(display, line, message)

    def merge_text(self, path: Path, display: str, text: str) -> None:
        cloud_config = path in self.cloud_config_paths or text.startswith("#cloud-config")
        ok, root = self.compose(display, text)
        if not ok:
            return
        if root is None:
            self.looked.append(_Looked(path, "empty"))
            return
        if not isinstance(root, MappingNode):
            self.file_issue(display, root.start_mark.line + 1, "expected a map of key: value")
            return
        converter = _Converter(display, self.issues)
        before = len(self.issues)
        node: Node = root
        rancherd = [v for k, v in root.value if isinstance(k, ScalarNode) and k.value == "rancherd"]
        if len(rancherd) > 1:
            self.file_issue(display, rancherd[1].start_mark.line + 1, "duplicate key rancherd")
            return
        if rancherd:
            node = rancherd[0]
            if isinstance(node, ScalarNode) and node.tag == _TAG + "null":
                self.looked.append(_Looked(path, "an empty rancherd: key"))
                return
            if not isinstance(node, MappingNode):
                self.file_issue(display, node.start_mark.line + 1, "rancherd: expected a map")
                return
        elif cloud_config:
            self.looked.append(_Looked(path, "a cloud-config without a rancherd: key"))
            return
        value = converter.convert(node, "")
        # Problems in the YAML itself (duplicate keys, tags) make a file unusable.
        self.file_issue_count += len(self.issues) - before
        if isinstance(value, _Map):
            note = "read" if value.entries else "empty"
            self.looked.append(_Looked(path, note, contributed=bool(value.entries)))
            if value.entries:
                self.merged = _merge(self.merged, value)

    def compose(self, display: str, text: str) -> tuple[bool, Node | None]:
        """``(True, root)``, root None for an empty file; ``(False, None)`` and an issue."""
        try:
            return True, yaml.compose(text, Loader=yaml.SafeLoader)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            self.file_issue(display, line, _syntax_message(exc, text, line))
        except ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            code = exc.character if isinstance(exc.character, int) else ord(exc.character)
            self.file_issue(
                display, line, f"YAML cannot hold the character U+{code:04X}; remove it"
            )
        except yaml.YAMLError:
            self.file_issue(display, None, "not valid YAML")
        except RecursionError:
            self.file_issue(display, None, "nested too deeply to read")
        return False, None


def _syntax_message(exc: MarkedYAMLError, text: str, line: int | None) -> str:
    lines = text.splitlines()
    if line is not None and 0 < line <= len(lines) and _TOKEN_LINE.match(lines[line - 1]):
        # PyYAML quotes what it found; on the token's line that could be the token.
        return "YAML syntax error on the token's line (details hidden: it is a secret)"
    problem = exc.problem or exc.context or "syntax error"
    if not (exc.context and exc.problem and exc.context_mark is not None):
        return f"YAML syntax error: {problem}"
    context = f"{exc.context} at line {exc.context_mark.line + 1}"
    if problem.startswith("but "):  # "expected a single document ..., but found another"
        return f"YAML syntax error: {context}, {problem}"
    return f"YAML syntax error: {problem} ({context})"


# --- The schema -----------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _yaml_keys(cls: type) -> tuple[str, ...]:
    """The YAML keys of a config dataclass: its field names in camelCase."""
    return tuple(_camel(f.name) for f in dataclasses.fields(cls))


# "bootstrapResources" is the original's deprecated spelling of "resources".
_TOP_KEYS = (*_yaml_keys(Config), "bootstrapResources")
_DISCOVERY_KEYS = _yaml_keys(DiscoveryConfig)
_INSTRUCTION_KEYS = _yaml_keys(Instruction)
_REGISTRY_KEYS = ("mirrors", "configs")
_MIRROR_KEYS = ("endpoint", "rewrite")
_REGISTRY_CONFIG_KEYS = ("auth", "tls")
_AUTH_KEYS = ("username", "password", "auth", "identity_token")
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "insecure_skip_verify")

_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

_KINDS = {_Map: "a map", _Seq: "a list"}


class _Checker:
    """Checks the merged values against the schema and builds the dataclasses."""

    def __init__(self, issues: _Issues) -> None:
        self.issues = issues

    # -- helpers --

    def fail(self, where: _Origin, path: str, message: str) -> None:
        self.issues.add(where, path, message)

    def keys(self, value: _Map, path: str, known: Sequence[str]) -> None:
        """Report every key of ``value`` not in ``known``, with a suggestion when close."""
        folded = {k.lower().replace("_", "").replace("-", ""): k for k in known}
        for key, entry in value.entries.items():
            if key in known:
                continue
            guess = folded.get(key.lower().replace("_", "").replace("-", ""))
            if guess is None:
                close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
                guess = close[0] if close else None
            hint = f"; did you mean {guess!r}?" if guess else ""
            self.fail(entry.key_origin, _join(path, key), f"unknown key{hint}")

    def where(self, entry: _Entry) -> _Origin:
        """The line to blame for a value: its own for a scalar, its key's for a block."""
        return entry.value.origin if isinstance(entry.value, _Scalar) else entry.key_origin

    def wrong_kind(self, entry: _Entry, path: str, expected: str) -> None:
        value = entry.value
        if isinstance(value, _Scalar):
            surprise = None if isinstance(value.value, str) else _surprise(value)
            if _is_secret(path):
                found = f"YAML read {_kind_only(value)}"
            else:
                found = surprise or f"YAML read {_describe(value)}"
            quote = "; quote it" if expected == "a string" and value.plain else ""
            self.fail(self.where(entry), path, f"expected {expected}, but {found}{quote}")
        else:
            self.fail(self.where(entry), path, f"expected {expected}, found {_KINDS[type(value)]}")

    def string(self, entry: _Entry, path: str) -> str | None:
        """A string field: null means unset; YAML's guesses are refused."""
        value = entry.value
        if isinstance(value, _Scalar) and isinstance(value.value, str):
            surprise = _surprise(value)
            if surprise is not None:
                if _is_secret(path):
                    surprise = "YAML 1.2 (Go, k3s) reads the value as a number"
                self.fail(value.origin, path, f"{surprise}; quote it")
                return None
            return value.value
        if isinstance(value, _Scalar) and value.value is None:
            return None
        self.wrong_kind(entry, path, "a string")
        return None

    def integer(self, entry: _Entry, path: str) -> int | None:
        value = entry.value
        if (
            isinstance(value, _Scalar)
            and isinstance(value.value, int)
            and not isinstance(value.value, bool)
        ):
            surprise = _surprise(value)
            if surprise is not None:
                self.fail(value.origin, path, f"{surprise}; write the number plainly")
                return None
            return value.value
        if isinstance(value, _Scalar) and value.value is None:
            return None
        self.wrong_kind(entry, path, "a whole number")
        return None

    def boolean(self, entry: _Entry, path: str) -> bool | None:
        value = entry.value
        if isinstance(value, _Scalar) and isinstance(value.value, bool):
            return value.value  # yes/on are clear in a yes-or-no field
        if isinstance(value, _Scalar) and value.value is None:
            return None
        self.wrong_kind(entry, path, "true or false")
        return None

    def strings(self, entry: _Entry, path: str) -> tuple[str, ...]:
        value = entry.value
        if isinstance(value, _Scalar) and value.value is None:
            return ()
        if not isinstance(value, _Seq):
            self.wrong_kind(entry, path, "a list of strings")
            return ()
        out = []
        for index, item in enumerate(value.items):
            text = self.string(_Entry(item.origin, item), f"{path}[{index}]")
            if text is not None:
                out.append(text)
            elif isinstance(item, _Scalar) and item.value is None:
                self.fail(item.origin, f"{path}[{index}]", "empty item in a list of strings")
        return tuple(out)

    def mapping(self, entry: _Entry, path: str) -> _Map | None:
        value = entry.value
        if isinstance(value, _Map):
            return value
        if isinstance(value, _Scalar) and value.value is None:
            return None
        self.wrong_kind(entry, path, "a map")
        return None

    def free(self, value: _Value, path: str, *, check: bool = True) -> JsonValue:
        """A free-form value (Helm values, k3s options): any YAML, minus its surprises.

        ``check=False`` only freezes a value whose parts were checked already.
        """
        if isinstance(value, _Map):
            return MappingProxyType(
                {
                    k: self.free(e.value, _join(path, k), check=check)
                    for k, e in value.entries.items()
                }
            )
        if isinstance(value, _Seq):
            return tuple(
                self.free(item, f"{path}[{i}]", check=check) for i, item in enumerate(value.items)
            )
        surprise = _surprise(value) if check else None
        if surprise is not None:
            if _is_secret(path):
                self.fail(value.origin, path, "YAML does not read this value as written; quote it")
            else:
                self.fail(value.origin, path, f"{surprise}; {_remedy(value)}")
            return None
        if value.value is None or isinstance(value.value, bool | int | float | str):
            return cast(JsonValue, value.value)
        return None  # pragma: no cover - dates are surprises

    def free_map(self, entry: _Entry, path: str) -> Mapping[str, JsonValue]:
        value = self.mapping(entry, path)
        if value is None:
            return _EMPTY
        return cast(Mapping[str, JsonValue], self.free(value, path))

    # -- the config --

    def config(self, root: _Map, complete: bool) -> Config | None:
        self.keys(root, "", _TOP_KEYS)
        entries = root.entries
        fields: dict[str, Any] = {}

        def take(key: str, convert: Callable[[_Entry, str], object], name: str) -> None:
            if key in entries:
                result = convert(entries[key], key)
                if result is not None:
                    fields[name] = result

        take("role", self.role, "role")
        take("token", self.token, "token")
        take("server", self.server, "server")
        take("discovery", self.discovery, "discovery")
        for key, name in (
            ("kubernetesVersion", "kubernetes_version"),
            ("rancherVersion", "rancher_version"),
            ("systemDefaultRegistry", "system_default_registry"),
            ("runtimeInstallerImage", "runtime_installer_image"),
            ("rancherInstallerImage", "rancher_installer_image"),
        ):
            take(key, self.string, name)
        take("nodeName", self.node_name, "node_name")
        take("address", self.ip_list, "address")
        take("internalAddress", self.ip_list, "internal_address")
        for key, name in (("tlsSans", "tls_sans"), ("taints", "taints"), ("labels", "labels")):
            take(key, self.strings, name)
        take("rancherValues", self.free_map, "rancher_values")
        take("extraConfig", self.free_map, "extra_config")
        take("preInstructions", self.instructions, "pre_instructions")
        take("postInstructions", self.instructions, "post_instructions")
        resources: list[Mapping[str, JsonValue]] = []
        for key in ("resources", "bootstrapResources"):
            if key in entries:
                resources.extend(self.resources(entries[key], key))
        fields["resources"] = tuple(resources)
        take("registries", self.registries, "registries")
        take("dataDir", self.data_dir, "data_dir")

        if complete:
            self.relations(root, fields)
        if len(self.issues) or "role" not in fields:
            return None
        return Config(**fields)

    def relations(self, root: _Map, fields: Mapping[str, Any]) -> None:
        """Rules between keys; only when every file was read (else they would mislead)."""

        def given(key: str) -> _Entry | None:
            entry = root.entries.get(key)
            if entry is None or (isinstance(entry.value, _Scalar) and entry.value.value is None):
                return None
            return entry

        role, discovery, server = given("role"), given("discovery"), given("server")
        # A token written wrong is reported as such, not as missing.
        no_token = given("token") is None
        if role is None:
            where = root.entries["role"].key_origin if "role" in root.entries else root.origin
            self.fail(where, "role", "required: server, agent or cluster-init")
        if discovery is not None and no_token:
            self.fail(
                discovery.key_origin,
                "token",
                "required with discovery: nodes prove to each other with it that they belong",
            )
        if server is not None and no_token:
            self.fail(server.key_origin, "token", "required to join a server")
        if server is not None and discovery is not None:
            self.fail(
                discovery.key_origin,
                "discovery",
                "set either server (join that server) or discovery (find the servers), not both",
            )
        if role is not None and fields.get("role") is Role.AGENT and not (server or discovery):
            self.fail(
                self.where(role),
                "role",
                "an agent needs server or discovery to find a server to join",
            )
        if fields.get("role") is Role.CLUSTER_INIT:
            for key, entry in (("server", server), ("discovery", discovery)):
                if entry is not None:
                    verb = "join" if key == "server" else "discover"
                    self.fail(
                        entry.key_origin,
                        key,
                        f"role cluster-init creates a new cluster; use role: server to {verb} one",
                    )

    def role(self, entry: _Entry, path: str) -> Role | None:
        text = self.string(entry, path)
        if text is None:
            return None
        try:
            return Role(text)
        except ValueError:
            close = difflib.get_close_matches(text, [r.value for r in Role], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.fail(
                self.where(entry),
                path,
                f"{text!r} is not a role{hint} (server, agent or cluster-init)",
            )
            return None

    def token(self, entry: _Entry, path: str) -> Secret | None:
        text = self.string(entry, path)
        if text is None:
            return None
        if not text.strip():
            self.fail(self.where(entry), path, "is empty")
            return None
        try:
            parse_token(text)
        except TokenError as exc:  # its message never holds the token
            self.fail(self.where(entry), path, str(exc))
            return None
        return Secret(text)

    def server(self, entry: _Entry, path: str) -> str | None:
        text = self.string(entry, path)
        if text is None:
            return None
        if text != text.strip():
            # Python's urlsplit drops it; Go's url.Parse, and so k3s, refuses the URL.
            self.fail(
                self.where(entry),
                path,
                f"{text!r} starts or ends with whitespace; k3s and rke2 refuse such a URL",
            )
            return None
        try:
            url = urlsplit(text)
            ok = url.scheme == "https" and bool(url.hostname) and (url.port is None or url.port)
        except ValueError:
            ok = False
        if not ok:
            self.fail(self.where(entry), path, f"{text!r} is not a URL like https://10.0.0.5:8443")
            return None
        return text

    def node_name(self, entry: _Entry, path: str) -> str | None:
        text = self.string(entry, path)
        if text is not None and (len(text) > 253 or not _NODE_NAME.fullmatch(text)):
            self.fail(
                self.where(entry),
                path,
                f"{text!r} is not a Kubernetes node name: lower-case letters, digits, '-' "
                "and '.', starting and ending with a letter or digit",
            )
            return None
        return text

    def ip_list(self, entry: _Entry, path: str) -> str | None:
        text = self.string(entry, path)
        if text is None:
            return None
        for part in text.split(","):
            try:
                ipaddress.ip_address(part.strip())
            except ValueError:
                self.fail(
                    self.where(entry),
                    path,
                    f"{part.strip()!r} is not an IP address (dual-stack: 10.0.0.5,fd00::5)",
                )
                return None
        return text

    def data_dir(self, entry: _Entry, path: str) -> Path | None:
        text = self.string(entry, path)
        if text is None:
            return None
        if not text.startswith("/") or "\0" in text:
            self.fail(self.where(entry), path, f"{text!r} must be an absolute path")
            return None
        return Path(text)

    def discovery(self, entry: _Entry, path: str) -> DiscoveryConfig | None:
        value = self.mapping(entry, path)
        if value is None:
            return None
        self.keys(value, path, _DISCOVERY_KEYS)
        entries = value.entries
        fields: dict[str, Any] = {}
        params_entry = entries.get("params")
        if params_entry is None:
            self.fail(
                entry.key_origin,
                f"{path}.params",
                "required: the provider to find servers with, e.g. provider: mdns",
            )
        else:
            params = self.params(params_entry, f"{path}.params")
            if params is not None:
                fields["params"] = params
        if "expectedServers" in entries:
            key = f"{path}.expectedServers"
            count = self.integer(entries["expectedServers"], key)
            if count is not None and not 1 <= count <= MAX_EXPECTED_SERVERS:
                self.fail(
                    self.where(entries["expectedServers"]),
                    key,
                    f"must be from 1 to {MAX_EXPECTED_SERVERS}, not {count}",
                )
            elif count is not None:
                fields["expected_servers"] = count
        if "serverCacheDuration" in entries and not _empty_string(entries["serverCacheDuration"]):
            # "" is the default for the original too (it parses only a non-empty value).
            seconds = self.duration(entries["serverCacheDuration"], f"{path}.serverCacheDuration")
            if seconds is not None:
                fields["server_cache_duration"] = seconds
        if "listenAddress" in entries:
            key = f"{path}.listenAddress"
            address = self.string(entries["listenAddress"], key)
            if address is not None:
                try:
                    fields["listen_address"] = str(ipaddress.ip_address(address))
                except ValueError:
                    self.fail(
                        self.where(entries["listenAddress"]),
                        key,
                        f"{address!r} is not an IP address (0.0.0.0 or :: listen on all)",
                    )
        if "port" in entries:
            port = self.integer(entries["port"], f"{path}.port")
            if port is not None and not 1 <= port <= 65535:
                self.fail(
                    self.where(entries["port"]), f"{path}.port", f"{port} is not from 1 to 65535"
                )
            elif port is not None:
                fields["port"] = port
        if "advertiseAddresses" in entries:
            addresses = self.advertise(entries["advertiseAddresses"], f"{path}.advertiseAddresses")
            fields["advertise_addresses"] = addresses
        if "preset" in entries:
            preset = self.string(entries["preset"], f"{path}.preset")
            if preset is not None:
                try:
                    fields["preset"] = Preset(preset)
                except ValueError:
                    self.fail(
                        self.where(entries["preset"]),
                        f"{path}.preset",
                        f"{preset!r} is not a preset (lan or local)",
                    )
        if "params" not in fields:
            return None
        return DiscoveryConfig(**fields)

    def params(self, entry: _Entry, path: str) -> DiscoveryParams | None:
        value = entry.value
        values: dict[str, str] = {}
        lines: dict[str, _Origin] = {}
        reported: set[str] = set()  # written wrong: not "required" as well
        if isinstance(value, _Scalar) and isinstance(value.value, str):
            try:
                values = parse_params_string(value.value)
            except ParamsError as exc:
                for issue in exc.issues:
                    key = _join(path, issue.param) if issue.param else path
                    self.fail(value.origin, key, issue.message)
                return None
            lines = dict.fromkeys(values, value.origin)
        elif isinstance(value, _Map):
            for key, item in value.entries.items():
                text = self.string(item, _join(path, key))
                if text is not None:
                    values[key] = text
                    lines[key] = self.where(item)
                elif isinstance(item.value, _Scalar) and item.value.value is None:
                    values[key] = ""  # as go-discover: empty means not set
                    lines[key] = item.key_origin
                else:
                    reported.add(key)
        else:
            self.wrong_kind(entry, path, "a map or a string like 'provider=mdns service=x'")
            return None
        before = len(self.issues)
        for issue in check_params(values):
            param = issue.param or "provider"
            if param not in reported:
                self.fail(lines.get(param, self.where(entry)), _join(path, param), issue.message)
        if reported or len(self.issues) > before:
            return None
        try:
            return DiscoveryParams.from_mapping(values)
        except ParamsError:  # pragma: no cover - checked just above
            return None

    def duration(self, entry: _Entry, path: str) -> float | None:
        value = entry.value
        if (
            isinstance(value, _Scalar)
            and isinstance(value.value, int | float)
            and not (isinstance(value.value, bool))
        ):
            if ":" in value.text:
                hint = "write it as 1m30s"
            else:
                hint = f"write {value.text.strip()}s for seconds"
            self.fail(
                value.origin,
                path,
                f"{value.text} has no unit ({_surprise(value) or 'a bare number'}); {hint}",
            )
            return None
        if isinstance(value, _Scalar) and isinstance(value.value, str):
            text: str | None = value.value  # "1e3" gets the duration hint, not "quote it"
        else:
            text = self.string(entry, path)
        if text is None:
            return None
        try:
            seconds = parse_duration(text)
        except DurationError as exc:
            self.fail(self.where(entry), path, str(exc))
            return None
        if seconds <= 0:
            self.fail(self.where(entry), path, "must be longer than 0s")
            return None
        return seconds

    def advertise(self, entry: _Entry, path: str) -> tuple[HostPort, ...]:
        addresses = []
        texts = self.strings(entry, path)
        for index, text in enumerate(texts):
            try:
                addresses.append(parse_host_port(text))
            except ValueError as exc:
                item = entry.value.items[index] if isinstance(entry.value, _Seq) else None
                self.fail(item.origin if item else entry.key_origin, f"{path}[{index}]", str(exc))
        if len(addresses) > MAX_ADVERTISE_ADDRESSES:
            self.fail(
                entry.key_origin,
                path,
                f"at most {MAX_ADVERTISE_ADDRESSES} addresses, not {len(addresses)}",
            )
        return tuple(addresses)

    def instructions(self, entry: _Entry, path: str) -> tuple[Instruction, ...]:
        value = entry.value
        if isinstance(value, _Scalar) and value.value is None:
            return ()
        if not isinstance(value, _Seq):
            self.wrong_kind(entry, path, "a list of instructions (maps with image or command)")
            return ()
        out = []
        for index, item in enumerate(value.items):
            item_path = f"{path}[{index}]"
            item_entry = _Entry(item.origin, item)
            mapping = self.mapping(item_entry, item_path)
            if mapping is None:
                if isinstance(item, _Scalar) and item.value is None:
                    self.fail(item.origin, item_path, "empty instruction")
                continue
            self.keys(mapping, item_path, _INSTRUCTION_KEYS)
            fields: dict[str, Any] = {}
            for key, name in (("name", "name"), ("image", "image"), ("command", "command")):
                if key in mapping.entries:
                    fields[name] = self.string(mapping.entries[key], f"{item_path}.{key}")
            for key in ("env", "args"):
                if key in mapping.entries:
                    fields[key] = self.strings(mapping.entries[key], f"{item_path}.{key}")
            if "saveOutput" in mapping.entries:
                flag = self.boolean(mapping.entries["saveOutput"], f"{item_path}.saveOutput")
                fields["save_output"] = bool(flag)
            if not fields.get("image") and not fields.get("command"):
                if not {"image", "command"} & set(mapping.entries):
                    self.fail(item.origin, item_path, "needs an image or a command to run")
                continue
            out.append(Instruction(**fields))
        return tuple(out)

    def resources(self, entry: _Entry, path: str) -> list[Mapping[str, JsonValue]]:
        value = entry.value
        if isinstance(value, _Scalar) and value.value is None:
            return []
        if not isinstance(value, _Seq):
            self.wrong_kind(entry, path, "a list of Kubernetes objects")
            return []
        out = []
        for index, item in enumerate(value.items):
            item_path = f"{path}[{index}]"
            if not isinstance(item, _Map):
                self.wrong_kind(_Entry(item.origin, item), item_path, "a Kubernetes object (map)")
                continue
            for key in ("apiVersion", "kind"):
                if key not in item.entries:
                    self.fail(item.origin, f"{item_path}.{key}", "required in a Kubernetes object")
            out.append(cast(Mapping[str, JsonValue], self.free(item, item_path)))
        return out

    def registries(self, entry: _Entry, path: str) -> Mapping[str, JsonValue] | None:
        """k3s/rke2 ``registries.yaml``: checked against its shape, kept as plain data."""
        value = self.mapping(entry, path)
        if value is None:
            return None
        self.keys(value, path, _REGISTRY_KEYS)
        for section, check in (("mirrors", self.mirror), ("configs", self.registry_config)):
            if section not in value.entries:
                continue
            section_path = f"{path}.{section}"
            names = self.mapping(value.entries[section], section_path)
            for name, item in (names.entries if names else {}).items():
                check(item, _join(section_path, name))
        known = {k: e for k, e in value.entries.items() if k in _REGISTRY_KEYS}
        registries = self.free(_Map(value.origin, known), path, check=False)
        return cast(Mapping[str, JsonValue], registries)

    def mirror(self, entry: _Entry, path: str) -> None:
        value = self.mapping(entry, path)
        if value is None:
            return
        self.keys(value, path, _MIRROR_KEYS)
        if "endpoint" in value.entries:
            self.strings(value.entries["endpoint"], f"{path}.endpoint")
        if "rewrite" in value.entries:
            rewrite = self.mapping(value.entries["rewrite"], f"{path}.rewrite")
            for key, item in (rewrite.entries if rewrite else {}).items():
                self.string(item, _join(f"{path}.rewrite", key))

    def registry_config(self, entry: _Entry, path: str) -> None:
        value = self.mapping(entry, path)
        if value is None:
            return
        self.keys(value, path, _REGISTRY_CONFIG_KEYS)
        for section, known in (("auth", _AUTH_KEYS), ("tls", _TLS_KEYS)):
            if section not in value.entries:
                continue
            section_path = f"{path}.{section}"
            fields = self.mapping(value.entries[section], section_path)
            if fields is None:
                continue
            self.keys(fields, section_path, known)
            for key, item in fields.entries.items():
                if key == "insecure_skip_verify":
                    self.boolean(item, f"{section_path}.{key}")
                elif key in known:
                    self.string(item, f"{section_path}.{key}")


def _empty_string(entry: _Entry) -> bool:
    return isinstance(entry.value, _Scalar) and entry.value.value == ""


def _remedy(value: _Scalar) -> str:
    """How to write a surprising free-form value so that it means one thing."""
    quoted = f"quote it ('{value.text}') for the string"
    if isinstance(value.value, bool):
        return f"{quoted}, or write {str(value.value).lower()}"
    if isinstance(value.value, int | float) and value.value == value.value:
        return f"{quoted}, or write {value.value!r}"
    return quoted


def _kind_only(value: _Scalar) -> str:
    """Like ``_describe`` without the value, for secrets."""
    if value.value is None:
        return "null"
    if isinstance(value.value, bool):
        return "a bool"
    if isinstance(value.value, int | float):
        return "a number"
    if isinstance(value.value, str):
        return "a string"
    return "a date"


# --- Loading --------------------------------------------------------------------------


def load_config(
    explicit: Path | None = None,
    *,
    implicit_paths: Sequence[Path] = IMPLICIT_PATHS,
    default_path: Path | None = DEFAULT_CONFIG_PATH,
    cloud_config_paths: Collection[Path] = CLOUD_CONFIG_PATHS,
) -> LoadedConfig:
    """Read, merge and check the config; raise ``ConfigError`` listing every problem.

    ``implicit_paths`` are read first, in order (a directory adds its ``*.yaml`` and
    ``*.yml`` files in name order; missing ones are skipped), then ``explicit``, which
    must exist, or when it is None ``default_path``, which may be missing. Files in
    ``cloud_config_paths``, and files whose first line is ``#cloud-config``, contribute
    only their ``rancherd:`` key.
    """
    try:
        return _load(explicit, implicit_paths, default_path, cloud_config_paths)
    except ConfigError:
        raise
    except Exception as exc:  # a bug must not become a traceback at boot
        issue = ConfigIssue(
            None, None, "", f"internal error while reading the config ({type(exc).__name__})"
        )
        raise ConfigError([issue]) from None


def _load(
    explicit: Path | None,
    implicit_paths: Sequence[Path],
    default_path: Path | None,
    cloud_config_paths: Collection[Path],
) -> LoadedConfig:
    loader = _Loader({Path(p) for p in cloud_config_paths})
    for path in implicit_paths:
        loader.add_file(Path(path), required=False, directory_ok=True)
    if explicit is not None:
        loader.add_file(Path(explicit), required=True)
    elif default_path is not None:
        loader.add_file(Path(default_path), required=False)
    merged = loader.merged
    if not isinstance(merged, _Map) or not merged.entries:
        if not len(loader.issues):
            raise ConfigError(_nothing_found(loader.looked))
        raise ConfigError(_in_file_order(loader.issues.items, loader.read_order))
    checker = _Checker(loader.issues)
    config = checker.config(merged, complete=loader.file_issue_count == 0)
    if config is None or len(loader.issues):
        raise ConfigError(_in_file_order(loader.issues.items, loader.read_order))
    sources = {key: Path(entry.key_origin.file) for key, entry in merged.entries.items()}
    files = tuple(looked.path for looked in loader.looked if looked.contributed)
    return LoadedConfig(config, MappingProxyType(sources), files)


def _nothing_found(looked: Sequence[_Looked]) -> list[ConfigIssue]:
    issues = [
        ConfigIssue(
            None,
            None,
            "",
            f"no rancherd config found: write {DEFAULT_CONFIG_PATH}, or a rancherd: key in "
            "the cloud-config; looked in:",
        )
    ]
    issues.extend(ConfigIssue(str(item.path), None, "", item.note) for item in looked)
    return issues


def _in_file_order(issues: list[ConfigIssue], read_order: Sequence[str]) -> list[ConfigIssue]:
    """Issues by file in the order the files were read, then by line (stable)."""
    order = {file: index for index, file in enumerate(read_order)}
    return sorted(issues, key=lambda i: (order.get(i.file or "", -1), i.line or 0))


# --- Back to plain data ---------------------------------------------------------------


def config_to_dict(config: Config, *, redact: bool = True) -> dict[str, Any]:
    """The config as plain YAML/JSON data with the original camelCase keys.

    Unset fields are left out; defaults are included. With ``redact`` (the default) the
    token, registry credentials and values under keys that look secret (``token``,
    ``password``, ``secret``...) are ``<redacted>``: what ``rancherd config`` prints.
    With ``redact=False`` the result loads back to an equal ``Config``.
    """
    out: dict[str, Any] = {"role": config.role.value}
    if config.token is not None:
        out["token"] = REDACTED if redact else config.token.reveal()
    _put(out, "server", config.server)
    if config.discovery is not None:
        out["discovery"] = _discovery_to_dict(config.discovery)
    _put(out, "kubernetesVersion", config.kubernetes_version)
    _put(out, "rancherVersion", config.rancher_version)
    _put(out, "rancherValues", _plain(config.rancher_values, redact))
    _put(out, "tlsSans", list(config.tls_sans))
    _put(out, "nodeName", config.node_name)
    _put(out, "address", config.address)
    _put(out, "internalAddress", config.internal_address)
    _put(out, "taints", list(config.taints))
    _put(out, "labels", list(config.labels))
    _put(out, "extraConfig", _plain(config.extra_config, redact))
    _put(out, "preInstructions", [_instruction(i, redact) for i in config.pre_instructions])
    _put(out, "postInstructions", [_instruction(i, redact) for i in config.post_instructions])
    _put(out, "resources", [_resource(r, redact) for r in config.resources])
    if config.registries is not None:
        out["registries"] = _plain(config.registries, redact)
    _put(out, "systemDefaultRegistry", config.system_default_registry)
    _put(out, "runtimeInstallerImage", config.runtime_installer_image)
    _put(out, "rancherInstallerImage", config.rancher_installer_image)
    out["dataDir"] = str(config.data_dir)
    return out


def _put(out: dict[str, Any], key: str, value: object) -> None:
    if value not in (None, [], {}):
        out[key] = value


def _discovery_to_dict(discovery: DiscoveryConfig) -> dict[str, Any]:
    return {
        "params": discovery.params.as_dict(),
        "expectedServers": discovery.expected_servers,
        "serverCacheDuration": format_duration(discovery.server_cache_duration),
        "listenAddress": discovery.listen_address,
        "port": discovery.port,
        "advertiseAddresses": [str(a) for a in discovery.advertise_addresses],
        "preset": discovery.preset.value,
    }


def _instruction(instruction: Instruction, redact: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "name", instruction.name)
    _put(out, "image", instruction.image)
    env = list(instruction.env)
    if redact:
        env = [
            f"{e.partition('=')[0]}={REDACTED}" if is_secret_name(e.partition("=")[0]) else e
            for e in env
        ]
    _put(out, "env", env)
    _put(out, "args", list(instruction.args))
    _put(out, "command", instruction.command)
    if instruction.save_output:
        out["saveOutput"] = True
    return out


def _resource(resource: Mapping[str, JsonValue], redact: bool) -> Any:
    """A Kubernetes object; a Secret's ``data`` and ``stringData`` are hidden."""
    if resource.get("kind") != "Secret":
        return _plain(resource, redact)
    return {k: _plain(v, redact, k in ("data", "stringData")) for k, v in resource.items()}


def _plain(value: JsonValue, redact: bool, secret: bool = False) -> Any:
    """Read-only values back to dicts and lists; secrets under secret-looking keys hidden."""
    if isinstance(value, Mapping):
        return {k: _plain(v, redact, secret or is_secret_name(k)) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v, redact, secret) for v in value]
    if redact and secret and value is not None:
        return REDACTED
    return value
