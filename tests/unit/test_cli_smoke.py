from __future__ import annotations

from click.testing import CliRunner

from rancherd import __version__
from rancherd.cli import cli


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output
