"""The ``rancherd`` command line: one click group, thin commands."""

from __future__ import annotations

import click

from rancherd import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rancherd")
def cli() -> None:
    """Turn machines booted from one config into one Kubernetes cluster.

    Every machine runs the same config. The servers find each other, agree on who is
    there, and exactly one of them creates the cluster; every other node joins it.
    """


def main() -> None:
    cli()
