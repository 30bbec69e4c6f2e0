"""go-discover style discovery parameters: parsing, the provider table, typed views.

``discovery.params`` names a provider and its settings, either as a map of strings::

    params:
      provider: mdns
      service: rancher-server

or as go-discover's one-line form, ``provider=mdns service=rancher-server`` (space-separated
``key=value``; a key or value with spaces, ``"``, ``\\`` or ``=`` is double-quoted with Go
escapes, as ``discover.Config.String`` writes it).

This module is data only: no sockets, no files, no zeroconf. ``REGISTRY`` (at the end) is
the one table of providers: per name, its typed parameters (``MdnsParams``, ``StaticParams``,
``FileParams``, ``SrvParams``), their specs and checks, and where its ``Provider`` class
lives, which is imported only by a node that runs it. Providers are built on the typed view
that ``DiscoveryParams`` hands out, so everything a provider needs was checked when the
config was loaded. A row with a part missing fails the import of this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import NamedTuple, TypeVar

from rancherd.addresses import HostPort, is_ip, parse_host_port
from rancherd.durations import DurationError, parse_duration

__all__ = [
    "DEFAULT_SERVER_CACHE_DURATION",
    "GO_DISCOVER_PROVIDERS",
    "PROVIDERS",
    "REGISTRY",
    "SUPPORTED_PROVIDERS",
    "DiscoveryParams",
    "FileParams",
    "HostPort",
    "MdnsParams",
    "ParamIssue",
    "ParamSpec",
    "ParamsError",
    "ProviderEntry",
    "RegistryError",
    "SrvParams",
    "StaticParams",
    "check_params",
    "format_params",
    "parse_host_port",
    "parse_params_string",
]

DEFAULT_SERVER_CACHE_DURATION = 60.0
"""``serverCacheDuration``'s default: how long the gossip layer keeps a peer that discovery
stopped naming (the config's default, and the providers' when a caller gives none)."""


# --- The provider table ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter of a provider: whether it is required, its default and its meaning."""

    name: str
    required: bool
    default: str | None
    help: str


def _specs(*specs: ParamSpec) -> Mapping[str, ParamSpec]:
    return MappingProxyType({spec.name: spec for spec in specs})


GO_DISCOVER_PROVIDERS: frozenset[str] = frozenset(
    {
        "aliyun",
        "aws",
        "azure",
        "digitalocean",
        "gce",
        "hcp",
        "k8s",
        "linode",
        "mdns",
        "os",
        "packet",
        "scaleway",
        "softlayer",
        "srv",
        "tencentcloud",
        "triton",
        "vsphere",
    }
)
"""Every provider name go-discover knows: a config written for the original rancherd
may name one, and deserves "not supported yet" rather than "unknown"."""

# --- Errors ---------------------------------------------------------------------------


class ParamIssue(NamedTuple):
    """One problem with the parameters; ``param`` is None when it concerns them all."""

    param: str | None
    message: str


