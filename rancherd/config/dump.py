"""The config back to plain YAML/JSON data, through the same field specs that read it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rancherd.config.model import (
    REDACTED,
    Config,
    DiscoveryConfig,
    Instruction,
    JsonValue,
    Secret,
    is_secret_name,
    key_specs,
)
from rancherd.durations import format_duration

__all__ = ["config_to_dict"]


def config_to_dict(config: Config, *, redact: bool = True) -> dict[str, Any]:
    """The config as plain YAML/JSON data with the original camelCase keys.

    Unset fields are left out; defaults are included. With ``redact`` (the default) the
    token, registry credentials and values under keys that look secret (``token``,
    ``password``, ``secret``...) are ``<redacted>``: what ``rancherd config`` prints.
    With ``redact=False`` the result loads back to an equal ``Config``.
    """
    out: dict[str, Any] = _section(config, redact)
    return out


def _section(obj: Config | DiscoveryConfig | Instruction | None, redact: bool) -> Any:
    if obj is None:
        return None
    out: dict[str, Any] = {}
    for name, key, spec in key_specs(type(obj)):
        value = _DUMPERS[spec.dump](getattr(obj, name), redact)
        if (
            spec.omit == "never"
            or value not in (None, [], {})
            or (spec.omit == "none" and value is not None)
        ):
            out[key] = value
    return out


def _plain(value: JsonValue, redact: bool, secret: bool = False) -> Any:
    """Read-only values back to dicts and lists; secrets under secret-looking keys hidden."""
    if isinstance(value, Mapping):
        return {k: _plain(v, redact, secret or is_secret_name(k)) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v, redact, secret) for v in value]
    if redact and secret and value is not None:
        return REDACTED
    return value


def _secret(value: Secret | None, redact: bool) -> str | None:
    if value is None:
        return None
    return REDACTED if redact else value.reveal()


def _env(env: tuple[str, ...], redact: bool) -> list[str]:
    if not redact:
        return list(env)
    return [
        f"{e.partition('=')[0]}={REDACTED}" if is_secret_name(e.partition("=")[0]) else e
        for e in env
    ]


def _resources(resources: tuple[Mapping[str, JsonValue], ...], redact: bool) -> list[Any]:
    """Kubernetes objects; a Secret's ``data`` and ``stringData`` are hidden."""
    out = []
    for resource in resources:
        if resource.get("kind") != "Secret":
            out.append(_plain(resource, redact))
        else:
            out.append(
                {k: _plain(v, redact, k in ("data", "stringData")) for k, v in resource.items()}
            )
    return out


_DUMPERS: dict[str, Callable[[Any, bool], Any]] = {
    "plain": _plain,
    "secret": _secret,
    "enum": lambda value, _: value.value,
    "path": lambda value, _: str(value),
    "duration": lambda value, _: format_duration(value),
    "params": lambda value, _: value.as_dict(),
    "strs": lambda values, _: [str(v) for v in values],
    "flag": lambda value, _: True if value else None,
    "env": _env,
    "section": _section,
    "sections": lambda values, redact: [_section(v, redact) for v in values],
    "resources": _resources,
}


def _check_every_dumper_exists() -> None:
    """A spec naming a dumper that does not exist is a bug: found at import, not at boot."""
    for cls in (Config, DiscoveryConfig, Instruction):
        for name, _, spec in key_specs(cls):
            if spec.dump not in _DUMPERS:
                raise TypeError(f"{cls.__name__}.{name}: no dumper {spec.dump!r}")


_check_every_dumper_exists()
