"""The ``rancherd`` command line: one click group, thin commands."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import click

from rancherd import __version__
from rancherd.config import (
    CLOUD_CONFIG_PATHS,
    DEFAULT_CONFIG_PATH,
    IMPLICIT_PATHS,
    ConfigError,
    LoadedConfig,
    load_config,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rancherd")
def cli() -> None:
    """Turn machines booted from one config into one Kubernetes cluster.

    Every machine runs the same config. The servers find each other, agree on who is
    there, and exactly one of them creates the cluster; every other node joins it.
    """


# --- config ---------------------------------------------------------------------------

IMPLICIT_PATHS_ENV = "RANCHERD_IMPLICIT_PATHS"
"""Colon-separated paths that replace the implicit config paths (tests, debugging)."""


class InvalidConfig(click.ClickException):
    """Bad config: every issue on its own line on stderr, exit status 2."""

    exit_code = 2

    def __init__(self, error: ConfigError) -> None:
        super().__init__(str(error))
        self.issues = [str(issue) for issue in error.issues]

    def show(self, file: object = None) -> None:
        count = len(self.issues)
        click.echo(f"Error: invalid config ({count} problem{'s' * (count != 1)}):", err=True)
        for issue in self.issues:
            click.echo(issue, err=True)


def implicit_paths_from_env() -> Sequence[Path]:
    """``$RANCHERD_IMPLICIT_PATHS`` split on ``:`` if set (empty: none), else the defaults."""
    value = os.environ.get(IMPLICIT_PATHS_ENV)
    if value is None:
        return IMPLICIT_PATHS
    return [Path(part) for part in value.split(":") if part]


def load_config_or_exit(config_path: Path | None) -> LoadedConfig:
    """Load the config for a command; bad config ends the command with exit status 2."""
    try:
        return load_config(config_path, implicit_paths=implicit_paths_from_env())
    except ConfigError as exc:
        raise InvalidConfig(exc) from None


def _cloud_note(path: Path) -> str:
    return "  (cloud-config: only its rancherd: key)" if path in CLOUD_CONFIG_PATHS else ""


_CONFIG_HELP = f"""Check the config and print it as rancherd will use it.

Prints the effective config, merged from every file rancherd reads, with the file each
top-level key came from; the token (and anything that looks like a password) is shown
as <redacted>. Nothing is started and nothing is written.

\b
rancherd reads these files in this order, skipping missing ones:
{chr(10).join(f"  {i}. {path}{_cloud_note(path)}" for i, path in enumerate(IMPLICIT_PATHS, 1))}
  {len(IMPLICIT_PATHS) + 1}. --config PATH (default {DEFAULT_CONFIG_PATH}, which may be missing)

A directory in that list adds its *.yaml and *.yml files in name order. After each file
come its drop-ins, FILE.d/*.yaml, in name order. A file with a top-level rancherd: key
counts only for that key; a cloud-config (first line #cloud-config) counts only for
its rancherd: key. Later files win: maps merge key by key, lists are joined.

The config is strict: an unknown key, a wrong type, a duplicate key or a value YAML
reads differently from how it looks (token: 0123 is the number 83, on is true) is an
error. Exit status 0: the config is valid. Exit status 2: every problem is printed on
stderr, one per line, as FILE:LINE: KEY: MESSAGE.

\b
Examples:
  rancherd config
  rancherd config --config examples/three-node-mdns.yaml
  rancherd config --json | jq .config.discovery

See docs/CONFIG.md for every key.
"""


@cli.command("config", help=_CONFIG_HELP)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help=f"The explicit config file; it must exist. [default: {DEFAULT_CONFIG_PATH}]",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: config, sources and files.")
def config_command(config_path: Path | None, as_json: bool) -> None:
    loaded = load_config_or_exit(config_path)
    if as_json:
        click.echo(json.dumps(loaded.to_json_dict(), indent=2))
    else:
        click.echo(loaded.to_text(), nl=False)


def main() -> None:
    cli()
