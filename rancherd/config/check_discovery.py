"""The checks of the ``discovery:`` section: provider params, counts, addresses, preset."""

from __future__ import annotations

import ipaddress

from rancherd.config.model import MAX_ADVERTISE_ADDRESSES, MAX_EXPECTED_SERVERS, DiscoveryConfig
from rancherd.config.read import Reader
from rancherd.config.yamlvalues import Entry, Map, Origin, Scalar, Seq, join
from rancherd.discovery.params import (
    DiscoveryParams,
    HostPort,
    ParamsError,
    check_params,
    parse_host_port,
    parse_params_string,
)
from rancherd.kinds import USER_PRESETS, Preset

__all__ = ["DiscoveryChecks"]


class DiscoveryChecks(Reader):
    """Reads ``discovery:``; each key's reader is named by ``DiscoveryConfig``'s fields."""

    def discovery(self, entry: Entry, path: str) -> DiscoveryConfig | None:
        value = self.mapping(entry, path)
        if value is None:
            return None
        fields = self.section(DiscoveryConfig, value, path, entry.key_origin)
        if "params" not in fields:
            return None
        return DiscoveryConfig(**fields)

    def expected_servers(self, entry: Entry, path: str) -> int | None:
        count = self.integer(entry, path)
        if count is not None and not 1 <= count <= MAX_EXPECTED_SERVERS:
            self.fail(
                self.where(entry), path, f"must be from 1 to {MAX_EXPECTED_SERVERS}, not {count}"
            )
            return None
        return count

    def port(self, entry: Entry, path: str) -> int | None:
        port = self.integer(entry, path)
        if port is not None and not 1 <= port <= 65535:
            self.fail(self.where(entry), path, f"{port} is not from 1 to 65535")
            return None
        return port

    def listen_address(self, entry: Entry, path: str) -> str | None:
        address = self.string(entry, path)
        if address is None:
            return None
        try:
            return str(ipaddress.ip_address(address))
        except ValueError:
            self.fail(
                self.where(entry),
                path,
                f"{address!r} is not an IP address (0.0.0.0 or :: listen on all)",
            )
            return None

    def preset(self, entry: Entry, path: str) -> Preset | None:
        name = self.string(entry, path)
        if name is None:
            return None
        if name not in USER_PRESETS:
            choices = " or ".join(USER_PRESETS)
            self.fail(self.where(entry), path, f"{name!r} is not a preset ({choices})")
            return None
        return Preset(name)

    def advertise(self, entry: Entry, path: str) -> tuple[HostPort, ...]:
        addresses = []
        texts = self.lines(entry, path)
        for index, text in enumerate(texts):
            try:
                addresses.append(parse_host_port(text))
            except ValueError as exc:
                item = entry.value.items[index] if isinstance(entry.value, Seq) else None
                self.fail(item.origin if item else entry.key_origin, f"{path}[{index}]", str(exc))
        if len(addresses) > MAX_ADVERTISE_ADDRESSES:
            self.fail(
                entry.key_origin,
                path,
                f"at most {MAX_ADVERTISE_ADDRESSES} addresses, not {len(addresses)}",
            )
        return tuple(addresses)

    def params(self, entry: Entry, path: str) -> DiscoveryParams | None:
        value = entry.value
        if isinstance(value, Scalar) and isinstance(value.value, str):
            read = self._params_string(value, path)
        elif isinstance(value, Map):
            read = self._params_map(value, path)
        else:
            self.wrong_kind(entry, path, "a map or a string like 'provider=mdns service=x'")
            return None
        if read is None:
            return None
        values, lines, reported = read
        before = len(self.issues)
        for issue in check_params(values):
            param = issue.param or "provider"
            if param not in reported:
                self.fail(lines.get(param, self.where(entry)), join(path, param), issue.message)
        if reported or len(self.issues) > before:
            return None
        try:
            return DiscoveryParams.from_mapping(values)
        except ParamsError:  # pragma: no cover - checked just above
            return None

    def _params_string(
        self, value: Scalar, path: str
    ) -> tuple[dict[str, str], dict[str, Origin], set[str]] | None:
        assert isinstance(value.value, str)
        try:
            values = parse_params_string(value.value)
        except ParamsError as exc:
            for issue in exc.issues:
                key = join(path, issue.param) if issue.param else path
                self.fail(value.origin, key, issue.message)
            return None
        return values, dict.fromkeys(values, value.origin), set()

    def _params_map(
        self, value: Map, path: str
    ) -> tuple[dict[str, str], dict[str, Origin], set[str]]:
        values: dict[str, str] = {}
        lines: dict[str, Origin] = {}
        reported: set[str] = set()  # written wrong: not "required" as well
        for key, item in value.entries.items():
            text = self.string(item, join(path, key))
            if text is not None:
                values[key] = text
                lines[key] = self.where(item)
            elif isinstance(item.value, Scalar) and item.value.value is None:
                values[key] = ""  # as go-discover: empty means not set
                lines[key] = item.key_origin
            else:
                reported.add(key)
        return values, lines, reported
