"""The systemd unit as shipped: ``systemd-analyze verify`` finds nothing to say, and the
cloud-config examples install the very same unit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from rancherd.cli import InvalidConfig

PROJECT = Path(__file__).resolve().parents[2]
UNIT = PROJECT / "packaging" / "rancherd.service"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def _exec_start(unit_text: str) -> str:
    line = next(line for line in unit_text.splitlines() if line.startswith("ExecStart="))
    return line.removeprefix("ExecStart=").split()[0]


def test_the_unit_verifies_clean(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None or not SYSTEM_UNITS.is_dir():
        pytest.skip("systemd-analyze is missing (.ci/run installs the systemd package as root)")
    # A root with the unit, the system's own units (the targets it orders after) and a
    # placeholder where ExecStart= points: verify checks the binary is executable.
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/rancherd.service")
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    binary = root / _exec_start(UNIT.read_text()).lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    result = subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", "/etc/systemd/system/rancherd.service"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Unknown or unparsable settings are only warnings ("ignoring"): clean means silent.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_a_bad_config_is_not_restarted() -> None:
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line[:40]
    )
    assert settings["RestartPreventExitStatus"] == str(InvalidConfig.exit_code)
    assert settings["Type"] == "notify"


@pytest.mark.parametrize("example", ["cloud-config-three-servers.yaml", "cloud-config-agent.yaml"])
def test_the_cloud_configs_install_the_shipped_unit(example: str) -> None:
    data = yaml.safe_load((PROJECT / "examples" / example).read_text())
    files = {entry["path"]: entry["content"] for entry in data["write_files"]}
    assert files["/etc/systemd/system/rancherd.service"] == UNIT.read_text()
