"""``--root DIR`` never touches the host: every command is found inside the root or refused.

The proof: spy programs named like everything a plan might run (``sh``, ``curl``,
``systemctl``...) come first on rancherd's own ``PATH`` and record any call; a bootstrap
under a root then runs the root's own programs (which record that they ran) and never a
spy, and a root that lacks a program gets a refusal, not the host's.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import trio
import yaml
from click.testing import CliRunner
from fake_runtime import FakeServer, Tls

from rancherd.bootstrap import run_bootstrap
from rancherd.cli import cli
from rancherd.config import Config, load_config
from rancherd.gossip.election import JoinRole
from rancherd.install import PlanOptions, RunCommand, StepFailed, build_plan
from rancherd.install.inroot import (
    CommandRefused,
    is_host_root,
    resolve_command,
    resolve_in_root,
)
from rancherd.state import DataDir

SPIED = ("sh", "bash", "dash", "curl", "wget", "systemctl", "mktemp", "rm", "env", "k3s")
HOST_SH = os.path.realpath("/bin/sh")


def copy_sh(root: Path) -> None:
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(HOST_SH, root / "bin" / "sh")


def script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def spies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Spies first on PATH; the log they append to (it exists only if one ran)."""
    spy_dir = tmp_path / "spies"
    log = tmp_path / "spied.log"
    for name in SPIED:
        script(spy_dir / name, f'#!/bin/sh\necho "{name} $*" >> {log}\nexit 97\n')
    monkeypatch.setenv("PATH", f"{spy_dir}:{os.environ['PATH']}")
    return log


def spied(log: Path) -> str:
    """What the spies recorded: empty when no host program ran."""
    return log.read_text() if log.exists() else ""


def ran(root: Path) -> list[str]:
    return (root / "ran").read_text().splitlines()


def config(tmp_path: Path) -> Config:
    path = tmp_path / "config.yaml"
    data = {"role": "cluster-init", "token": "root-test-token", "kubernetesVersion": "v1.31.4+k3s1"}
    path.write_text(yaml.safe_dump(data))
    return load_config(path, implicit_paths=(), default_path=None).config


def probes_to(server: FakeServer, install_script: str) -> PlanOptions:
    return PlanOptions(
        install_script=install_script,
        apiserver_probe_url=f"{server.https_url}/readyz",
        kubelet_probe_url=f"{server.http_url}/healthz",
        probe_interval=0.05,
        probe_timeout=10,
    )


def runtime_files(root: Path, tls: Tls) -> None:
    """What a started k3s leaves for the probes (the root's systemctl only records)."""
    target = root / "var/lib/rancher/k3s/server/tls"
    target.mkdir(parents=True)
    for file in (tls.ca_file, tls.cert_file, tls.key_file):
        shutil.copy2(file, target / file.name)


async def test_bootstrap_under_a_root_runs_only_the_roots_programs(
    tmp_path: Path, spies: Path, server: FakeServer, tls: Tls
) -> None:
    root = tmp_path / "root"
    copy_sh(root)
    # Shell builtins only: the root has no other tool, and needs none.
    script(root / "opt/install.sh", 'echo "install $0" >> "$RANCHERD_ROOT/ran"\n')
    script(root / "usr/bin/systemctl", '#!/bin/sh\necho "systemctl $*" >> "$RANCHERD_ROOT/ran"\n')
    runtime_files(root, tls)
    options = probes_to(server, "/opt/install.sh")
    data_dir = DataDir(tmp_path / "data")

    with trio.fail_after(30):
        _, plan = await run_bootstrap(config(tmp_path), data_dir, root=root, options=options)

    assert spied(spies) == ""
    assert ran(root) == [
        f"install {root}/opt/install.sh",
        "systemctl daemon-reload",
        "systemctl enable --now k3s.service",
    ]
    assert data_dir.load_done() is not None
    assert plan is not None
    assert plan.root == str(root)


async def test_the_default_install_never_reaches_the_host_curl(tmp_path: Path, spies: Path) -> None:
    """get.k3s.io is fetched by the root's curl; a root without one fails there."""
    root = tmp_path / "root"
    copy_sh(root)
    data_dir = DataDir(tmp_path / "data")
    with trio.fail_after(30), pytest.raises(StepFailed, match="install-k3s") as caught:
        await run_bootstrap(config(tmp_path), data_dir, root=root, options=PlanOptions())
    assert "not found" in caught.value.output_tail  # mktemp: the root has no tools
    assert spied(spies) == ""