class ParamsError(ValueError):
    """Parameters that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ParamIssue]) -> None:
        self.issues = issues
        super().__init__(
            "; ".join(f"{i.param}: {i.message}" if i.param else i.message for i in issues)
        )


# --- The one-line form ----------------------------------------------------------------

_GO_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
}
_HEX_ESCAPE_LENGTH = {"x": 2, "u": 4, "U": 8}
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]+")
_OCTAL_DIGITS = re.compile(r"[0-7]+")


def parse_params_string(text: str) -> dict[str, str]:
    """Parse ``key=value key="quoted value" ...`` as go-discover's ``Parse`` does.

    Pairs are separated by whitespace; a key or value that holds whitespace, ``=`` or
    ``"`` is double-quoted, with Go's escapes (``\\"``, ``\\\\``, ``\\n``, ``\\x41``...).
    A key given twice, a key without ``=`` or a key without a value is an error.
    """
    result: dict[str, str] = {}
    tokens = _lex(text)
    while True:
        token = next(tokens, None)
        if token is None:
            return result
        kind, key = token
        if kind != "text":
            raise ParamsError([ParamIssue(None, "expected key=value, found '=' with no key")])
        if key in result:
            raise ParamsError([ParamIssue(key, "given twice")])
        equal = next(tokens, None)
        if equal is None or equal[0] != "=":
            raise ParamsError([ParamIssue(key, "missing '=' (write key=value)")])
        value = next(tokens, None)
        if value is None or value[0] != "text":
            raise ParamsError([ParamIssue(key, "missing value after '='")])
        result[key] = value[1]


def _lex(text: str) -> Iterator[tuple[str, str]]:
    """Yield ``("text", s)`` and ``("=", "")`` tokens; raise ParamsError on bad quoting."""
    position = 0
    length = len(text)
    while position < length:
        char = text[position]
        if char.isspace():
            position += 1
        elif char == "=":
            position += 1
            yield "=", ""
        elif char == '"':
            value, position = _unquote(text, position)
            yield "text", value
        else:
            start = position
            while position < length and not text[position].isspace() and text[position] != "=":
                if text[position] == '"':
                    raise ParamsError(
                        [
                            ParamIssue(
                                None,
                                f"a quote inside {text[start:position]!r}...; quote the "
                                "whole key or value",
                            )
                        ]
                    )
                position += 1
            yield "text", text[start:position]


def _unquote(text: str, position: int) -> tuple[str, int]:
    """Read the double-quoted string starting at ``text[position]``; return it and the end."""
    out: list[str] = []
    position += 1
    while position < len(text):
        char = text[position]
        if char == '"':
            return "".join(out), position + 1
        if char != "\\":
            out.append(char)
            position += 1
            continue
        if position + 1 >= len(text):
            break
        escape = text[position + 1]
        if escape in _GO_ESCAPES:
            out.append(_GO_ESCAPES[escape])
            position += 2
        elif escape in _HEX_ESCAPE_LENGTH:
            digits = text[position + 2 : position + 2 + _HEX_ESCAPE_LENGTH[escape]]
            complete = len(digits) == _HEX_ESCAPE_LENGTH[escape]
            # Go's \x is one byte: above 0x7f it would not be UTF-8 on its own.
            limit = 0x7F if escape == "x" else 0x10FFFF
            out.append(_code_point(digits, complete, 16, limit))
            position += 2 + len(digits)
        elif escape in "01234567":
            digits = text[position + 1 : position + 4]
            out.append(_code_point(digits, len(digits) == 3, 8, limit=0x7F))
            position += 4
        else:
            raise ParamsError([ParamIssue(None, f"unknown escape \\{escape} in a quoted value")])
    raise ParamsError([ParamIssue(None, "unbalanced quotes: a quoted value is not closed")])


def _code_point(digits: str, complete: bool, base: int, limit: int = 0x10FFFF) -> str:
    pattern = _HEX_DIGITS if base == 16 else _OCTAL_DIGITS
    if not complete or not pattern.fullmatch(digits):
        raise ParamsError([ParamIssue(None, "bad escape sequence in a quoted value")])
    value = int(digits, base)
    if value > limit or 0xD800 <= value <= 0xDFFF:
        raise ParamsError([ParamIssue(None, "bad escape sequence in a quoted value")])
    return chr(value)


def format_params(values: Mapping[str, str]) -> str:
    """Write parameters in the one-line form ``parse_params_string`` reads back.

    ``provider`` first, then the other keys sorted, as go-discover's ``Config.String``
    does; keys and values are quoted when they need it (empty ones too, so that nothing
    is lost on the way back).
    """
    keys = sorted(values, key=lambda k: (k != "provider", k))
    return " ".join(f"{_quote(k)}={_quote(values[k])}" for k in keys)


def _quote(text: str) -> str:
    if text and not any(c.isspace() or c in '"=\\' or not c.isprintable() for c in text):
        return text
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable() and char != "\x7f":
            out.append(char)
        elif char in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(char)])
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


# --- Typed views ----------------------------------------------------------------------

_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "true", "TRUE", "True"), True),
    **dict.fromkeys(("0", "f", "F", "false", "FALSE", "False"), False),
}
"""What Go's ``strconv.ParseBool`` accepts, which go-discover uses for v4 and v6."""

