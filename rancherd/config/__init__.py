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

The package, one concern per module:

- ``model``: the dataclasses, defaults and limits; each field declares its key once
  (``spec``: how it is read and dumped);
- ``yamlvalues``: YAML read within bounds into values that carry file and line;
- ``loader``: files, directories, drop-ins and merging;
- ``read``, ``check``, ``check_discovery``, ``relations``: the checks;
- ``dump``: back to plain data; ``load``: ``load_config`` and ``LoadedConfig``.
"""

from __future__ import annotations

from rancherd.config.dump import config_to_dict
from rancherd.config.load import LoadedConfig, load_config
from rancherd.config.model import (
    CLOUD_CONFIG_PATHS,
    DEFAULT_CONFIG_PATH,
    DEFAULT_DATA_DIR,
    DEFAULT_EXPECTED_SERVERS,
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_PORT,
    DEFAULT_SERVER_CACHE_DURATION,
    IMPLICIT_PATHS,
    MAX_ADVERTISE_ADDRESSES,
    MAX_EXPECTED_SERVERS,
    MAX_FILE_SIZE,
    REDACTED,
    Config,
    ConfigError,
    ConfigIssue,
    DiscoveryConfig,
    Instruction,
    JsonValue,
    Secret,
    is_secret_name,
)
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
    "JoinRole",
    "JsonValue",
    "LoadedConfig",
    "Preset",
    "Secret",
    "config_to_dict",
    "is_secret_name",
    "load_config",
]
