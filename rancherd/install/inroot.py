"""Commands under a root prefix: found inside the root, or refused.

With ``--root DIR`` (anything but ``/``) a plan's commands must not touch the host: no
host ``sh``, ``curl`` or ``systemctl``. So, before a command runs:

- its program is looked up inside the root: an absolute path is taken under the root; a
  bare name is searched in the root's ``PATH`` directories (the step's ``PATH``, or
  ``/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin``, each under the root);
- symbolic links are followed as a chroot would: an absolute target starts again at the
  root, ``..`` never climbs above it, so the file found is always inside the root;
- a script's ``#!`` interpreter is resolved the same way and run explicitly (the kernel
  would take ``#!/bin/sh`` from the host);
- the child's ``PATH`` holds those root directories only, so what the command itself
  runs by name comes from the root too.

A program that is not in the root is refused (``CommandRefused``, with where it looked);
nothing is run in its place. What this does not cover, said plainly: a program inside the
root that runs an absolute host path itself, and the ELF loader and shared libraries of
a dynamically linked program (the host's, as for any program run outside a chroot). For
a tree that needs its own libraries, run rancherd inside it (chroot, systemd-nspawn)
with ``--root /``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "ROOT_PATH",
    "CommandRefused",
    "Resolved",
    "is_host_root",
    "resolve_command",
    "resolve_in_root",
    "under_root",
]

ROOT_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
"""Where a bare command name is looked up inside the root (unless the step sets PATH)."""

_MAX_LINKS = 40
_MAX_INTERPRETERS = 4
_SHEBANG_BYTES = 256


class CommandRefused(Exception):
    """A command of the plan is not inside the root: it is not run."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """A command as it runs under the root."""

    argv: tuple[str, ...]
    """What is executed: the program's real path in the root (its interpreter's first)."""
    path_env: str
    """``PATH`` for the child: the search directories, under the root."""
    chain: tuple[str, ...]
    """The files inside the root that run, interpreter first (for ``plan``)."""


def under_root(root: Path, path: str) -> Path:
    """``path`` (absolute, as on the node) inside ``root``; refuses ``..``. Links are not
    followed: this is where the plan writes a file."""
    pure = PurePosixPath(path)
    if not pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"{path!r}: plan paths are absolute and have no '..'")
    return root.joinpath(*pure.parts[1:])


def is_host_root(root: Path) -> bool:
    """True for ``/``: commands run on the host as written."""
    return os.path.realpath(root) == "/"


def resolve_in_root(root: Path, path: str) -> Path:
    """``path`` (absolute, as on the node) inside ``root``, links followed as in a
    chroot; the result has no symbolic link left and is inside the root (it may not
    exist). Raises ``CommandRefused`` on a loop of links."""
    real_root = Path(os.path.realpath(root))
    pending = list(PurePosixPath("/", path).parts[1:])
    current = real_root
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current if current == real_root else current.parent
            continue
        candidate = current / part
        if not candidate.is_symlink():
            current = candidate
            continue
        links += 1
        if links > _MAX_LINKS:
            raise CommandRefused(f"{path}: too many levels of symbolic links in the root")
        target = PurePosixPath(os.readlink(candidate))
        if target.is_absolute():
            current = real_root
            pending = [*target.parts[1:], *pending]
        else:
            pending = [*target.parts, *pending]
    return current


def _search_dirs(env: Mapping[str, str]) -> tuple[str, ...]:
    given = env.get("PATH")
    if not given:
        return ROOT_PATH
    return tuple(entry for entry in given.split(":") if entry.startswith("/")) or ROOT_PATH


def _executable(path: Path) -> bool:
    try:
        info = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and os.access(path, os.X_OK)


def _find(root: Path, name: str, dirs: Sequence[str], cwd: str) -> Path:
    if "/" in name:
        wanted = name if name.startswith("/") else str(PurePosixPath(cwd, name))
        found = resolve_in_root(root, wanted)
        if _executable(found):
            return found
        raise CommandRefused(
            f"{name} is not an executable file in the root; {_ADVICE.format(root=root)}"
        )
    for directory in dirs:
        found = resolve_in_root(root, f"{directory}/{name}")
        if _executable(found):
            return found
    raise CommandRefused(
        f"{name} is not in the root (looked in its {':'.join(dirs)}); {_ADVICE.format(root=root)}"
    )


_ADVICE = (
    "under --root {root} rancherd runs only programs inside the root, never the host's: "
    "put it there, or run rancherd inside the tree (chroot) with --root /"
)


def _interpreter(program: Path) -> tuple[str, ...] | None:
    """The ``#!`` line of ``program`` as (interpreter, [one argument]), or None."""
    try:
        with program.open("rb") as file:
            head = file.read(_SHEBANG_BYTES)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    interpreter, _, argument = line.partition(" ")
    argument = argument.strip()
    return (interpreter, argument) if argument else (interpreter,)


def resolve_command(
    root: Path, argv: Sequence[str], env: Mapping[str, str], cwd: str | None = None
) -> Resolved:
    """``argv`` as it runs under ``root``; ``env`` is the step's own (for its PATH).
    Raises ``CommandRefused`` when a program (or interpreter) is not in the root."""
    if not argv:
        raise CommandRefused("an empty command")
    dirs = _search_dirs(env)
    real_root = Path(os.path.realpath(root))
    program = _find(real_root, argv[0], dirs, cwd or "/")
    chain = [str(program)]
    command: list[str] = [str(program), *argv[1:]]
    for _ in range(_MAX_INTERPRETERS):
        shebang = _interpreter(program)
        if shebang is None:
            break
        interpreter, *rest = shebang
        if not interpreter.startswith("/"):
            raise CommandRefused(f"{program}: its #! interpreter {interpreter!r} is not absolute")
        try:
            program = _find(real_root, interpreter, dirs, "/")
        except CommandRefused as exc:
            raise CommandRefused(f"{chain[0]} starts with #!{interpreter}, and {exc}") from None
        chain.insert(0, str(program))
        command = [str(program), *rest, *command]
    else:
        raise CommandRefused(f"{argv[0]}: more than {_MAX_INTERPRETERS} #! interpreters")
    path_env = ":".join(str(resolve_in_root(real_root, directory)) for directory in dirs)
    return Resolved(tuple(command), path_env, tuple(chain))