async def test_a_root_without_sh_is_refused_before_anything_runs(
    tmp_path: Path, spies: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    data_dir = DataDir(tmp_path / "data")
    with trio.fail_after(30), pytest.raises(StepFailed) as caught:
        await run_bootstrap(config(tmp_path), data_dir, root=root, options=PlanOptions())
    message = str(caught.value)
    assert "install-k3s failed: refused: sh is not in the root" in message
    assert f"under --root {root} rancherd runs only programs inside the root" in message
    assert spied(spies) == ""


def test_links_are_followed_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    copy_sh(root)
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc/alternatives").mkdir(parents=True)
    # Absolute targets mean the root's files, as in a chroot (Debian's alternatives).
    (root / "etc/alternatives/shell").symlink_to("/bin/sh")
    (root / "usr/bin/mysh").symlink_to("/etc/alternatives/shell")
    (root / "usr/bin/up").symlink_to("../../../../../../bin/sh")
    real_root = Path(os.path.realpath(root))
    assert resolve_in_root(root, "/usr/bin/mysh") == real_root / "bin/sh"
    assert resolve_in_root(root, "/usr/bin/up") == real_root / "bin/sh"  # .. stops at the root
    (root / "usr/bin/loop").symlink_to("/usr/bin/loop")
    with pytest.raises(CommandRefused, match="too many levels"):
        resolve_in_root(root, "/usr/bin/loop")
    # A link to a host program that the root lacks is not followed out of the root.
    (root / "usr/bin/curl").symlink_to(shutil.which("env") or "/usr/bin/env")
    with pytest.raises(CommandRefused, match="curl is not in the root"):
        resolve_command(root, ("curl", "-V"), {})


def test_interpreters_come_from_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    copy_sh(root)
    script(root / "usr/bin/tool", "#!/bin/sh -e\necho hi\n")
    resolved = resolve_command(root, ("tool", "x"), {})
    real = os.path.realpath(root)
    assert resolved.argv == (f"{real}/bin/sh", "-e", f"{real}/usr/bin/tool", "x")
    assert resolved.path_env.split(":")[0] == f"{real}/usr/local/sbin"
    script(root / "usr/bin/py", "#!/usr/bin/python3\nprint()\n")
    with pytest.raises(CommandRefused, match=r"starts with #!/usr/bin/python3, and /usr/bin"):
        resolve_command(root, ("py",), {})
    # The step's PATH is searched inside the root too.
    script(root / "opt/bin/tool", "#!/bin/sh\n")
    assert resolve_command(root, ("tool",), {"PATH": "/opt/bin"}).chain[-1] == (
        f"{real}/opt/bin/tool"
    )
    assert is_host_root(Path("/"))
    assert not is_host_root(root)


def test_plan_and_dry_run_say_what_would_run(tmp_path: Path) -> None:
    root = tmp_path / "root"
    copy_sh(root)
    path = tmp_path / "config.yaml"
    path.write_text("role: cluster-init\ntoken: tok\nkubernetesVersion: v1.31.4+k3s1\n")
    env = {"RANCHERD_IMPLICIT_PATHS": ""}
    plan = CliRunner().invoke(cli, ["plan", "--config", str(path), "--root", str(root)], env=env)
    assert plan.exit_code == 0, plan.output
    real = os.path.realpath(root)
    assert f"Under the root {root}, each command runs from inside it" in plan.stdout
    assert f"02-install-k3s: sh -> {real}/bin/sh\n" in plan.stdout
    assert "03-systemd-daemon-reload: systemctl: REFUSED (would fail)" in plan.stdout

    data = str(tmp_path / "data")
    argv = ["bootstrap", "--config", str(path), "--data-dir", data, "--root", str(root)]
    argv.append("--dry-run")
    dry = CliRunner().invoke(cli, argv, env=env)
    assert dry.exit_code == 0, dry.output
    assert f"02-install-k3s: sh -> {real}/bin/sh\n" in dry.stdout
    assert not (root / "etc").exists()  # nothing applied

    shown = CliRunner().invoke(
        cli, ["plan", "--config", str(path), "--root", str(root), "--json"], env=env
    )
    document = json.loads(shown.stdout)
    assert document["root"] == str(root)
    install = next(c for c in document["commands"] if c["id"] == "02-install-k3s")
    assert install == {"id": "02-install-k3s", "command": "sh", "runs": [f"{real}/bin/sh"],
                       "refused": None}  # fmt: skip

    # On the host root nothing is added.
    host = CliRunner().invoke(cli, ["plan", "--config", str(path)], env=env)
    assert "Under the root" not in host.stdout


def test_a_local_install_script_is_read_from_the_root(tmp_path: Path) -> None:
    plan = build_plan(
        config(tmp_path),
        JoinRole.CLUSTER_INIT,
        options=PlanOptions(install_script="/opt/install.sh", root=str(tmp_path)),
    )
    (install,) = [step for step in plan.steps if step.name == "install-k3s"]
    assert isinstance(install, RunCommand)
    assert install.argv == ("sh", "/opt/install.sh")
    assert install.path_args == (1,)  # sh opens it: under a root, the root's file