_SERVICE_NAME = re.compile(r"(?!-)(?!.*--)[a-z0-9-]{1,15}(?<!-)", re.ASCII | re.IGNORECASE)
_INTERFACE_NAME = re.compile(r"[^\s/:]{1,15}")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class MdnsParams:
    """``provider=mdns``: browse and advertise a DNS-SD service on the local link."""

    service: str
    """The service name without underscores, e.g. ``rancher-server``."""
    domain: str = "local"
    v4: bool = True
    v6: bool = True
    timeout: float | None = None
    """Seconds one query waits for answers; None leaves the provider's default."""
    interfaces: tuple[str, ...] = ()
    """Network interfaces to use; empty means all."""

    @property
    def service_type(self) -> str:
        """The zeroconf service type, e.g. ``_rancher-server._tcp.local.``."""
        return f"_{self.service}._tcp.{self.domain}."


@dataclass(frozen=True, slots=True)
class StaticParams:
    """``provider=static``: a fixed list of addresses."""

    addrs: tuple[HostPort, ...]


@dataclass(frozen=True, slots=True)
class FileParams:
    """``provider=file``: addresses listed in a file, read again on every lookup."""

    path: PurePosixPath


@dataclass(frozen=True, slots=True)
class SrvParams:
    """``provider=srv``: the servers are the targets of DNS SRV records (go-discover's srv)."""

    service: str
    """The service label without its underscore, e.g. ``rancher-server``."""
    proto: str = "tcp"
    domain: str = ""
    """The domain the records are in, without the final dot."""
    nameservers: tuple[HostPort, ...] = ()
    """DNS servers to ask (IP addresses; port 53 when None); empty: the system's."""

    @property
    def qname(self) -> str:
        """The name queried, as Go's ``net.LookupSRV``: ``_rancher-server._tcp.example.com.``."""
        return f"_{self.service}._{self.proto}.{self.domain}."


def _typed(provider: str, values: Mapping[str, str]) -> tuple[object | None, list[ParamIssue]]:
    """Build the typed view of a registered provider's values, or say everything wrong."""
    issues: list[ParamIssue] = []
    entry = REGISTRY[provider]
    specs = entry.specs
    for name in values:
        if name not in specs:
            close = difflib.get_close_matches(name, list(specs), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(specs)
            issues.append(
                ParamIssue(name, f"unknown parameter of {provider}{hint} (known: {known})")
            )
        elif _SURROGATE.search(values[name]):
            # The string form could not carry it: Go's quoting has no escape for it.
            issues.append(ParamIssue(name, "is not valid Unicode text (a lone surrogate)"))
    for spec in specs.values():
        if spec.required and not values.get(spec.name):
            issues.append(ParamIssue(spec.name, f"required by provider {provider}: {spec.help}"))
    # Empty values mean "not set", as in go-discover (it tests args["x"] != "").
    present = {k: v for k, v in values.items() if v and k in specs}
    typed = entry.check(present, issues)
    return (None if issues else typed), issues


def _static(values: Mapping[str, str], issues: list[ParamIssue]) -> StaticParams:
    addrs: list[HostPort] = []
    for word in values.get("addrs", "").split():
        try:
            addrs.append(parse_host_port(word))
        except ValueError as exc:
            issues.append(ParamIssue("addrs", str(exc)))
    return StaticParams(tuple(addrs))


def _file(values: Mapping[str, str], issues: list[ParamIssue]) -> FileParams:
    path = PurePosixPath(values.get("path", "/"))
    if not path.is_absolute():
        issues.append(ParamIssue("path", f"{values['path']!r} must be an absolute path"))
    return FileParams(path)


_SRV_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)


