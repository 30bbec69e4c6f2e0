"""Build the one file to ship: ``dist/rancherd``, a self-contained x86_64 Linux executable.

    python3.11 packaging/build.py       # -> dist/rancherd, dist/rancherd.service,
                                        #    dist/OPERATIONS.md

The build makes a fresh virtualenv with only ``pip install '.[bundle]'`` in it (rancherd,
its runtime dependencies and PyInstaller): whatever else the calling environment holds
(test tools, matplotlib) stays out of the executable. It needs pip to reach PyPI (or a
mirror) and takes about 1.5 minutes.

The executable is PyInstaller's one-file bundle: the Python interpreter, the standard
library, rancherd and its dependencies (trio, zeroconf, cryptography...) in one ELF file
that unpacks itself into a private temporary directory at start. A node needs no Python
and no packages; it needs the glibc the build machine had, or a newer one, so build on
the oldest distribution the fleet runs (docs/OPERATIONS.md).

Run as a script, not ``python -m packaging.build``: a ``packaging`` package on the path
would hide the PyPI ``packaging`` library PyInstaller itself imports.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
ENTRY = HERE / "entry.py"


def build(out: Path) -> Path:
    """Build ``out/rancherd`` (and copy the unit and the operations guide next to it)."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        sys.exit(f"builds for x86_64 Linux only (this is {sys.platform} {platform.machine()})")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rancherd-build-") as work:
        venv = Path(work) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        # From a copy: setuptools would leave build/ in the working tree otherwise.
        source = Path(work) / "source"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(PROJECT / name, source / name)
        shutil.copytree(PROJECT / "rancherd", source / "rancherd")
        install = [python, "-m", "pip", "install", "--quiet", f"{source}[bundle]"]
        subprocess.run(install, check=True)
        command = [
            python,
            "-m",
            "PyInstaller",
            "--onefile",
            "--name",
            "rancherd",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            str(out),
            "--workpath",
            str(Path(work) / "build"),
            "--specpath",
            work,
            # The commands import their modules inside their functions (a fast start
            # for `rancherd --help`); collect them all.
            "--collect-submodules",
            "rancherd",
            str(ENTRY),
        ]
        subprocess.run(command, check=True, cwd=work)
    shutil.copy2(HERE / "rancherd.service", out / "rancherd.service")
    shutil.copy2(PROJECT / "docs" / "OPERATIONS.md", out / "OPERATIONS.md")
    return out / "rancherd"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PROJECT / "dist", help="output directory")
    args = parser.parse_args()
    started = time.monotonic()
    binary = build(args.out)
    size = binary.stat().st_size
    print(f"built {binary} ({size / 2**20:.1f} MiB) in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
