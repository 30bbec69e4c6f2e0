"""Checking the merged values against the schema and building the ``Config``.

``Checker.config`` reads every top-level key through ``Config``'s field specs (each names
one of the methods here or in ``Reader``/``DiscoveryChecks``), then checks the rules
between keys (``relations``) when every file could be read.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from rancherd.config.check_discovery import DiscoveryChecks
from rancherd.config.model import Config, Instruction, JsonValue, Secret, key_specs
from rancherd.config.read import has_control
from rancherd.config.relations import check_relations
from rancherd.config.yamlvalues import Entry, Map, Scalar, Seq, join
from rancherd.join_token import TokenError, parse_token
from rancherd.kinds import JoinRole

__all__ = ["Checker"]

_REGISTRY_KEYS = ("mirrors", "configs")
_MIRROR_KEYS = ("endpoint", "rewrite")
_REGISTRY_CONFIG_KEYS = ("auth", "tls")
_AUTH_KEYS = ("username", "password", "auth", "identity_token")
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "insecure_skip_verify")

_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class Checker(DiscoveryChecks):
    """Checks the merged values against the schema and builds the dataclasses."""

    def config(self, root: Map, complete: bool) -> Config | None:
        fields = self.section(Config, root, "", root.origin)
        if complete:
            check_relations(self, root, fields.get("role"))
        if len(self.issues) or "role" not in fields:
            return None
        return Config(**fields)

    # -- top-level keys --

    def role(self, entry: Entry, path: str) -> JoinRole | None:
        text = self.string(entry, path)
        if text is None:
            return None
        try:
            return JoinRole(text)
        except ValueError:
            close = difflib.get_close_matches(text, [r.value for r in JoinRole], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.fail(
                self.where(entry),
                path,
                f"{text!r} is not a role{hint} (server, agent or cluster-init)",
            )
            return None

    def token(self, entry: Entry, path: str) -> Secret | None:
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

    def server(self, entry: Entry, path: str) -> str | None:
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
        if not ok or has_control(text):  # urlsplit drops newlines and tabs; Go refuses them
            self.fail(self.where(entry), path, f"{text!r} is not a URL like https://10.0.0.5:8443")
            return None
        return text

    def node_name(self, entry: Entry, path: str) -> str | None:
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

    def ip_list(self, entry: Entry, path: str) -> str | None:
        """One address, or two comma-separated (dual-stack); it becomes the node's host."""
        text = self.line(entry, path)
        if text is None:
            return None
        if text != text.strip():
            self.fail(self.where(entry), path, f"{text!r} starts or ends with whitespace")
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

    def data_dir(self, entry: Entry, path: str) -> Path | None:
        text = self.string(entry, path)
        if text is None:
            return None
        if not text.startswith("/") or "\0" in text:
            self.fail(self.where(entry), path, f"{text!r} must be an absolute path")
            return None
        return Path(text)

    # -- instructions and resources --

    def instructions(self, entry: Entry, path: str) -> tuple[Instruction, ...]:
        value = entry.value
        if isinstance(value, Scalar) and value.value is None:
            return ()
        if not isinstance(value, Seq):
            self.wrong_kind(entry, path, "a list of instructions (maps with image or command)")
            return ()
        out = []
        for index, item in enumerate(value.items):
            instruction = self.instruction(item, f"{path}[{index}]")
            if instruction is not None:
                out.append(instruction)
        return tuple(out)

    def instruction(self, item: Any, path: str) -> Instruction | None:
        mapping = self.mapping(Entry(item.origin, item), path)
        if mapping is None:
            if isinstance(item, Scalar) and item.value is None:
                self.fail(item.origin, path, "empty instruction")
            return None
        fields = self.section(Instruction, mapping, path, item.origin)
        if not fields.get("image") and not fields.get("command"):
            if not {"image", "command"} & set(mapping.entries):
                self.fail(item.origin, path, "needs an image or a command to run")
            return None
        return Instruction(**fields)

    def resources(self, entry: Entry, path: str) -> list[Mapping[str, JsonValue]]:
        value = entry.value
        if isinstance(value, Scalar) and value.value is None:
            return []
        if not isinstance(value, Seq):
            self.wrong_kind(entry, path, "a list of Kubernetes objects")
            return []
        out = []
        for index, item in enumerate(value.items):
            item_path = f"{path}[{index}]"
            if not isinstance(item, Map):
                self.wrong_kind(Entry(item.origin, item), item_path, "a Kubernetes object (map)")
                continue
            for key in ("apiVersion", "kind"):
                if key not in item.entries:
                    self.fail(item.origin, f"{item_path}.{key}", "required in a Kubernetes object")
            out.append(cast(Mapping[str, JsonValue], self.free(item, item_path)))
        return out

    # -- registries.yaml --

    def registries(self, entry: Entry, path: str) -> Mapping[str, JsonValue] | None:
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
                check(item, join(section_path, name))
        known = {k: e for k, e in value.entries.items() if k in _REGISTRY_KEYS}
        registries = self.free(Map(value.origin, known), path, check=False)
        return cast(Mapping[str, JsonValue], registries)

    def mirror(self, entry: Entry, path: str) -> None:
        value = self.mapping(entry, path)
        if value is None:
            return
        self.keys(value, path, _MIRROR_KEYS)
        if "endpoint" in value.entries:
            self.lines(value.entries["endpoint"], f"{path}.endpoint")
        if "rewrite" in value.entries:
            rewrite = self.mapping(value.entries["rewrite"], f"{path}.rewrite")
            for key, item in (rewrite.entries if rewrite else {}).items():
                self.string(item, join(f"{path}.rewrite", key))

    def registry_config(self, entry: Entry, path: str) -> None:
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


def _check_every_reader_exists() -> None:
    """A spec naming a reader that does not exist is a bug: found at import, not at boot."""
    from rancherd.config.model import DiscoveryConfig

    for cls in (Config, DiscoveryConfig, Instruction):
        for name, _, spec in key_specs(cls):
            if not callable(getattr(Checker, spec.read, None)):
                raise TypeError(f"{cls.__name__}.{name}: no reader {spec.read!r}")


_check_every_reader_exists()