def _srv(values: Mapping[str, str], issues: list[ParamIssue]) -> SrvParams:
    service = values.get("service", "").removeprefix("_")  # _rancher-server: the DNS spelling
    if "service" in values and not _SRV_LABEL.fullmatch(service):
        issues.append(
            ParamIssue(
                "service",
                f"{values['service']!r} is not an SRV service label: letters, digits and "
                "hyphens, e.g. rancher-server",
            )
        )
    proto = values.get("proto", "tcp").removeprefix("_")
    if not _SRV_LABEL.fullmatch(proto):
        issues.append(ParamIssue("proto", f"{values['proto']!r} is not a protocol like tcp"))
    domain = values.get("domain", "").rstrip(".")
    if "domain" in values and not _is_srv_domain(domain):
        issues.append(ParamIssue("domain", f"{values['domain']!r} is not a DNS domain name"))
    nameservers: list[HostPort] = []
    for word in values.get("nameservers", "").replace(",", " ").split():
        try:
            address = parse_host_port(word)
        except ValueError as exc:
            issues.append(ParamIssue("nameservers", str(exc)))
            continue
        if not is_ip(address.host):
            issues.append(
                ParamIssue("nameservers", f"{word!r}: a DNS server is an IP address, not a name")
            )
        else:
            nameservers.append(address)
    return SrvParams(service, proto.lower(), domain, tuple(nameservers))


def _is_srv_domain(text: str) -> bool:
    # Underscore labels are common in DNS-SD domains (_sites.example.com); plain names too.
    return 0 < len(text) <= 253 and all(
        _SRV_LABEL.fullmatch(label.removeprefix("_")) for label in text.split(".")
    )


def _mdns(values: Mapping[str, str], issues: list[ParamIssue]) -> MdnsParams:
    service = values.get("service", "")
    if service.startswith("_"):
        # Accept the DNS-SD spelling too: _rancher-server._tcp
        service = service[1:].removesuffix("._tcp")
    if "service" in values and (not _SERVICE_NAME.fullmatch(service) or service.isdigit()):
        issues.append(
            ParamIssue(
                "service",
                f"{values['service']!r} is not a DNS-SD service name: 1 to 15 letters, digits "
                "and hyphens, e.g. rancher-server",
            )
        )
    domain = values.get("domain", "local").rstrip(".")
    if domain != "local":
        issues.append(ParamIssue("domain", f"{domain!r}: mDNS only works in the domain local"))
    flags: dict[str, bool] = {}
    for name in ("v4", "v6"):
        text = values.get(name, "true")
        if text in _BOOLS:
            flags[name] = _BOOLS[text]
        else:
            flags[name] = True
            issues.append(ParamIssue(name, f"{text!r} is not true or false"))
    if not flags["v4"] and not flags["v6"]:
        issues.append(ParamIssue("v6", "v4 and v6 are both false: no address family is left"))
    timeout = _mdns_timeout(values, issues)
    interfaces: list[str] = []
    for name in ("interface", "interfaces"):
        for word in values.get(name, "").replace(",", " ").split():
            if not _INTERFACE_NAME.fullmatch(word) or word in (".", ".."):
                issues.append(ParamIssue(name, f"{word!r} is not a network interface name"))
            elif word not in interfaces:
                interfaces.append(word)
    return MdnsParams(
        service=service.lower(),
        domain=domain,
        v4=flags["v4"],
        v6=flags["v6"],
        timeout=timeout,
        interfaces=tuple(interfaces),
    )


