"""Options shared by the commands of ``rancherd.cli`` and ``rancherd.install.command``
(which ``cli`` imports, so they cannot come from ``cli`` itself)."""

from __future__ import annotations

from pathlib import Path

import click

from rancherd.config import DEFAULT_CONFIG_PATH

__all__ = ["config_option", "data_dir_option"]

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help=f"The explicit config file; it must exist. [default: {DEFAULT_CONFIG_PATH}]",
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The node's data dir. [default: dataDir from the config, /var/lib/rancher/rancherd]",
)