def _mdns_timeout(values: Mapping[str, str], issues: list[ParamIssue]) -> float | None:
    if "timeout" not in values:
        return None
    try:
        timeout = parse_duration(values["timeout"])
    except DurationError as exc:
        issues.append(ParamIssue("timeout", str(exc)))
        return None
    if timeout < 0:
        # go-discover passes it on, and its mDNS client stops listening at once.
        issues.append(
            ParamIssue(
                "timeout",
                f"{values['timeout']!r} is negative: go-discover would stop listening "
                "at once and find nothing; leave it out or write e.g. 3s",
            )
        )
        return None
    return timeout or None  # hashicorp/mdns reads 0 as "its default", and so do we


# --- The registry -----------------------------------------------------------------------


class RegistryError(TypeError):
    """A provider registered with a part missing or malformed: a programming error, raised
    when this module is imported."""


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    """Everything rancherd knows about one provider.

    ``params`` is the frozen dataclass of its checked parameters; ``check(values, issues)``
    builds one from the non-empty string values (every key is in ``specs``), appending a
    ``ParamIssue`` per problem; ``implementation`` is ``"module:Class"`` of its ``Provider``
    subclass, imported only when a node runs that provider (zeroconf and dnspython cost
    start-up time that a config check should not pay).
    """

    name: str
    params: type
    specs: Mapping[str, ParamSpec]
    check: Callable[[Mapping[str, str], list[ParamIssue]], object]
    implementation: str

    def load(self) -> type:
        """Import the provider class (``RegistryError`` if it is not this provider's)."""
        module_name, _, class_name = self.implementation.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name, None)
        if not isinstance(cls, type) or getattr(cls, "name", None) != self.name:
            raise RegistryError(
                f"discovery provider {self.name!r}: {self.implementation} is not a class "
                f"whose name is {self.name!r}"
            )
        return cls


_IMPLEMENTATION = re.compile(r"rancherd\.discovery\.[a-z_][a-z0-9_]*:[A-Z][A-Za-z0-9]*", re.ASCII)


def _register(*entries: ProviderEntry) -> Mapping[str, ProviderEntry]:
    """The registry, checked: a row with a part missing or wrong fails the import."""
    table: dict[str, ProviderEntry] = {}
    for entry in entries:
        problem = _entry_problem(entry)
        if entry.name in table:
            problem = "registered twice"
        if problem:
            raise RegistryError(f"discovery provider {entry.name!r}: {problem}")
        table[entry.name] = entry
    return MappingProxyType(table)


def _entry_problem(entry: ProviderEntry) -> str | None:
    if not re.fullmatch(r"[a-z][a-z0-9]*", entry.name):
        return "the name must be lowercase letters and digits"
    if not (dataclasses.is_dataclass(entry.params) and isinstance(entry.params, type)):
        return f"params {entry.params!r} is not a dataclass"
    if not entry.specs or any(k != v.name for k, v in entry.specs.items()):
        return "specs must map each parameter name to its ParamSpec"
    module_name, _, _ = entry.implementation.partition(":")
    if not _IMPLEMENTATION.fullmatch(entry.implementation):
        return f"implementation {entry.implementation!r} is not 'rancherd.discovery.x:Class'"
    if importlib.util.find_spec(module_name) is None:
        return f"no module {module_name}"
    return None


REGISTRY: Mapping[str, ProviderEntry] = _register(
    ProviderEntry(
        "mdns",
        MdnsParams,
        _specs(
            ParamSpec("service", True, None, "DNS-SD service name, e.g. rancher-server"),
            ParamSpec("domain", False, "local", "mDNS domain; only local exists"),
            ParamSpec("v4", False, "true", "use IPv4 (true/false)"),
            ParamSpec("v6", False, "true", "use IPv6 (true/false)"),
            ParamSpec("timeout", False, None, "how long one query waits (Go duration; 0: default)"),
            ParamSpec("interface", False, None, "one network interface to use"),
            ParamSpec("interfaces", False, None, "network interfaces to use, space-separated"),
        ),
        _mdns,
        "rancherd.discovery.mdns:MdnsProvider",
    ),
    ProviderEntry(
        "static",
        StaticParams,
        _specs(ParamSpec("addrs", True, None, "space-separated host or host:port of servers")),
        _static,
        "rancherd.discovery.static:StaticProvider",
    ),
    ProviderEntry(
        "file",
        FileParams,
        _specs(ParamSpec("path", True, None, "absolute path of a file listing host[:port]")),
        _file,
        "rancherd.discovery.file:FileProvider",
    ),
    ProviderEntry(
        "srv",
        SrvParams,
        _specs(
            ParamSpec("service", True, None, "SRV service name, e.g. rancher-server"),
            ParamSpec("proto", False, "tcp", "SRV protocol, tcp or udp"),
            ParamSpec("domain", True, None, "DNS domain holding the records, e.g. example.com"),
            ParamSpec(
                "nameservers", False, None, "DNS servers to ask, ip or ip:port (default: system)"
            ),
        ),
        _srv,
        "rancherd.discovery.srv:SrvProvider",
    ),
)
"""The providers rancherd implements: adding one is its module and one row here."""

PROVIDERS: Mapping[str, Mapping[str, ParamSpec]] = MappingProxyType(
    {name: entry.specs for name, entry in REGISTRY.items()}
)
"""Every parameter each provider accepts."""

SUPPORTED_PROVIDERS: tuple[str, ...] = tuple(REGISTRY)

_SUPPORTED_TEXT = ", ".join(SUPPORTED_PROVIDERS)


def check_params(values: Mapping[str, str]) -> list[ParamIssue]:
    """Every problem with a params map (``provider`` included); empty when usable."""
    provider = values.get("provider")
    if not provider:
        return [ParamIssue("provider", f"required: one of {_SUPPORTED_TEXT}")]
    if provider not in PROVIDERS:
        if provider in GO_DISCOVER_PROVIDERS:
            message = f"{provider!r} is not supported yet; supported: {_SUPPORTED_TEXT}"
        else:
            names = sorted(GO_DISCOVER_PROVIDERS | set(PROVIDERS))
            close = difflib.get_close_matches(provider, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"unknown provider {provider!r}{hint} (supported: {_SUPPORTED_TEXT})"
        return [ParamIssue("provider", message)]
    rest = {k: v for k, v in values.items() if k != "provider"}
    return _typed(provider, rest)[1]


@dataclass(frozen=True, slots=True)
class DiscoveryParams:
    """Checked parameters of a supported provider. Build with ``from_mapping`` or ``parse``."""

    provider: str
    values: Mapping[str, str]
    """Every parameter except ``provider``, as written."""

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> DiscoveryParams:
        """Check a params map (with ``provider``); raise ParamsError listing every problem."""
        issues = check_params(values)
        if issues:
            raise ParamsError(issues)
        rest = {k: values[k] for k in sorted(values) if k != "provider"}
        return cls(values["provider"], MappingProxyType(rest))

    @classmethod
    def parse(cls, text: str) -> DiscoveryParams:
        """Parse and check the one-line form ``provider=mdns service=rancher-server``."""
        return cls.from_mapping(parse_params_string(text))

    def as_dict(self) -> dict[str, str]:
        """The params map, ``provider`` included."""
        return {"provider": self.provider, **self.values}

    def to_string(self) -> str:
        """The one-line form, which ``parse`` reads back to an equal object."""
        return format_params(self.as_dict())

    def typed(self) -> object:
        """The typed view of this provider's parameters (its registry entry's ``params``)."""
        typed, issues = _typed(self.provider, self.values)
        if typed is None:  # pragma: no cover - from_mapping checked them
            raise ParamsError(issues)
        return typed

    def typed_as(self, kind: type[_T]) -> _T:
        """The typed view, which must be a ``kind``; ValueError for another provider's."""
        typed = self.typed()
        if isinstance(typed, kind):
            return typed
        raise ValueError(f"the provider is {self.provider}, not {kind.__name__}")
